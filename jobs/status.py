"""The state of every job of a sweep, and the metrics of the finished ones, in one table.

    python -m jobs.status <sweep dir>           # aligncultura-status <sweep dir>
    python -m jobs.status <sweep dir> --json    # the same, machine-readable

<sweep dir> is the ``hydra.sweep.dir`` of a multirun (``hydra/launcher=slurm`` or ``local``), the
sweep dir printed by ``python -m aligncultura.cluster.slurm submit``, or the run dir of one submitted job.
Reads files and asks Slurm (squeue/sacct) once; it never waits for a job. Exit code 0 when it
could report (whatever the jobs' states), 2 when the directory holds no sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aligncultura.benchmark.report import results_table
from aligncultura.cluster.sweep_status import JobStatus, collect, status_table


def finished_metrics(jobs: list[JobStatus]) -> list[dict[str, Any]]:
    """metrics.json of every done job, each labelled with its run dir's name."""
    out = []
    for j in jobs:
        if j.metrics and Path(j.metrics).exists():
            m = json.loads(Path(j.metrics).read_text())
            out.append({**m, "model": Path(j.run_dir).name if j.run_dir else m.get("model"),
                        "job_id": j.job_id, "run_dir": j.run_dir})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.status", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="hydra.sweep.dir, or the dir `aligncultura.cluster.slurm submit` "
                        "printed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        jobs = collect(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(j.state for j in jobs)
    metrics = finished_metrics(jobs)
    if args.json:
        print(json.dumps({"sweep_dir": str(Path(args.sweep_dir).resolve()),
                          "counts": dict(counts), "jobs": [j.to_dict() for j in jobs],
                          "metrics": metrics}, indent=2, default=str))
        return 0
    summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "queued", "failed",
                                                     "unknown") if counts[s])
    noun = "job" if len(jobs) == 1 else "jobs"
    print(f"sweep {Path(args.sweep_dir).resolve()}: {len(jobs)} {noun}: {summary}")
    print(status_table(jobs))
    if metrics:
        demo = any(m.get("judge_demo_only") for m in metrics)
        print()
        print(results_table(metrics, judge_demo=demo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
