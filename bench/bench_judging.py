"""Judging cost: structured outputs vs unconstrained, prefix caching on vs off, side by side.

    python bench/bench_judging.py [--requests 40 --repeats 3]

The judge prompts are the benchmark's own (aligncultura.benchmark.judging.requests_for) over the embedded
sample, with the sample's reference answers standing in for model responses. One engine with
prefix caching on serves structured and unconstrained batches alternately (same prompts, same
sampling, `repetition` of the pair `--repeats` times, medians); a second engine with prefix
caching off serves the structured batches again. Engine starts are excluded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import pyarrow as pa
from cpu_preset import cpu_engine_kwargs
from omegaconf import OmegaConf

from aligncultura.benchmark.judging import requests_for
from aligncultura.config import InputConfig, JudgeConfig, ModelConfig
from aligncultura.data.reader import load_prompts
from aligncultura.engine.models import default_cache_dir, provision_embedded
from aligncultura.engine.requests import request_table
from aligncultura.engine.vllm_stage import LLMStage


def judge_requests(n: int, structured: bool) -> pa.Table:
    cfg = OmegaConf.structured(JudgeConfig(model=ModelConfig(name="x"), max_tokens=192,
                                           structured=structured))
    prompts = load_prompts(InputConfig(name="sample", format="jsonl", topic_field="topic",
                                       helpful_field="helpful_response",
                                       harmless_field="harmless_response",
                                       honest_field="honest_response")).table.to_pylist()
    reqs = []
    for p in prompts:
        gen = {"row_id": p["row_id"], "sample_index": 0, "status": "ok",
               "response": p["harmless_ref"]}
        reqs.extend(requests_for(gen, p, cfg))
        if len(reqs) >= n:
            break
    return request_table(reqs[:n])


def timed(stage: LLMStage, reqs: pa.Table, keep: list | None = None) -> dict:
    t0 = time.perf_counter()
    out = stage(reqs)
    dt = time.perf_counter() - t0
    toks = out.column("output_tokens").to_pylist()
    if keep is not None:
        keep.append(toks)
    return {"req_s": reqs.num_rows / dt, "tok_s": sum(toks) / dt, "s": dt,
            "mean_out_tokens": sum(toks) / reqs.num_rows}


def length_matched(u_reqs: pa.Table, lengths: list[int]) -> pa.Table:
    """The unconstrained requests, each forced to emit exactly as many tokens as the structured
    judgment of the same prompt did (`ignore_eos`): same prompts, same token counts, so the
    requests/s gap to the structured run is the grammar's cost alone."""
    rows = [{"request_id": r["request_id"], "messages": json.loads(r["messages"]),
             "sampling": {**json.loads(r["sampling"]), "max_tokens": max(1, int(n)),
                          "ignore_eos": True}}
            for r, n in zip(u_reqs.to_pylist(), lengths, strict=True)]
    return request_table(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path, _ = provision_embedded("smollm2_135m", default_cache_dir())
    model = {"path": str(path)}
    base = cpu_engine_kwargs()  # conf/engine/cpu.yaml, its environment set
    s_reqs, u_reqs = judge_requests(args.requests, True), judge_requests(args.requests, False)
    res: dict[str, list[dict]] = {"structured": [], "unconstrained": [], "matched": [],
                                  "structured_noprefix": []}
    stage = LLMStage(model, {**base, "enable_prefix_caching": True})
    timed(stage, s_reqs.slice(0, 8))  # warm-up (grammar compilation, caches)
    lengths: list = []
    res["structured"].append(timed(stage, s_reqs, lengths))
    m_reqs = length_matched(u_reqs, lengths[0])
    for i in range(args.repeats):
        if i:
            res["structured"].append(timed(stage, s_reqs))
        res["unconstrained"].append(timed(stage, u_reqs))
        res["matched"].append(timed(stage, m_reqs))
    del stage
    stage = LLMStage(model, {**base, "enable_prefix_caching": False})
    timed(stage, s_reqs.slice(0, 8))
    for _ in range(args.repeats):
        res["structured_noprefix"].append(timed(stage, s_reqs))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("req_s", "tok_s",
                                                                 "mean_out_tokens")}
           for k, v in res.items()}
    print(f"| judging ({args.requests} requests, median of {args.repeats}) | requests/s | "
          "output tok/s | mean output tokens |")
    print("|---|---:|---:|---:|")
    names = {"structured": "structured (JSON schema), prefix caching on",
             "unconstrained": "unconstrained (natural length), prefix caching on",
             "matched": "unconstrained, length-matched to structured, prefix caching on",
             "structured_noprefix": "structured (JSON schema), prefix caching off"}
    for k, m in med.items():
        print(f"| {names[k]} | {m['req_s']:.2f} | {m['tok_s']:.1f} | {m['mean_out_tokens']:.1f} |")
    cost = 1 - med["structured"]["req_s"] / med["matched"]["req_s"]
    natural = 1 - med["structured"]["req_s"] / med["unconstrained"]["req_s"]
    prefix = med["structured"]["req_s"] / med["structured_noprefix"]["req_s"]
    print(f"\nstructured-output cost in requests/s vs the same prompts unconstrained, "
          f"length-matched: {100 * cost:.1f}% (target <= 15%)")
    print(f"vs unconstrained at natural length: {100 * natural:.1f}% (negative = structured is "
          "faster because free text runs longer)")
    print(f"prefix caching speed-up (structured): {prefix:.2f}x")
    print(json.dumps({"runs": res, "median": med, "structured_cost": cost,
                      "structured_cost_natural": natural,
                      "prefix_speedup": prefix, "args": vars(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
