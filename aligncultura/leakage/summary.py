"""Summaries of jobs.leakage's result: flagged rates with Wilson 95% CIs (`wilson_ci`,
aligncultura/stats.py) overall, per method and per subdomain, and the benchmark's metrics
without the rows a leakage report flagged (`without_leaked`, for jobs.benchmark).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aligncultura.errors import InputError
from aligncultura.stats import wilson_ci

from .scan import METHODS


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_ci(k, n)
    return {"flagged": k, "scored": n, "rate": k / n if n else None,
            "ci95": [lo, hi] if n else None}


def leakage_summary(table: pa.Table) -> dict[str, Any]:
    """Flagged share of scored (status ok) eval rows, overall, per method and per subdomain."""
    ok = np.asarray(table["status"].to_pylist(), dtype=object) == "ok"
    flagged = np.asarray(table["flagged"].to_pylist(), dtype=bool) & ok
    out = {"overall": rate(int(flagged.sum()), int(ok.sum())), "unscored": int((~ok).sum())}
    out["by_method"] = {}
    for m in METHODS:
        hit = np.asarray(table[f"{m}_ref_id"].is_valid()) & ok
        out["by_method"][m] = rate(int(hit.sum()), int(ok.sum()))
    subs = np.asarray([s or "unlabelled" for s in table["subdomain"].to_pylist()], dtype=object)
    out["by_subdomain"] = {s: rate(int((flagged & (subs == s)).sum()), int((ok & (subs == s)).sum()))
                           for s in sorted(set(subs[ok].tolist()))}
    return out


def without_leaked(judgments: pa.Table, row_meta: dict | None, report: str, **kwargs) -> dict:
    """The benchmark's metrics on the judgments of rows a leakage.parquet did not flag.

    `report` is jobs.leakage's leakage.parquet for the same eval ids; kwargs go to
    `compute_metrics`. Returns its metrics plus `excluded_rows` / `excluded_judgments`.
    """
    import pyarrow.parquet as pq

    from aligncultura.benchmark.metrics import compute_metrics

    path = Path(os.path.expanduser(report))
    if not path.exists():
        raise InputError(f"bench.leakage_report: {path} does not exist; give a leakage.parquet "
                         "written by jobs.leakage")
    try:
        t = pq.read_table(path, columns=["row_id", "flagged"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"bench.leakage_report: {path} is not a leakage.parquet with row_id and "
                         f"flagged columns ({str(exc).splitlines()[0][:120]})") from None
    leaked = {r for r, f in zip(t["row_id"].to_pylist(), t["flagged"].to_pylist(), strict=True) if f}
    rows = judgments["row_id"].to_pylist()
    keep = pa.array([r not in leaked for r in rows])
    kept = judgments.filter(keep)
    excluded = sorted(leaked & set(rows))
    out = compute_metrics(kept, row_meta, **kwargs) if kept.num_rows else {}
    out.update(report=str(path), excluded_rows=len(excluded),
               excluded_judgments=judgments.num_rows - kept.num_rows, excluded_ids=excluded[:100])
    return out
