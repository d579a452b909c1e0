"""Candidate generation by exact-key buckets: MinHash LSH bands and SimHash block tables.

Both methods reduce to the same join: every text gets one key per table (an LSH band, or a
masked group of SimHash blocks), and two texts are candidates when they share a key in at
least one table. `self_pairs` joins a set with itself (dedup); `BucketIndex` holds the keys
of a small set (the eval side) and looks a batch of other keys up in it (scan). Candidates
are only candidates: callers verify each pair exactly (Jaccard or Hamming).

The LSH bands/rows are datasketch's own optimum (`datasketch.lsh._optimal_param`), so an
index built here behaves like `datasketch.MinHashLSH(threshold, num_perm, weights)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from .hashing import U64, fmix64


def lsh_params(
    threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive/false-negative area, as datasketch."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"minhash.threshold={threshold} must be in [0, 1]")
    fp_w, fn_w = weights
    if abs(fp_w + fn_w - 1.0) > 1e-9:
        raise ValueError(f"minhash.weights={weights} must sum to 1 (datasketch's convention)")
    return _optimal(float(threshold), int(num_perm), float(fp_w), float(fn_w))


@lru_cache(maxsize=64)
def _optimal(threshold: float, num_perm: int, fp_w: float, fn_w: float) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param  # numerical integration: ~10 ms a call

    bands, rows = _optimal_param(threshold, num_perm, fp_w, fn_w)
    return int(bands), int(rows)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (text, band): the band's `rows` signature values, hashed."""
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} > {num_perm} perms")
    mult = fmix64(np.arange(1, rows + 1, dtype=U64)) | U64(1)
    # sum_r sig[:, b * rows + r] * mult[r] mod 2^64, one strided column of bands at a time
    # (the same sum as a multiply and a sum over a (n, bands, rows) copy, in any order)
    keys = np.zeros((n, bands), dtype=U64)
    term = np.empty_like(keys)
    for r in range(rows):
        np.multiply(signatures[:, r : bands * rows : rows], mult[r], out=term, dtype=U64)
        keys += term
    keys += np.arange(bands, dtype=U64)
    return fmix64(keys)


def _group_pairs(sorted_keys: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) of items whose keys are equal; keys sorted, order maps to items."""
    n = len(sorted_keys)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_start = np.flatnonzero(new)
    sizes = np.diff(np.r_[group_start, n])
    if sizes.max() < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start_of = np.repeat(group_start, sizes)
    size_of = np.repeat(sizes, sizes)
    pos = np.arange(n, dtype=np.int64)
    later = start_of + size_of - 1 - pos  # partners after each position in its group
    left = np.repeat(pos, later)
    first = np.zeros(len(later) + 1, dtype=np.int64)
    np.cumsum(later, out=first[1:])
    right = left + 1 + (np.arange(len(left), dtype=np.int64) - np.repeat(first[:-1], later))
    i, j = order[left], order[right]
    return np.minimum(i, j), np.maximum(i, j)


def _unique_pairs(i: np.ndarray, j: np.ndarray, n_j: int) -> tuple[np.ndarray, np.ndarray]:
    code = np.unique(i.astype(np.int64) * np.int64(max(n_j, 1)) + j)
    return code // max(n_j, 1), code % max(n_j, 1)


def self_pairs(columns: Iterable[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs i < j of the n items sharing a key in at least one column (table)."""
    got_i, got_j = [], []
    for col in columns:
        order = np.argsort(col)  # any order within a key: pairs come out as (min, max), unique
        i, j = _group_pairs(col[order], order)
        got_i.append(i)
        got_j.append(j)
    if not got_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return _unique_pairs(np.concatenate(got_i), np.concatenate(got_j), n)


class BucketIndex:
    """Sorted key tables of a fixed set of items (e.g. the eval set), queried by batches."""

    def __init__(self, columns: Iterable[np.ndarray], items: np.ndarray):
        """columns[t][k] is item k's key in table t; `items` are the ids queries return."""
        items = np.asarray(items, dtype=np.int64)
        self.n = int(items.max()) + 1 if len(items) else 1
        self.orders = []
        self.keys = []
        for col in columns:
            order = np.argsort(col, kind="stable")
            self.orders.append(items[order])
            self.keys.append(np.ascontiguousarray(col[order]))

    def query(self, columns: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Unique (query row, indexed item) pairs sharing a key in at least one table."""
        got_q, got_i = [], []
        for t, col in enumerate(columns):
            keys, order = self.keys[t], self.orders[t]
            lo = np.searchsorted(keys, col, "left")
            hi = np.searchsorted(keys, col, "right")
            cnt = hi - lo
            hit = np.flatnonzero(cnt)
            if len(hit) == 0:
                continue
            cnt = cnt[hit]
            q = np.repeat(hit, cnt)
            first = np.zeros(len(cnt) + 1, dtype=np.int64)
            np.cumsum(cnt, out=first[1:])
            pos = np.repeat(lo[hit], cnt) + (np.arange(len(q)) - np.repeat(first[:-1], cnt))
            got_q.append(q.astype(np.int64))
            got_i.append(order[pos])
        if not got_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return _unique_pairs(np.concatenate(got_q), np.concatenate(got_i), self.n)
