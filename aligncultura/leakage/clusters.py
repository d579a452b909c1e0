"""Within-set deduplication: candidate pairs -> exact verification -> union-find clusters.

Candidates come from MinHash LSH bands or SimHash block tables (lsh.py); each candidate is
verified exactly (Jaccard on the shingle sets, or Hamming distance on the fingerprints);
verified pairs are merged with union-find. The representative of a cluster is its smallest
row index (the earliest row), so the result does not depend on pair order, and
``cluster_id`` is that row index. ``similarity`` is each member's similarity to its
representative (Jaccard, or 1 - Hamming / 64), computed directly rather than along the
chain that linked them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import U64, fmix64
from .lsh import band_keys, lsh_params, self_pairs
from .minhash import MinHashConfig, minhash
from .normalization import NormalizeConfig, string_array
from .shingles import (
    NULL,
    OK,
    Shingles,
    TextBatch,
    intersection_sizes,
    shingles,
    unique_sets,
)
from .simhash import SimHashConfig, hamming, near_pairs, simhash_batch


@dataclass
class DedupConfig:
    method: str = "minhash"  # minhash | simhash
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    simhash: SimHashConfig = field(default_factory=SimHashConfig)


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over n nodes and edges (i, j): each node's root, the smallest node of its
    component. Vectorised: hook every root to the smaller root across an edge, compress
    paths by pointer jumping, repeat until no edge joins two roots."""
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    while len(i):
        while True:  # full path compression: parent[x] becomes x's root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        ri, rj = parent[i], parent[j]
        apart = ri != rj
        if not apart.any():
            break
        i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))
    return parent


def _set_keys(sets: Shingles) -> np.ndarray:
    """An order-free 64-bit key per set (equal sets, equal keys), 0 for empty sets."""
    counts = sets.counts
    keys = np.zeros(len(counts), dtype=U64)
    live = counts > 0
    if live.any():
        keys[live] = np.add.reduceat(fmix64(sets.hashes), sets.offsets[:-1][live])
    keys += counts.astype(U64)
    return fmix64(keys)


def jaccard_pairs(sets: Shingles, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle sets of rows i and j (sets from `unique_sets`)."""
    inter = intersection_sizes(sets, sets, i, j)
    union = sets.counts[i] + sets.counts[j] - inter
    return np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0)


def minhash_edges(keys: np.ndarray, valid: np.ndarray, signatures, jaccard,
                  cfg: MinHashConfig = MinHashConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs (i, j, Jaccard >= cfg.threshold) among the valid rows.

    `keys` are the rows' set keys (`_set_keys`), `signatures(heads)` gives MinHash signatures
    of rows and `jaccard(i, j)` the exact Jaccard of row pairs, so the fingerprints may be
    computed here or elsewhere (Ray workers: `fingerprint_rows`). Rows with identical shingle
    sets are collapsed to their first row before LSH (and linked to it with Jaccard 1), so
    exact-duplicate groups cost no quadratic blow-up.
    """
    rows = np.flatnonzero(valid)
    keys = keys[rows]
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    heads = rows[first]  # np.unique's first index = smallest row of each group
    sig = signatures(heads)
    bands, rws = lsh_params(cfg.threshold, cfg.num_perm, (cfg.fp_weight, cfg.fn_weight))
    bk = band_keys(sig, bands, rws)
    ui, uj = self_pairs((bk[:, t] for t in range(bands)), len(heads))
    i, j = heads[ui], heads[uj]
    jac = jaccard(i, j)
    ok = jac >= cfg.threshold
    dup = rows != heads[inv]
    return (
        np.concatenate([i[ok], heads[inv][dup]]),
        np.concatenate([j[ok], rows[dup]]),
        np.concatenate([jac[ok], np.ones(int(dup.sum()))]),
    )


def _jaccard_of_rows(texts, i: np.ndarray, j: np.ndarray, cfg: DedupConfig) -> np.ndarray:
    """Exact Jaccard of rows (i, j), shingling only the rows involved."""
    if not len(i):
        return np.zeros(0)
    rows, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
    col = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(list(texts))
    sub = col.take(pa.array(rows, pa.int64()))
    sets = unique_sets(shingles(TextBatch(sub, cfg.normalize), cfg.minhash.shingles, mix=False))
    return jaccard_pairs(sets, inv[: len(i)], inv[len(i):])


def _cluster_table(ids: pa.Array, roots: np.ndarray, sim: np.ndarray, status: np.ndarray) -> pa.Table:
    null = status != OK
    size = np.bincount(roots, minlength=len(roots))[roots]
    taken = ids.take(pa.array(roots, pa.int64()))
    return pa.table(
        {
            "id": ids,
            "cluster_id": pa.array(roots, pa.int64(), mask=null),
            "representative": pc.if_else(pa.array(null), pa.nulls(len(ids), taken.type), taken),
            "is_representative": pa.array(roots == np.arange(len(roots)), pa.bool_(), mask=null),
            "cluster_size": pa.array(size, pa.int64(), mask=null),
            "similarity": pa.array(sim, pa.float64(), mask=null),
            "status": pa.array(status.astype(str), pa.string()),
        }
    )


def fingerprint_rows(texts, cfg: DedupConfig = DedupConfig()) -> dict[str, np.ndarray]:
    """The per-row fingerprints near-duplicate clustering needs, computable batch by batch
    (the Ray path maps this over blocks): SimHash -> {"simhash"}; MinHash -> {"set_key",
    "set_size", "signature"} (the signature of the row's own shingle set). Rows are independent, so
    concatenating the batches' arrays equals fingerprinting the whole column at once."""
    tb = TextBatch(texts, cfg.normalize)
    if cfg.method == "simhash":
        return {"simhash": simhash_batch(tb, cfg.simhash.shingles)}
    if cfg.method == "minhash":
        sets = unique_sets(shingles(tb, cfg.minhash.shingles, mix=False))
        return {"set_key": _set_keys(sets), "set_size": sets.counts.astype(np.int64),
                "signature": minhash(sets, cfg.minhash)}
    raise ValueError(f"dedup.method={cfg.method!r}: use 'minhash' or 'simhash'")


def near_duplicate_clusters(texts, ids=None, cfg: DedupConfig = DedupConfig(),
                            fingerprints: dict[str, np.ndarray] | None = None,
                            batch: TextBatch | None = None) -> pa.Table:
    """One row per input row: id, cluster_id, representative, is_representative,
    cluster_size, similarity (to the representative), status (ok / null / empty).

    ids default to the row index. Null and empty texts are never clustered. `fingerprints`
    (from `fingerprint_rows`, e.g. computed on Ray workers) skips the fingerprinting here;
    MinHash then builds shingle sets on this side only for the rows of candidate pairs, to
    verify them exactly. The result is the same either way. `batch`: these texts already
    normalised with cfg.normalize (`TextBatch`), e.g. shared with `exact_clusters`.
    """
    tb = TextBatch.reuse(batch, texts, cfg.normalize)
    ids = pa.array(np.arange(tb.n)) if ids is None else _as_array(ids)
    if len(ids) != tb.n:
        raise ValueError(f"{len(ids)} ids for {tb.n} texts")
    ok = tb.ok
    n = tb.n
    if cfg.method == "simhash":
        fps = fingerprints["simhash"] if fingerprints is not None else \
            simhash_batch(tb, cfg.simhash.shingles)
        rows = np.flatnonzero(ok)
        i, j, _ = near_pairs(fps[rows], cfg.simhash.max_distance, cfg.simhash.num_blocks)
        roots = connected_components(n, rows[i], rows[j])
        sim = 1.0 - hamming(fps, fps[roots]) / 64.0
    elif cfg.method == "minhash":
        if fingerprints is None:
            sets = unique_sets(shingles(tb, cfg.minhash.shingles, mix=False))
            keys, sizes = _set_keys(sets), sets.counts
            def signatures(h):
                return minhash(sets.take(h), cfg.minhash)
            def jaccard(a, b):
                return jaccard_pairs(sets, a, b)
        else:
            keys, sizes, sig = (fingerprints[k] for k in ("set_key", "set_size", "signature"))
            def signatures(h):
                return sig[h]
            def jaccard(a, b):
                return _jaccard_of_rows(texts, a, b, cfg)
        i, j, _ = minhash_edges(keys, ok & (sizes > 0), signatures, jaccard, cfg.minhash)
        roots = connected_components(n, i, j)
        sim = np.ones(n)
        moved = np.flatnonzero(roots != np.arange(n))
        sim[moved] = jaccard(moved, roots[moved])
    else:
        raise ValueError(f"dedup.method={cfg.method!r}: use 'minhash' or 'simhash'")
    return _cluster_table(ids, roots, sim, tb.status)


def exact_clusters(texts, ids=None, norm: NormalizeConfig = NormalizeConfig(),
                   batch: TextBatch | None = None) -> pa.Table:
    """Clusters of rows whose normalised texts are identical (same columns as above).

    `batch`: these texts already normalised with `norm` (`TextBatch`), e.g. the batch then
    given to `near_duplicate_clusters`, so the column is normalised once for both.
    """
    tb = TextBatch.reuse(batch, texts, norm)
    status = tb.status
    n = tb.n
    normed = string_array(tb.buf, tb.offsets, status == NULL)
    ids = pa.array(np.arange(n)) if ids is None else _as_array(ids)
    codes = np.asarray(pc.dictionary_encode(normed).indices.fill_null(-1), dtype=np.int64)
    codes[status != OK] = -1
    first = np.full(max(int(codes.max()) + 1, 0) if n else 0, n, dtype=np.int64)
    live = codes >= 0
    np.minimum.at(first, codes[live], np.flatnonzero(live))
    roots = np.arange(n, dtype=np.int64)
    roots[live] = first[codes[live]]
    return _cluster_table(ids, roots, np.ones(n), status)


def _as_array(ids) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        return ids.combine_chunks()
    return ids if isinstance(ids, pa.Array) else pa.array(list(ids))


def duplicate_groups(table: pa.Table) -> int:
    """Number of clusters with more than one member in a cluster table."""
    rep = np.asarray(table["is_representative"].fill_null(False))
    size = np.asarray(table["cluster_size"].fill_null(0))
    return int(((size > 1) & rep).sum())
