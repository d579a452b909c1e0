"""What an engine pass reports: a live progress line, and its efficiency figures (throughput,
latency, engine start, CPU and GPU seconds, peak memory) from its completion rows."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Progress:
    """A periodic progress line on stderr: rows done / total, rate, elapsed."""

    def __init__(self, label: str, total: int, enabled: bool = True, every_s: float = 5.0):
        self.label, self.total, self.enabled, self.every_s = label, total, enabled, every_s
        self.done = 0
        self.tokens = 0
        self.cached = 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, rows: int, tokens: int = 0, batch: pa.Table | None = None) -> None:
        """`rows` more done; the rate counts `tokens` plus the output tokens of the rows of
        `batch` this run computed (rows served from the row cache are counted apart)."""
        if batch is not None:
            hit = pc.fill_null(batch.column("cached"), False)
            live = batch.filter(pc.invert(hit))
            tokens += sum(live.column("output_tokens").to_pylist())
            self.cached += min(rows, batch.num_rows - live.num_rows)
        self.done += rows
        self.tokens += tokens
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            el = now - self.t0
            pct = 100.0 * self.done / max(self.total, 1)
            cached = f", {self.cached} from the row cache" if self.cached else ""
            print(f"[{self.label}] {self.done}/{self.total} ({pct:.0f}%) "
                  f"{el:.0f}s elapsed, {self.tokens / max(el, 1e-9):.1f} out tok/s{cached}",
                  file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def efficiency(completions: pa.Table, wall_s: float, num_gpus: float = 0.0,
               replicas: int = 1) -> dict[str, Any]:
    """Throughput and cost of one engine stage from its completion rows.

    Engine start is reported apart and excluded from the throughput (the replicas start
    in parallel, so the largest start time is subtracted from the stage's wall time).
    """
    n_cached = int(pc.sum(completions.column("cached")).as_py() or 0) if completions.num_rows else 0
    if n_cached:  # rows served from the cache cost nothing in this run
        completions = completions.filter(pc.invert(pc.fill_null(completions.column("cached"), False)))
    ok = completions.filter(pc.equal(completions.column("status"), "ok")) \
        if completions.num_rows else completions
    out_tok = int(np.sum(ok.column("output_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    in_tok = int(np.sum(ok.column("input_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    lat = [x for x in completions.column("latency_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    starts = [x for x in completions.column("engine_start_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    engine_start = max(starts) if starts else 0.0
    steady = max(wall_s - engine_start, 1e-9) if completions.num_rows else 0.0
    cpu = float(np.nansum(completions.column("cpu_s").to_numpy(zero_copy_only=False))) \
        if completions.num_rows else 0.0
    rss = completions.column("peak_rss_mb").to_pylist() if completions.num_rows else []
    n = max(completions.num_rows, 1)
    return {
        "by_replica": by_replica(completions),
        "requests": completions.num_rows,
        "cached_requests": n_cached,
        "output_tokens": out_tok,
        "input_tokens": in_tok,
        "output_tok_s": out_tok / steady if steady else None,
        "input_tok_s": in_tok / steady if steady else None,
        "requests_s": completions.num_rows / steady if steady else None,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "latency_p95_s": float(np.percentile(lat, 95)) if lat else None,
        "engine_start_s": engine_start,
        "wall_s": wall_s,
        "steady_s": steady,
        "cpu_s": cpu,
        "cpu_s_per_100": 100.0 * cpu / n,
        "gpu_s": num_gpus * replicas * steady,
        "gpu_s_per_100": 100.0 * num_gpus * replicas * steady / n,
        "output_tokens_per_response": out_tok / max(ok.num_rows, 1),
        "peak_rss_mb": max([peak_rss_mb(), *[r for r in rss if r is not None]]),
    }


def by_replica(completions: pa.Table) -> dict[str, dict[str, Any]]:
    """Per engine replica ("<node>/<pid>") of the rows computed in this run: its node, rows,
    output tokens and busy seconds (its engine calls' wall time)."""
    out: dict[str, dict[str, Any]] = {}
    if not completions.num_rows or "replica" not in completions.column_names:
        return out
    for r in completions.select(["replica", "output_tokens", "busy_s", "cached"]).to_pylist():
        if r["cached"] or not r["replica"]:
            continue
        e = out.setdefault(r["replica"], {"node": r["replica"].rsplit("/", 1)[0], "rows": 0,
                                          "output_tokens": 0, "busy_s": 0.0})
        e["rows"] += 1
        e["output_tokens"] += int(r["output_tokens"] or 0)
        e["busy_s"] += float(r["busy_s"] or 0.0)
    return dict(sorted(out.items()))
