"""Shingles: texts cut into word or character n-grams and hashed, vectorised over a batch.

Texts of a batch are normalised into one byte buffer + offsets (`TextBatch`, textbatch.py),
cut into units (words, or characters) and n-grams of units, and the n-grams hashed
(hashing.py). Everything works on arrays of spans; no Python loop runs per
text or per shingle (except the optional sha1 hash, which is datasketch's).

Row status: ``"null"`` (missing text), ``"empty"`` (nothing left after normalisation) or
``"ok"``. Null and empty rows have no shingles; later stages skip them instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass

import numpy as np

from .hashing import (
    LEN_SALT,
    U64,
    fmix64,
    fmix64_inplace,
    hash_spans_sha1,
    poly_spans,
    poly_windows,
    ranges,
)
from .textbatch import EMPTY as EMPTY  # re-exported: callers import these from here
from .textbatch import NULL as NULL
from .textbatch import OK as OK
from .textbatch import TextBatch as TextBatch
from .textbatch import Units as Units


@dataclass
class ShingleConfig:
    """Which shingles a method uses.

    ``unit="word"`` cuts word n-grams; a text that has (almost) no spaces, such as Chinese or
    Japanese, falls back to character ``char_n``-grams: a text does when its byte length is
    more than ``fallback_bytes_per_word`` times its word count (English runs at ~6 bytes per
    word, a CJK character is 3 bytes). A text with fewer than n units is one shingle.
    """

    unit: str = "word"  # word | char
    n: int = 3
    char_n: int = 5
    fallback_bytes_per_word: float = 16.0
    hash: str = "poly64"  # poly64 | sha1

    def __post_init__(self) -> None:
        if self.unit not in ("word", "char"):
            raise ValueError(f"shingles.unit={self.unit!r}: use 'word' or 'char'")
        if self.hash not in ("poly64", "sha1"):
            raise ValueError(f"shingles.hash={self.hash!r}: use 'poly64' or 'sha1'")
        if self.n < 1 or self.char_n < 1:
            raise ValueError(f"shingle sizes must be >= 1, got n={self.n}, char_n={self.char_n}")


# ----------------------------------------------------------------------------- shingles


@dataclass
class Shingles:
    """Per-text shingle hashes in CSR form: text i owns hashes[offsets[i]:offsets[i+1]]."""

    offsets: np.ndarray  # int64, len = texts + 1
    hashes: np.ndarray  # uint64

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1, dtype=np.int64), self.counts)

    def take(self, docs: np.ndarray) -> Shingles:
        """The shingles of the texts `docs` (indices), in that order."""
        docs = np.asarray(docs, dtype=np.int64)
        if len(docs) == len(self.offsets) - 1 and np.array_equal(docs, np.arange(len(docs))):
            return self  # all texts in order (e.g. no two rows alike): nothing to copy
        counts = self.counts[docs]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Shingles(offsets, self.hashes[ranges(self.offsets[docs], counts)])


def _ngram_offsets(units: Units, n: int) -> np.ndarray:
    """Shingle offsets of `ngrams`: max(units - n + 1, 1) shingles per text with units."""
    nu = np.diff(units.doc_offsets)
    count = np.where(nu > 0, np.maximum(nu - n + 1, 1), 0)
    offsets = np.zeros(len(nu) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    return offsets


def ngrams(units: Units, n: int, hash_kind: str = "poly64", mix: bool = True) -> Shingles:
    """Unit n-grams of every text; a text with fewer than n units is one shorter shingle.

    poly64: the n-gram at unit k is sum_j u_{k+j} X^j over the unit hashes u (`poly_windows`,
    or `poly_spans` for the shorter shingles), plus its length, mixed by fmix64 (a
    bijection: ``mix=False`` skips it where only equality matters).
    """
    offsets = _ngram_offsets(units, n)
    if hash_kind == "sha1":
        uo = units.doc_offsets
        nu = np.diff(uo)
        k = ranges(uo[:-1], np.diff(offsets))
        m = np.repeat(np.minimum(nu, n), np.diff(offsets))
        return Shingles(offsets, hash_spans_sha1(units.buf, units.starts[k], units.ends[k + m - 1]))
    out = np.empty(int(offsets[-1]), dtype=U64)
    for pos, got in ngram_chunks(units, n, offsets, mix):
        out[pos : pos + len(got)] = got
    return Shingles(offsets, out)


_NGRAM_CHUNK = 1 << 16  # units per piece of `ngram_chunks`: its arrays stay in cache


def ngram_chunks(units: Units, n: int, offsets: np.ndarray,
                 mix: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """poly64 hashes of `ngrams` piece by piece, in order: (position of the piece's first
    shingle, hashes), each piece from at most _NGRAM_CHUNK units, so a caller that reduces
    them on the fly (SimHash) never holds them all, nor all the unit hashes (`hashes_at`).

    Every unit of a text but its last n - 1 starts an n-gram, hashed by Horner's rule over
    shifted slices (`poly_windows`); a text of 1..n-1 units is one shorter shingle, hashed
    up front. `offsets` are the shingle offsets (`_ngram_offsets`).
    """
    uo = units.doc_offsets
    nu = np.diff(uo)
    start = np.zeros(int(uo[-1]), dtype=bool)
    start[uo[0] :] = True
    tail = np.maximum(uo[1:] - (n - 1), uo[:-1])
    start[ranges(tail, uo[1:] - tail)] = False
    short = np.flatnonzero((nu > 0) & (nu < n))
    start[uo[:-1][short]] = True
    at = offsets[:-1][short]  # where the short texts' shingles go
    if len(short):
        m = nu[short]
        local = np.zeros(len(m) + 1, dtype=np.int64)
        np.cumsum(m, out=local[1:])
        fixed = poly_spans(units.hashes_at(ranges(uo[:-1][short], m)), local[:-1], local[1:])
        fixed += m.astype(U64) * LEN_SALT
        fixed = fmix64(fixed) if mix else fixed
    salt = U64((n * int(LEN_SALT)) & 0xFFFFFFFFFFFFFFFF)
    h = np.empty(min(int(uo[-1]), _NGRAM_CHUNK), dtype=U64)
    tmp = np.empty_like(h)
    pos = 0
    for lo in range(int(uo[0]), int(uo[-1]), _NGRAM_CHUNK):
        hi = min(int(uo[-1]), lo + _NGRAM_CHUNK)
        w = poly_windows(units.hashes_at(slice(lo, hi + n - 1)), n, 0, hi - lo, h[: hi - lo])
        w += salt
        if mix:
            fmix64_inplace(w, tmp[: hi - lo])
        got = w[start[lo:hi]]
        a, b = np.searchsorted(at, [pos, pos + len(got)])
        if b > a:  # short texts: their window above ran past the text
            got[at[a:b] - pos] = fixed[a:b]
        yield pos, got
        pos += len(got)


def _merge(a: Shingles, b: Shingles) -> Shingles:
    """Texts own shingles in a or in b, never both: one CSR with each text's own shingles."""
    ca, cb = a.counts, b.counts
    counts = ca + cb
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    src = np.where(ca > 0, a.offsets[:-1], len(a.hashes) + b.offsets[:-1])
    return Shingles(offsets, np.concatenate([a.hashes, b.hashes])[ranges(src, counts)])


def shingle_chunks(tb: TextBatch, cfg: ShingleConfig = ShingleConfig(), mix: bool = True
                   ) -> tuple[np.ndarray, Iterable[tuple[int, np.ndarray]]]:
    """(offsets, pieces): the shingles of `shingles` as (position, hashes) pieces in order,
    computed piece by piece for poly64 character n-grams (`ngram_chunks`), else in one."""
    key = ("shingles", astuple(cfg), mix)
    if key in tb._cache or cfg.unit != "char" or cfg.hash != "poly64":
        sh = shingles(tb, cfg, mix)
        return sh.offsets, [(0, sh.hashes)]
    units = tb.chars()
    offsets = _ngram_offsets(units, cfg.n)
    return offsets, ngram_chunks(units, cfg.n, offsets, mix)


def shingles(tb: TextBatch, cfg: ShingleConfig = ShingleConfig(), mix: bool = True) -> Shingles:
    """Shingle hashes of every text of the batch (cached per config on the batch).

    mix=False leaves poly64 hashes unmixed (see `ngrams`): enough for set operations and for
    MinHash, which mixes the low 32 bits itself; SimHash needs mixed bits.
    """
    key = ("shingles", astuple(cfg), mix)
    if key not in tb._cache:
        if cfg.unit == "char":
            out = ngrams(tb.chars(), cfg.n, cfg.hash, mix)
        else:
            fallback = tb.char_fallback(cfg.fallback_bytes_per_word)
            out = ngrams(tb.words(fallback), cfg.n, cfg.hash, mix)
            if fallback.any():
                out = _merge(out, ngrams(tb.chars(fallback), cfg.char_n, cfg.hash, mix))
        tb._cache[key] = out
    return tb._cache[key]


_SORT_CELLS = 1 << 22  # matrix cells per sort in `_sort_within`


def _sort_within(sh: Shingles) -> np.ndarray:
    """Each text's hashes sorted ascending, texts in place (what a lexsort by (text, hash)
    gives, ~20x faster): texts of the same power-of-two length class are padded with the
    largest value into a matrix and sorted row by row. The first `count` values of a sorted
    row are the text's own, since the padding is >= every value."""
    out = sh.hashes.copy()
    counts = sh.counts
    multi = np.flatnonzero(counts > 1)
    if not len(multi):
        return out
    length_class = np.frexp((counts[multi] - 1).astype(np.float64))[1]  # bit length of count - 1
    multi = multi[np.argsort(length_class, kind="stable")]
    bounds = np.flatnonzero(np.diff(np.sort(length_class))) + 1
    pad = np.iinfo(out.dtype).max
    for group in np.split(multi, bounds):
        step = max(1, _SORT_CELLS // int(counts[group].max()))
        for a in range(0, len(group), step):
            docs = group[a : a + step]
            cnt = counts[docs]
            if docs[-1] - docs[0] == len(docs) - 1:  # consecutive texts: one slice
                idx = slice(sh.offsets[docs[0]], sh.offsets[docs[-1] + 1])
            else:
                idx = ranges(sh.offsets[docs], cnt)
            mask = np.arange(int(cnt.max())) < cnt[:, None]
            mat = np.full(mask.shape, pad, dtype=out.dtype)
            mat[mask] = out[idx]
            mat.sort(axis=1)
            out[idx] = mat[mask]
    return out


def unique_sets(sh: Shingles) -> Shingles:
    """Per-text sorted, de-duplicated shingle hashes (the sets Jaccard is defined on)."""
    h = _sort_within(sh)
    keep = np.ones(len(h), dtype=bool)
    if len(h):
        np.not_equal(h[1:], h[:-1], out=keep[1:])
        keep[sh.offsets[:-1][sh.counts > 0]] = True  # a text's first hash is always its own
    kept = np.zeros(len(h) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    return Shingles(kept[sh.offsets], h[keep])


def intersection_sizes(a: Shingles, b: Shingles, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """|A[ia[p]] & B[ib[p]]| for every pair p; a and b must come from `unique_sets`.

    Vectorised: hashes of the texts involved get dense ids, B's (text, id) keys are sorted
    by construction, and every element of A's side is looked up with one searchsorted.
    """
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    if len(ia) == 0:
        return np.zeros(0, dtype=np.int64)
    ua, ra = np.unique(ia, return_inverse=True)
    ub, rb = np.unique(ib, return_inverse=True)
    sa, sb = a.take(ua), b.take(ub)
    vocab, inv = np.unique(np.concatenate([sa.hashes, sb.hashes]), return_inverse=True)
    size = np.int64(max(len(vocab), 1))
    ida, idb = inv[: len(sa.hashes)], inv[len(sa.hashes) :]
    keys_b = sb.doc_ids() * size + idb
    lens = sa.counts[ra]
    elems = ranges(sa.offsets[:-1][ra], lens)
    queries = np.repeat(rb.astype(np.int64), lens) * size + ida[elems]
    pos = np.searchsorted(keys_b, queries)
    hit = keys_b[np.minimum(pos, len(keys_b) - 1)] == queries if len(keys_b) else pos < 0
    owner = np.repeat(np.arange(len(ia), dtype=np.int64), lens)
    return np.bincount(owner[hit], minlength=len(ia)).astype(np.int64)
