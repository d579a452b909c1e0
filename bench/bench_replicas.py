"""Engine replicas: 1 vs 2 vLLM CPU replicas on a two-node Ray cluster on this machine.

    python bench/bench_replicas.py [--prompts 24 --max-tokens 64 --rounds 2]

Both sides run `python -m jobs.generate` (the row cache off, the same prompts, sampling and
engine settings) against the same local two-node cluster (aligncultura.cluster.local_ray, 2
CPUs per node), alternating 1 and 2 replicas. Reported per side: wall time of the job,
steady output tok/s (engine start excluded), and engine CPU seconds per wall second (what the
cores gave). On a 2-core machine the cores are the limit: two replicas share the two cores
that one replica's threads already use, so the ratio measures the overhead of sharding, not
a speed-up; on a cluster each replica has its own node. By default each replica gets
cores / replicas engine threads (`engine.threads`); with --no-split-cores every replica binds
all cores and their OpenMP teams fight over them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aligncultura.cluster import local_ray

ROOT = Path(__file__).resolve().parents[1]


def run(replicas: int, address: str, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "jobs.generate", "experiment=quickstart",
           f"dataset.limit={args.prompts}", f"generation.max_tokens={args.max_tokens}",
           f"engine.replicas={replicas}", "engine.batch_size=4", "cache_dir=off",
           f"engine.threads={max(1, args.cores // replicas) if args.split_cores else 'null'}",
           "wandb.mode=disabled", f"run_dir={out}", "progress=false"]
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"replicas={replicas} failed: {proc.stderr[-2000:]}")
    eff = json.loads((out / "summary.json").read_text())["efficiency"]
    return {"replicas": replicas, "wall_s": wall, "output_tok_s": eff["output_tok_s"],
            "cpu_per_wall": eff["cpu_s"] / max(eff["steady_s"], 1e-9),
            "engine_start_s": eff["engine_start_s"], "by_replica": eff["by_replica"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--split-cores", action=argparse.BooleanOptionalAction, default=True,
                    help="give each replica cores/replicas engine threads (default), as replicas "
                         "sharing one machine should; --no-split-cores: every replica all cores")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="acb-", dir="/tmp"))
    state = local_ray.start(root / "ray", nodes=2, cpus=2, gpus=0)
    results: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for r in range(args.rounds):
            for replicas in (1, 2):
                res = run(replicas, state["address"], args, root / f"r{r}-{replicas}")
                results[replicas].append(res)
                print(json.dumps(res), flush=True)
    finally:
        local_ray.stop(root / "ray")
    med = {k: statistics.median(x["output_tok_s"] for x in v) for k, v in results.items()}
    print("\n| replicas | steady out tok/s (median) | wall s per round | CPU s / wall s |")
    print("|---|---|---|---|")
    for k, v in results.items():
        walls = ", ".join(f"{x['wall_s']:.0f}" for x in v)
        cpus = ", ".join(f"{x['cpu_per_wall']:.2f}" for x in v)
        print(f"| {k} | {med[k]:.1f} | {walls} | {cpus} |")
    print(f"\nratio 2 / 1 replicas (steady out tok/s): {med[2] / med[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
