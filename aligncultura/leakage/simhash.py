"""64-bit SimHash fingerprints and Hamming-radius candidate search by permuted blocks.

Fingerprint: bit k is set when more than half of the text's shingles (counted with
multiplicity) have bit k set in their 64-bit hash (Charikar's SimHash with unit weights).
Bit k of the fingerprint is bit k of the unsigned integer (little-endian).

Candidates within Hamming distance d (paper: d = 10) use the pigeonhole scheme of Manku et
al. (WWW 2007), generalised: cut the 64 bits into k >= d + 1 contiguous blocks. Two
fingerprints that differ in at most d bits differ in at most d blocks, so they agree
exactly on at least k - d blocks; hence they share the key "fingerprint masked to those
blocks" for at least one of the C(k, k - d) block combinations. One table per combination
finds *every* pair within distance d; each candidate is then verified exactly with a
popcount. Default k = 12: 66 tables keyed on 2 blocks (10-12 bits). k = d + 1 = 11 gives
11 tables on one 5-6 bit block (few lookups, many candidates: good for tiny sets); larger k
trades more tables for fewer random candidates (k = 14: 1001 tables, ~18-bit keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

import numpy as np

from .hashing import U64, docs_in_chunk
from .lsh import BucketIndex, _unique_pairs
from .shingles import ShingleConfig, Shingles, TextBatch, shingle_chunks

_CHUNK_ROWS = 1 << 15  # < 2^16: per-lane counts cannot overflow
_LANES = U64(0x0001000100010001)


@dataclass
class SimHashConfig:
    """SimHash settings. Defaults: the paper's 64 bits and Hamming <= 10.

    Features default to character 4-grams (spaces included), as the `simhash` package does:
    on CulturaX-like prompts (~30 words) word unigrams give too few features, so unrelated
    prompts land within distance 10 (precision ~0.6), and word 2/3-grams lose near-duplicates;
    char 4-grams keep precision ~0.98 (bench/LEAKAGE_RESULTS.md compares them). They cost
    one shingle per character rather than per word.
    """

    shingles: ShingleConfig = field(default_factory=lambda: ShingleConfig(unit="char", n=4))
    max_distance: int = 10
    num_blocks: int = 12

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance < 64:
            raise ValueError(f"simhash.max_distance={self.max_distance} must be in [0, 63]")
        if not self.max_distance < self.num_blocks <= 64:
            raise ValueError(
                f"simhash.num_blocks={self.num_blocks} must be in (max_distance, 64] "
                f"= ({self.max_distance}, 64] for the pigeonhole guarantee"
            )


def simhash(sh: Shingles) -> np.ndarray:
    """One 64-bit fingerprint per text (0 for a text without shingles).

    Bit counting is bit-sliced: (h >> j) & 0x0001000100010001 puts bits j, j+16, j+32, j+48
    into four 16-bit lanes of a uint64, so one `add.reduceat` counts four bit positions for
    every text at once (16 passes for 64 bits). Chunks of < 2^16 shingles keep lanes exact.
    """
    return _fingerprints(sh.offsets, [(0, sh.hashes)])


def simhash_batch(tb: TextBatch, cfg: ShingleConfig) -> np.ndarray:
    """`simhash(shingles(tb, cfg))`, counting bits piece by piece as the shingles are hashed
    (`shingle_chunks`) for character n-grams, the default: neither the shingle hashes nor the
    character hashes of the whole batch (8 bytes per character each) are ever held."""
    return _fingerprints(*shingle_chunks(tb, cfg))


def _fingerprints(offsets: np.ndarray, pieces) -> np.ndarray:
    """SimHash of texts whose shingle hashes come as (position, hashes) pieces, in order.
    Bit counts are integer sums, so they do not depend on how the shingles are cut."""
    n = len(offsets) - 1
    counts = np.zeros((n, 64), dtype=np.int64)
    lane = np.empty(_CHUNK_ROWS, dtype=U64)
    for pos, hashes in pieces:
        for a in range(0, len(hashes), _CHUNK_ROWS):
            h = hashes[a : a + _CHUNK_ROWS]
            lo, hi = pos + a, pos + a + len(h)
            docs, seg = docs_in_chunk(offsets, lo, hi)
            part = np.empty((len(docs), 64), dtype=np.int64)
            buf = lane[: hi - lo]
            for j in range(16):
                np.right_shift(h, U64(j), out=buf)
                buf &= _LANES
                summed = np.add.reduceat(buf, seg)
                part[:, j::16] = summed.astype("<u8").view("<u2").reshape(-1, 4)
            counts[docs] += part
    majority = (2 * counts > np.diff(offsets)[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1, bitorder="little").view("<u8").ravel().astype(U64)


def popcount64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=U64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[x[..., None].view(np.uint8)].sum(axis=-1)  # numpy < 2.0


_bit_count = getattr(np, "bitwise_count", popcount64)  # numpy >= 2.0: uint8 counts, no cast


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance, element by element (broadcasting)."""
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=U64), np.asarray(b, dtype=U64)))


@lru_cache(maxsize=32)
def block_masks(num_blocks: int, max_distance: int) -> np.ndarray:
    """One 64-bit mask per combination of num_blocks - max_distance contiguous blocks."""
    edges = np.linspace(0, 64, num_blocks + 1).round().astype(int)
    blocks = [sum(1 << bit for bit in range(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    masks = [sum(blocks[i] for i in combo)
             for combo in combinations(range(num_blocks), num_blocks - max_distance)]
    return np.array(masks, dtype=U64)


def _columns(fps: np.ndarray, masks: np.ndarray):
    for m in masks:
        yield fps & m


def _close_pairs(fps: np.ndarray, masks: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs i < j (sorted) sharing a block key in some table and within max_distance.

    The same pairs as `self_pairs` over the tables filtered by Hamming distance, but each
    table's candidates are verified as they are enumerated, so only the (few) close pairs are
    kept: a table of n keys in ~2^11 buckets has ~n^2 / 2^12 candidates, far too many to hold
    for all 66 tables at once. In a table sorted by key, offset d pairs every position p with
    p + d while both are in the same bucket (p has at least d members after it): one popcount
    per candidate, over the whole table while most positions qualify (contiguous slices),
    then over the positions that do (a prefix of the positions by members after them).
    """
    got_i, got_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    n = len(fps)
    pos = np.arange(n, dtype=np.int64)
    for mask in masks if n > 1 else ():
        keys = fps & mask
        order = np.argsort(keys)  # any order within a bucket: pairs are (min, max), unique
        keys, f = keys[order], fps[order]
        new = np.ones(n, dtype=bool)
        new[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(new)
        ends = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))  # bucket end per position
        after = ends - pos - 1  # members after each position in its bucket
        by_after = np.argsort(-after, kind="stable")
        at_least = np.cumsum(np.bincount(after, minlength=2)[::-1])[::-1]  # [d]: #(after >= d)
        for d in range(1, len(at_least)):
            if 4 * at_least[d] > n - d:
                ok = _bit_count(f[:-d] ^ f[d:]) <= max_distance
                ok &= after[:-d] >= d
                close = np.flatnonzero(ok)
            else:
                act = by_after[: at_least[d]]
                close = act[_bit_count(f[act] ^ f[act + d]) <= max_distance]
            if len(close):
                a, b = order[close], order[close + d]
                got_i.append(np.minimum(a, b))
                got_j.append(np.maximum(a, b))
    return _unique_pairs(np.concatenate(got_i), np.concatenate(got_j), n)


def near_pairs(
    fps: np.ndarray, max_distance: int = 10, num_blocks: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (i, j, distance), i < j, linking every pair of rows within max_distance.

    Identical fingerprints are collapsed first, so a large exact-duplicate group costs one
    node, not a quadratic number of candidates: every pair of *distinct* fingerprints within
    the distance comes back once (as the first row of each), and every other row of a
    fingerprint is linked to that fingerprint's first row at distance 0. The connected
    components are exactly those of the full "within max_distance" graph.
    """
    fps = np.asarray(fps, dtype=U64)
    uniq, first, inv = np.unique(fps, return_index=True, return_inverse=True)
    ui, uj = _close_pairs(uniq, block_masks(num_blocks, max_distance), max_distance)
    dist = hamming(uniq[ui], uniq[uj])
    # expand unique fingerprints back to rows: members of a fingerprint pair up with the
    # other fingerprint's first row, and with their own first row at distance 0
    rows = np.arange(len(fps), dtype=np.int64)
    rep = first[inv]
    dup = rows != rep
    i = np.concatenate([first[ui], rep[dup]])
    j = np.concatenate([first[uj], rows[dup]])
    d = np.concatenate([dist, np.zeros(int(dup.sum()), dtype=np.int64)])
    return np.minimum(i, j), np.maximum(i, j), d


class SimHashIndex:
    """Block tables of a small set of fingerprints, queried with batches of others."""

    def __init__(self, fps: np.ndarray, valid: np.ndarray, cfg: SimHashConfig = SimHashConfig()):
        self.cfg = cfg
        self.fps = np.asarray(fps, dtype=U64)
        self.rows = np.flatnonzero(valid).astype(np.int64)
        self.masks = block_masks(cfg.num_blocks, cfg.max_distance)
        self.index = BucketIndex(_columns(self.fps[self.rows], self.masks), self.rows)

    def query(self, fps: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, indexed row, distance) for every pair within max_distance."""
        qrows = np.flatnonzero(valid)
        q, i = self.index.query(_columns(np.asarray(fps, dtype=U64)[qrows], self.masks))
        q = qrows[q]
        dist = hamming(fps[q], self.fps[i])
        ok = dist <= self.cfg.max_distance
        return q[ok], i[ok], dist[ok]
