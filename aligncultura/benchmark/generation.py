"""The generation stage: prompts -> chat requests -> generation rows (GENERATION_SCHEMA)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.engine.requests import GENERATION_SCHEMA, build_messages

TASK = "generate"


def sampling_spec(gen: Any, model_cfg: Any, seed: int) -> dict[str, Any]:
    """Sampling settings for one request; reasoning models get their own trace budget."""
    max_tokens = int(gen.max_tokens)
    if model_cfg.reasoning and model_cfg.reasoning_max_tokens:
        max_tokens += int(model_cfg.reasoning_max_tokens)
    return {
        "temperature": float(gen.temperature),
        "top_p": float(gen.top_p),
        "max_tokens": max_tokens,
        "repetition_penalty": float(gen.repetition_penalty),
        "seed": int(seed),
        "n": int(gen.n),
    }


def generation_requests(prompts: pa.Table, model_cfg: Any, gen: Any,
                        seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One request per prompt and generation seed (`bench.seeds`), in prompt order. Seed k's
    request returns samples k*n .. k*n + n-1 of its prompt."""
    seeds = list(seeds) if seeds else [int(gen.seed)]
    n = int(gen.n)
    out = []
    for row_id, question in zip(prompts.column("row_id").to_pylist(),
                                prompts.column("question").to_pylist(), strict=True):
        for k, seed in enumerate(seeds):
            out.append({
                "request_id": f"{row_id}::gen{k}", "row_id": row_id, "task": TASK,
                "seed_index": k, "sample_index": k * n,
                "messages": build_messages(model_cfg.system_prompt, question),
                "sampling": sampling_spec(gen, model_cfg, seed),
            })
    return out


def generated(completion: dict[str, Any]) -> dict[str, Any]:
    """The generation a completion row of a generation request stands for: its row, its
    sample index (the request's first sample plus the output's index), status and text."""
    return {"row_id": completion["row_id"],
            "sample_index": int(completion["sample_index"]) + int(completion["output_index"] or 0),
            "status": completion["status"], "response": completion["text"]}


def generation_rows(completions: pa.Table, prompt_of: dict[str, str], model_name: str) -> pa.Table:
    """Completion rows of generation requests -> GENERATION_SCHEMA rows (`prompt_of`: the
    question of each row id)."""
    rows = []
    for c in completions.to_pylist():
        g = generated(c)
        rows.append({
            **g,
            "model": model_name,
            "prompt": prompt_of[g["row_id"]],
            "reasoning": c["reasoning"] or None,
            "finish_reason": c["finish_reason"],
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"],
            "latency_s": c["latency_s"],
            "error": c["error"],
        })
    return pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA)
