"""Pipeline overhead: the Ray Data engine stage vs bare `vllm.LLM.chat`, side by side.

    python bench/bench_engine.py [--batches 5 --batch-size 32 --max-tokens 32]

Same model (the embedded SmolLM2-135M), engine settings (engine=cpu), prompts and sampling.
Both sides process the same batches one after another; the first batch of each side is the
warm-up and the engine start is excluded (reported apart). Steady-state throughput is the
median over the remaining batches of output tokens / seconds between consecutive batch
results. Prints a markdown table and the ratio ray / bare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import pyarrow as pa
from cpu_preset import cpu_engine_kwargs

from aligncultura.data.reader import load_prompts
from aligncultura.engine.models import default_cache_dir, provision_embedded
from aligncultura.engine.requests import build_messages, request_table
from aligncultura.engine.vllm_stage import LLMStage

ENGINE_KWARGS = cpu_engine_kwargs()  # conf/engine/cpu.yaml, its environment set


def make_requests(n: int, max_tokens: int) -> pa.Table:
    from aligncultura.config import InputConfig

    qs = load_prompts(InputConfig(name="sample")).table.column("question").to_pylist()
    rows = []
    for i in range(n):
        rows.append({"request_id": f"r{i}", "messages": build_messages(None, qs[i % len(qs)]),
                     "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": max_tokens,
                                  "repetition_penalty": 1.1, "seed": i, "ignore_eos": True}})
    return request_table(rows)


def bare(model: dict, reqs: pa.Table, batch: int) -> dict:
    t0 = time.perf_counter()
    stage = LLMStage(model, ENGINE_KWARGS)
    start = time.perf_counter() - t0
    times, toks = [time.perf_counter()], []
    for b in reqs.to_batches(max_chunksize=batch):
        out = stage(pa.Table.from_batches([b]))
        times.append(time.perf_counter())
        toks.append(sum(out.column("output_tokens").to_pylist()))
    rates = [toks[i] / (times[i + 1] - times[i]) for i in range(1, len(toks))]
    del stage
    return {"engine_start_s": start, "rates": rates}


def ray_stage(model: dict, reqs: pa.Table, batch: int) -> dict:
    import ray

    from aligncultura.cluster.ray_session import init_ray
    from aligncultura.engine.runner import actor_pool

    init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_arrow(reqs).repartition(max(1, reqs.num_rows // batch))
    ds = ds.map_batches(LLMStage, fn_constructor_kwargs={"model": model,
                                                         "engine_kwargs": ENGINE_KWARGS},
                        batch_size=batch, batch_format="pyarrow",
                        compute=actor_pool(1), num_cpus=1)
    times, toks, start = [], [], None
    for out in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
        times.append(time.perf_counter())
        toks.append(sum(out.column("output_tokens").to_pylist()))
        start = out.column("engine_start_s")[0].as_py()
    rates = [toks[i] / (times[i] - times[i - 1]) for i in range(1, len(toks))]
    ray.shutdown()
    return {"engine_start_s": start, "rates": rates}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    path, _ = provision_embedded("smollm2_135m", default_cache_dir())
    model = {"path": str(path)}
    reqs = make_requests(args.batches * args.batch_size, args.max_tokens)
    b = bare(model, reqs, args.batch_size)
    r = ray_stage(model, reqs, args.batch_size)
    mb, mr = statistics.median(b["rates"]), statistics.median(r["rates"])
    n = len(b["rates"])
    print(f"| path | engine start s | steady out tok/s (median of {n} batches) | per batch |")
    print("|---|---:|---:|---|")
    for name, d, m in (("bare vllm.LLM.chat", b, mb), ("Ray Data map_batches stage", r, mr)):
        print(f"| {name} | {d['engine_start_s']:.1f} | {m:.1f} | "
              f"{', '.join(f'{x:.0f}' for x in d['rates'])} |")
    print(f"\nratio ray / bare = {mr / mb:.3f}")
    print(json.dumps({"bare": b, "ray": r, "ratio": mr / mb, "args": vars(args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
