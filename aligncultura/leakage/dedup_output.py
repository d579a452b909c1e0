"""jobs.dedup's outputs from per-row arrays: clusters.parquet written in row groups (so the
table is never whole in memory) and the group counts of summary.json.

The columns are those of clusters.py `near_duplicate_clusters` (id renamed row_id) followed by
`exact_clusters`' cluster id and representative, then the input's subdomain and split; rows
whose status is not ok have nulls in every cluster column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .dedup_stream import STATUS
from .stream_input import SPLITS

CLUSTERS_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("cluster_id", pa.int64()),
    ("representative", pa.string()),
    ("is_representative", pa.bool_()),
    ("cluster_size", pa.int64()),
    ("similarity", pa.float64()),
    ("status", pa.string()),
    ("exact_cluster_id", pa.int64()),
    ("exact_representative", pa.string()),
    ("subdomain", pa.string()),
    ("split", pa.string()),
])
ROW_GROUP = 1 << 16


def _rep(ids: pa.Array, roots: np.ndarray, null: np.ndarray) -> pa.Array:
    taken = ids.take(pa.array(roots, pa.int64()))
    return pc.if_else(pa.array(null), pa.nulls(len(roots), taken.type), taken)


def write_clusters(path: Path, ids: pa.Array, status: np.ndarray, near: np.ndarray,
                   sim: np.ndarray, exact: np.ndarray, subdomain: pa.Array,
                   split: np.ndarray) -> None:
    """clusters.parquet, ROW_GROUP rows at a time, written to a temporary name then renamed.
    ids/subdomain: Arrow string arrays; status: STATUS codes; near/exact: root row of each
    row; sim: similarity to the near root; split: SPLITS codes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    near_size = np.bincount(near, minlength=len(near))
    status_names = pa.array(list(STATUS), pa.string())
    split_names = pa.array(list(SPLITS), pa.string())
    try:
        with pq.ParquetWriter(tmp, CLUSTERS_SCHEMA) as w:
            for a in range(0, max(len(status), 1), ROW_GROUP):
                b = min(len(status), a + ROW_GROUP)
                null = status[a:b] != 0
                r, e = near[a:b], exact[a:b]
                cols = [
                    ids.slice(a, b - a),
                    pa.array(r, pa.int64(), mask=null),
                    _rep(ids, r, null),
                    pa.array(r == np.arange(a, b), pa.bool_(), mask=null),
                    pa.array(near_size[r], pa.int64(), mask=null),
                    pa.array(sim[a:b], pa.float64(), mask=null),
                    status_names.take(pa.array(status[a:b], pa.int64())),
                    pa.array(e, pa.int64(), mask=null),
                    _rep(ids, e, null),
                    subdomain.slice(a, b - a).cast(pa.string()),
                    split_names.take(pa.array(split[a:b], pa.int64())),
                ]
                w.write_table(pa.Table.from_arrays(cols, schema=CLUSTERS_SCHEMA))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _groups(roots: np.ndarray, ok: np.ndarray) -> dict[str, int]:
    n = len(roots)
    size = np.bincount(roots, minlength=n)[roots]
    rep = roots == np.arange(n)
    return {"groups": int((ok & rep & (size > 1)).sum()),
            "rows_in_groups": int((ok & (size > 1)).sum()),
            "duplicates_dropped": int((ok & ~rep).sum()),
            "kept": int((ok & rep).sum())}


def group_counts(status: np.ndarray, near: np.ndarray, exact: np.ndarray,
                 method: str) -> dict[str, Any]:
    """summary.json's exact / near / unclustered blocks (what jobs.dedup reported from the
    cluster tables: duplicate groups, rows in them, rows dropped, rows kept)."""
    ok = status == 0
    ex = _groups(exact, ok)
    ex.pop("kept")
    counts = np.bincount(status, minlength=len(STATUS))
    return {"exact": ex, "near": {"method": method, **_groups(near, ok)},
            "unclustered": {STATUS[k]: int(counts[k]) for k in range(1, len(STATUS))
                            if counts[k]}}
