"""The generation stage: prompts -> chat requests -> generation rows (GENERATION_SCHEMA)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.data import GENERATION_SCHEMA
from aligncultura.engine import build_messages


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


def request_id(row_id: str, seed_index: int) -> str:
    return f"{row_id}::gen{seed_index}"


def generation_requests(prompts: pa.Table, model_cfg: Any, gen: Any,
                        seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One request per prompt and generation seed (`bench.seeds`), in prompt order."""
    seeds = list(seeds) if seeds else [int(gen.seed)]
    out = []
    for row_id, question in zip(prompts.column("row_id").to_pylist(),
                                prompts.column("question").to_pylist(), strict=True):
        for k, seed in enumerate(seeds):
            out.append({
                "request_id": request_id(row_id, k),
                "messages": build_messages(model_cfg.system_prompt, question),
                "sampling": sampling_spec(gen, model_cfg, seed),
            })
    return out


def generation_rows(completions: pa.Table, requests: dict[str, dict[str, Any]], model_name: str,
                    n: int) -> pa.Table:
    """Completion rows -> GENERATION_SCHEMA rows (sample_index = seed index * n + sample)."""
    rows = []
    for c in completions.to_pylist():
        req = requests[c["request_id"]]
        row_id, _, k = c["request_id"].rpartition("::gen")
        rows.append({
            "row_id": row_id,
            "model": model_name,
            "sample_index": int(k) * n + int(c["sample_index"] or 0),
            "prompt": req["messages"][-1]["content"],
            "response": c["text"],
            "reasoning": c["reasoning"] or None,
            "finish_reason": c["finish_reason"],
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"],
            "latency_s": c["latency_s"],
            "status": c["status"],
            "error": c["error"],
        })
    return pa.Table.from_pylist(rows, schema=GENERATION_SCHEMA)
