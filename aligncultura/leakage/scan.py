"""Eval-vs-reference leakage: index the (small) eval set, stream reference batches past it.

    index = build_index(eval_texts, eval_ids, LeakageConfig())
    result = scan_files(index, "refs/")            # in-process: piece after piece
    result = scan_ray(index, "refs/")              # Ray Data: one task per piece (ray.py)
    summarize(result)                              # flagged share with a Wilson 95% CI

Both runners cut the files into pieces of ~16 MB (pieces.py) and call the same pure
function on each batch of a piece, `scan_batch(index, batch) -> matches`, and reduce
its output with `best_matches` (best reference per eval row and method, ties broken by the
smaller reference id, so the result does not depend on batch order). A reference row is
compared three ways; each method reports only verified pairs:
- simhash: Hamming distance <= max_distance (the paper's dedup setting, 10 of 64 bits);
- minhash: LSH candidates verified by exact Jaccard >= threshold on the shingle sets;
- containment: share of the eval text's n-grams found verbatim in the reference (an eval
  prompt embedded in a longer document).
`flagged` is any method of ``flag_methods`` matching (default minhash or containment; the
per-method columns are always filled when that method matched). Memory stays flat in corpus
size: a batch is reduced to at most one row per (eval row, method) before it leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.stats import wilson_ci

from .containment import ContainmentConfig, ContainmentIndex
from .lsh import BucketIndex, band_keys, lsh_params
from .minhash import MinHashConfig, minhash
from .normalization import NormalizeConfig
from .pieces import (
    PIECE_BYTES,
    MissingColumn,
    Piece,
    check_format,
    list_files,
    plan_pieces,
    read_piece,
)
from .shingles import (
    Shingles,
    TextBatch,
    intersection_sizes,
    shingles,
    unique_sets,
)
from .simhash import SimHashConfig, SimHashIndex, simhash_batch

METHODS = ("simhash", "minhash", "containment")
MATCH_SCHEMA = pa.schema(
    [
        ("eval_row", pa.int64()),
        ("ref_id", pa.string()),
        ("method", pa.string()),
        ("similarity", pa.float64()),  # 1 - hamming/64 | Jaccard | containment
        ("hamming", pa.int64()),  # simhash only
    ]
)


@dataclass
class LeakageConfig:
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    simhash: SimHashConfig = field(default_factory=SimHashConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    containment: ContainmentConfig = field(default_factory=ContainmentConfig)
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # computed and reported
    flag_methods: list[str] = field(default_factory=lambda: ["minhash", "containment"])
    text_column: str = "text"  # of the reference data
    id_column: str = "id"
    batch_size: int = 1024  # reference rows per batch
    piece_bytes: int = PIECE_BYTES  # reference data per piece = per Ray task (pieces.py)
    max_batch_bytes: int = 1_000_000  # scan_batch works on slices of at most this much text

    def __post_init__(self) -> None:
        bad = [m for m in [*self.methods, *self.flag_methods] if m not in METHODS]
        if bad:
            raise ValueError(f"leakage methods {bad} unknown: use {list(METHODS)}")
        for key in ("batch_size", "piece_bytes", "max_batch_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"leakage.{key}={getattr(self, key)}: must be >= 1")
        missing = [m for m in self.flag_methods if m not in self.methods]
        if missing:
            raise ValueError(f"leakage.flag_methods {missing} must also be in leakage.methods")


@dataclass
class LeakageIndex:
    """Everything a scan needs about the eval set; picklable (Ray ships it to workers)."""

    config: LeakageConfig
    ids: pa.Array  # eval ids, as strings
    status: np.ndarray  # ok / null / empty per eval row
    simhash: SimHashIndex | None
    sets: Shingles | None  # minhash shingle sets (sorted, unique) of the eval rows
    bands: BucketIndex | None
    lsh: tuple[int, int]
    containment: ContainmentIndex | None


def build_index(texts, ids=None, cfg: LeakageConfig | None = None) -> LeakageIndex:
    """Index the eval texts (ids default to the row index)."""
    cfg = cfg or LeakageConfig()
    tb = TextBatch(texts, cfg.normalize)
    ids = pa.array([str(i) for i in range(tb.n)], pa.string()) if ids is None else _ids(ids)
    if len(ids) != tb.n:
        raise ValueError(f"build_index: {len(ids)} ids for {tb.n} eval texts")
    ok = tb.ok
    sim_index = sets = bands = cont = None
    lsh = (0, 0)
    if "simhash" in cfg.methods:
        sim_index = SimHashIndex(simhash_batch(tb, cfg.simhash.shingles), ok, cfg.simhash)
    if "minhash" in cfg.methods:
        m = cfg.minhash
        sh = shingles(tb, m.shingles, mix=False)
        sets = unique_sets(sh)
        lsh = lsh_params(m.threshold, m.num_perm, (m.fp_weight, m.fn_weight))
        keys = band_keys(minhash(sh, m), *lsh)
        rows = np.flatnonzero(ok)
        bands = BucketIndex((keys[rows, t] for t in range(lsh[0])), rows)
    if "containment" in cfg.methods:
        cont = ContainmentIndex(tb, cfg.containment)
    return LeakageIndex(cfg, ids, tb.status, sim_index, sets, bands, lsh, cont)


def _ids(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(list(values))
    return pc.cast(values, pa.string())


def _column(batch, name: str, what: str):
    if name not in batch.schema.names:
        raise KeyError(
            f"reference batch has no {what} column {name!r} (columns: {batch.schema.names}); "
            f"set leakage.{what}_column"
        )
    return batch.column(name)


def scan_batch(index: LeakageIndex, batch: pa.RecordBatch | pa.Table, keep: str = "best") -> pa.Table:
    """Verified matches between the eval set and one batch of reference rows.

    keep="best": at most one row per (eval row, method), the most similar reference;
    keep="all": every verified pair (for analysis; grows with the number of matches).
    """
    cfg = index.config
    texts = _column(batch, cfg.text_column, "text")
    ref_ids = _ids(_column(batch, cfg.id_column, "id"))
    sizes = np.asarray(pc.binary_length(texts).fill_null(0), dtype=np.int64)
    if len(sizes) > 1 and sizes.sum() > cfg.max_batch_bytes:
        # working memory is ~100x the text: cut big batches into slices of bounded bytes
        step = cfg.max_batch_bytes
        cuts = np.searchsorted(np.cumsum(sizes), np.arange(step, sizes.sum(), step))
        edges = np.unique(np.r_[0, np.maximum(cuts, 1), len(sizes)])
        slices = zip(edges[:-1], edges[1:], strict=True)
        table = pa.concat_tables([scan_batch(index, batch.slice(a, b - a), keep) for a, b in slices])
        return _best_per_method(table) if keep == "best" else table
    tb = TextBatch(texts, cfg.normalize)
    ok = tb.ok
    found: list[tuple] = []  # (eval_row, ref_row, method, similarity, hamming)
    if index.simhash is not None:
        fps = simhash_batch(tb, cfg.simhash.shingles)
        tb.release()  # character n-grams are the largest arrays: free them before going on
        q, e, d = index.simhash.query(fps, ok)
        found.append((e, q, "simhash", 1.0 - d / 64.0, d))
    if index.bands is not None:
        m = cfg.minhash
        sh = shingles(tb, m.shingles, mix=False)
        rows = np.flatnonzero(ok & (sh.counts > 0))
        if len(rows):
            keys = band_keys(minhash(sh.take(rows), m), *index.lsh)
            q, e = index.bands.query(keys[:, t] for t in range(index.lsh[0]))
            refs, qpos = np.unique(q, return_inverse=True)
            ref_sets = unique_sets(sh.take(rows[refs]))
            inter = intersection_sizes(index.sets, ref_sets, e, qpos)
            union = index.sets.counts[e] + ref_sets.counts[qpos] - inter
            jac = inter / np.maximum(union, 1)
            hit = jac >= m.threshold
            found.append((e[hit], rows[q[hit]], "minhash", jac[hit], None))
        tb.release()
    if index.containment is not None:
        r, e, c = index.containment.query(tb)
        hit = ok[r] & (c >= cfg.containment.min_containment)
        found.append((e[hit], r[hit], "containment", c[hit], None))
    return _matches_table(found, ref_ids, keep)


def _matches_table(found: list[tuple], ref_ids: pa.Array, keep: str) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in MATCH_SCHEMA.names}
    for e, r, method, sim, dist in found:
        if len(e) == 0:
            continue
        cols["eval_row"].append(pa.array(e, pa.int64()))
        cols["ref_id"].append(ref_ids.take(pa.array(r, pa.int64())))
        cols["method"].append(pa.array([method] * len(e), pa.string()))
        cols["similarity"].append(pa.array(sim, pa.float64()))
        cols["hamming"].append(pa.nulls(len(e), pa.int64()) if dist is None else pa.array(dist, pa.int64()))
    if not cols["eval_row"]:
        return MATCH_SCHEMA.empty_table()
    table = pa.Table.from_arrays(
        [pa.concat_arrays(cols[n]) for n in MATCH_SCHEMA.names], schema=MATCH_SCHEMA
    )
    if keep == "all":
        return table
    if keep != "best":
        raise ValueError(f"scan_batch keep={keep!r}: use 'best' or 'all'")
    return _best_per_method(table)


def _best_per_method(table: pa.Table) -> pa.Table:
    """One row per (eval_row, method): highest similarity, then smallest ref_id."""
    if table.num_rows == 0:
        return table
    table = table.sort_by(
        [("eval_row", "ascending"), ("method", "ascending"), ("similarity", "descending"),
         ("ref_id", "ascending")]
    )
    ev = table["eval_row"].to_numpy()
    method = np.asarray(table["method"].to_pylist(), dtype=object)
    first = np.ones(table.num_rows, dtype=bool)
    first[1:] = (ev[1:] != ev[:-1]) | (method[1:] != method[:-1])
    return table.filter(pa.array(first))


def best_matches(index: LeakageIndex, matches: pa.Table | Iterable[pa.Table]) -> pa.Table:
    """One row per eval row: the best match per method and overall.

    Columns: eval_id, status, flagged, method, ref_id, similarity (overall, among
    flag_methods), then per method: simhash_ref_id, simhash_hamming, minhash_ref_id,
    minhash_jaccard, containment_ref_id, containment.
    """
    if isinstance(matches, pa.Table):
        matches = [matches]
    # reduce as batches arrive, so memory stays bounded by ~3 rows per eval row
    best, parts, pending = MATCH_SCHEMA.empty_table(), [], 0
    for part in matches:
        if part.num_rows:
            parts.append(part.cast(MATCH_SCHEMA))
            pending += part.num_rows
        if pending > max(100_000, 4 * len(METHODS) * len(index.ids)):
            best, parts, pending = _best_per_method(pa.concat_tables([best, *parts])), [], 0
    best = _best_per_method(pa.concat_tables([best, *parts]))
    n = len(index.ids)
    cfg = index.config
    ev = best["eval_row"].to_numpy()
    method = np.asarray(best["method"].to_pylist(), dtype=object)
    sim = best["similarity"].to_numpy()
    refs = np.asarray(best["ref_id"].to_pylist(), dtype=object)
    ham = np.asarray(best["hamming"].to_pylist(), dtype=object)
    out: dict[str, object] = {"eval_id": index.ids, "status": pa.array(index.status.astype(str))}
    per: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in METHODS:
        sel = method == name
        r = np.full(n, None, dtype=object)
        s = np.full(n, np.nan)
        h = np.full(n, None, dtype=object)
        r[ev[sel]], s[ev[sel]], h[ev[sel]] = refs[sel], sim[sel], ham[sel]
        per[name] = (r, s, h)
    best_sim = np.full(n, -1.0)
    best_method = np.full(n, None, dtype=object)
    best_ref = np.full(n, None, dtype=object)
    for name in cfg.flag_methods:  # earlier methods win ties
        r, s, _ = per[name]
        better = ~np.isnan(s) & (s > best_sim)
        best_sim[better], best_method[better], best_ref[better] = s[better], name, r[better]
    flagged = np.array([m is not None for m in best_method], dtype=bool)
    out["flagged"] = pa.array(flagged, pa.bool_())
    out["method"] = pa.array(best_method.tolist(), pa.string())
    out["ref_id"] = pa.array(best_ref.tolist(), pa.string())
    out["similarity"] = pa.array(np.where(flagged, best_sim, np.nan), pa.float64(), mask=~flagged)
    names = {"simhash": "simhash_hamming", "minhash": "minhash_jaccard", "containment": "containment"}
    for name in METHODS:
        r, s, h = per[name]
        out[f"{name}_ref_id"] = pa.array(r.tolist(), pa.string())
        if name == "simhash":
            out[names[name]] = pa.array(h.tolist(), pa.int64())
        else:
            out[names[name]] = pa.array(s, pa.float64(), mask=np.isnan(s))
    return pa.table(out)


# ----------------------------------------------------------------------------- runners


def scan_batches(index: LeakageIndex, batches: Iterable[pa.RecordBatch | pa.Table]) -> pa.Table:
    """In-process runner: a plain loop over Arrow batches."""
    return best_matches(index, (scan_batch(index, b) for b in batches))


def scan_piece(piece: Piece, index: LeakageIndex, batch_size: int | None = None) -> tuple[pa.Table, dict]:
    """Scan one piece of a reference file: (best matches per eval row and method, {"read": rows})."""
    cfg = index.config
    parts, read = [MATCH_SCHEMA.empty_table()], 0
    try:
        for b in read_piece(piece, [cfg.text_column, cfg.id_column], batch_size or cfg.batch_size):
            read += b.num_rows
            parts.append(scan_batch(index, b))
    except MissingColumn as exc:
        what = "text" if exc.column == cfg.text_column else "id"
        raise KeyError(f"{exc}; set leakage.{what}_column") from None
    return _best_per_method(pa.concat_tables(parts)), {"read": read}


def scan_files(
    index: LeakageIndex, paths, fmt: str = "parquet", batch_size: int | None = None,
    piece_bytes: int | None = None,
) -> pa.Table:
    """In-process scan of Parquet / JSON-lines files or directories, piece by piece.

    The same pieces and `scan_piece` as `scan_ray` (ray.py), one after the other: memory does not
    depend on how many files there are or how large they are.
    """
    fmt = check_format(fmt)
    pieces = plan_pieces(list_files(paths, fmt), fmt,
                         index.config.piece_bytes if piece_bytes is None else piece_bytes)
    return best_matches(index, (scan_piece(p, index, batch_size)[0] for p in pieces))


# ----------------------------------------------------------------------------- summary


def summarize(result: pa.Table) -> dict:
    """Flagged share of the scorable (status ok) eval rows, with a Wilson 95% CI."""
    ok = np.asarray(result["status"].to_pylist()) == "ok"
    flagged = np.asarray(result["flagged"].to_pylist(), dtype=bool) & ok
    k, n = int(flagged.sum()), int(ok.sum())
    lo, hi = wilson_ci(k, n)
    by_method = {m: int((np.asarray(result["method"].to_pylist(), dtype=object) == m).sum())
                 for m in METHODS}
    return {"flagged": k, "scored": n, "unscored": int((~ok).sum()),
            "rate": k / n if n else float("nan"), "ci95": (lo, hi), "by_method": by_method}
