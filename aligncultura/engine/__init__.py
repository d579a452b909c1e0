"""Requests in, completions out: the request contract, the vLLM stage, the API engine, the runner and the row cache."""
