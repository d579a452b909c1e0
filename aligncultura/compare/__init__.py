"""Comparing benchmark runs: ``runs`` loads run dirs, ``bootstrap`` resamples subdomains and
prompts (paired across runs), ``comparison`` builds comparison.json, ``report`` renders report.md
and the W&B tables, ``plots`` draws the figures."""
