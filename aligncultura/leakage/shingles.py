"""Shingles: texts cut into word or character n-grams and hashed, vectorised over a batch.

Texts of a batch are normalised into one byte buffer + offsets (`TextBatch`,
normalization.py), cut into units (words, or characters) and n-grams of units, and the
n-grams hashed (hashing.py). Everything works on arrays of spans; no Python loop runs per
text or per shingle (except the optional sha1 hash, which is datasketch's).

Row status: ``"null"`` (missing text), ``"empty"`` (nothing left after normalisation) or
``"ok"``. Null and empty rows have no shingles; later stages skip them instead of failing.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field

import numpy as np

from .hashing import (
    LEN_SALT,
    U64,
    fmix64,
    hash_chars,
    hash_spans_poly,
    hash_spans_sha1,
    poly_spans,
    ranges,
)
from .normalization import SPACE, NormalizeConfig, normalize_arrays

OK, NULL, EMPTY = "ok", "null", "empty"


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


# ----------------------------------------------------------------------------- units


@dataclass
class Units:
    """Words or characters of some texts of a batch: byte spans into the batch buffer."""

    buf: np.ndarray
    starts: np.ndarray  # int64 byte offsets, ascending
    ends: np.ndarray
    doc_offsets: np.ndarray  # int64, len = texts + 1: units of text i are [o[i], o[i+1])
    _hashes: np.ndarray | None = field(default=None, repr=False)
    chars: bool = False  # every unit is one UTF-8 character (1-4 bytes)

    @property
    def hashes(self) -> np.ndarray:
        """64-bit hash of each unit's bytes (polynomial mod 2^64, then fmix64)."""
        if self._hashes is None:
            if self.chars:
                self._hashes = hash_chars(self.buf, self.starts, self.ends)
            else:
                self._hashes = hash_spans_poly(self.buf, self.starts, self.ends)
        return self._hashes


class TextBatch:
    """A batch of normalised texts as one byte buffer + offsets, with per-row status."""

    def __init__(self, texts, norm: NormalizeConfig = NormalizeConfig()):
        self.buf, self.offsets, nulls = normalize_arrays(texts, norm)
        n = self.n = len(nulls)
        lengths = np.diff(self.offsets)
        status = np.full(n, OK, dtype=object)
        status[lengths == 0] = EMPTY
        status[nulls] = NULL
        self.status = status
        self._cache: dict = {}

    @property
    def ok(self) -> np.ndarray:
        return self.status == OK

    def release(self) -> None:
        """Forget cached shingles and characters (keep the words, shared by most methods)."""
        self._cache = {k: v for k, v in self._cache.items() if k == "words"}

    def char_fallback(self, bytes_per_word: float) -> np.ndarray:
        """Texts with (almost) no spaces: more than `bytes_per_word` bytes per word."""
        nwords = np.diff(self.words().doc_offsets)
        return (nwords > 0) & (np.diff(self.offsets) > bytes_per_word * nwords)

    def words(self, exclude: np.ndarray | None = None) -> Units:
        """Space-separated words of every text (none for the texts in the mask `exclude`)."""
        if "words" not in self._cache:
            buf, offs = self.buf, self.offsets
            nonspace = buf != SPACE
            first = np.zeros(len(buf), dtype=bool)
            last = np.zeros(len(buf), dtype=bool)
            nz = offs[1:] > offs[:-1]
            first[offs[:-1][nz]] = True
            last[offs[1:][nz] - 1] = True
            first[1:] |= ~nonspace[:-1]
            last[:-1] |= ~nonspace[1:]
            starts = np.flatnonzero(first & nonspace)
            ends = np.flatnonzero(last & nonspace) + 1
            self._cache["words"] = Units(buf, starts, ends, np.searchsorted(starts, offs))
        words = self._cache["words"]
        if exclude is None or not exclude.any():
            return words
        key = ("words", exclude.tobytes())
        if key not in self._cache:
            nwords = np.where(exclude, 0, np.diff(words.doc_offsets))
            offsets = np.zeros(len(nwords) + 1, dtype=np.int64)
            np.cumsum(nwords, out=offsets[1:])
            sel = ranges(words.doc_offsets[:-1], nwords)
            self._cache[key] = Units(self.buf, words.starts[sel], words.ends[sel], offsets,
                                     None if words._hashes is None else words._hashes[sel])
        return self._cache[key]

    def chars(self, docs: np.ndarray | None = None) -> Units:
        """Characters (UTF-8 code points, spaces included) of the texts in mask `docs` (or all)."""
        key = ("chars", None if docs is None else docs.tobytes())
        if key not in self._cache:
            lens = np.diff(self.offsets)
            if docs is None:
                starts = np.flatnonzero((self.buf & 0xC0) != 0x80)
            else:
                lens = np.where(docs, lens, 0)
                idx = ranges(self.offsets[:-1], lens)
                starts = idx[(self.buf[idx] & 0xC0) != 0x80]
            ends = np.empty_like(starts)
            ends[:-1] = starts[1:]
            doc_end = self.offsets[1:]
            # a text's last character ends at the text's end, not at the next text's start
            last = np.searchsorted(starts, doc_end) - 1
            owns = (last >= 0) & (lens > 0)
            ends[last[owns]] = doc_end[owns]
            offsets = np.searchsorted(starts, self.offsets)
            self._cache[key] = Units(self.buf, starts, ends, offsets, chars=True)
        return self._cache[key]


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
        counts = self.counts[docs]
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Shingles(offsets, self.hashes[ranges(self.offsets[docs], counts)])


def ngrams(units: Units, n: int, hash_kind: str = "poly64", mix: bool = True) -> Shingles:
    """Unit n-grams of every text; a text with fewer than n units is one shorter shingle.

    poly64: the n-gram at unit k is sum_j u_{k+j} X^j over the unit hashes u (`poly_spans`:
    a few operations per shingle whatever n is), plus its length, mixed by fmix64 (a
    bijection: ``mix=False`` skips it where only equality matters).
    """
    uo = units.doc_offsets
    nu = np.diff(uo)
    count = np.where(nu > 0, np.maximum(nu - n + 1, 1), 0)
    offsets = np.zeros(len(nu) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    k = ranges(uo[:-1], count)
    m = np.repeat(np.minimum(nu, n), count)
    if hash_kind == "sha1":
        return Shingles(offsets, hash_spans_sha1(units.buf, units.starts[k], units.ends[k + m - 1]))
    out = poly_spans(units.hashes, k, k + m)
    out += m.astype(U64) * LEN_SALT
    return Shingles(offsets, fmix64(out) if mix else out)


def _merge(a: Shingles, b: Shingles) -> Shingles:
    """Texts own shingles in a or in b, never both: one CSR with each text's own shingles."""
    ca, cb = a.counts, b.counts
    counts = ca + cb
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    src = np.where(ca > 0, a.offsets[:-1], len(a.hashes) + b.offsets[:-1])
    return Shingles(offsets, np.concatenate([a.hashes, b.hashes])[ranges(src, counts)])


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


def unique_sets(sh: Shingles) -> Shingles:
    """Per-text sorted, de-duplicated shingle hashes (the sets Jaccard is defined on)."""
    docs = sh.doc_ids()
    order = np.lexsort((sh.hashes, docs))
    h, d = sh.hashes[order], docs[order]
    keep = np.ones(len(h), dtype=bool)
    if len(h):
        keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    counts = np.bincount(d[keep], minlength=len(sh.offsets) - 1)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Shingles(offsets, h[keep])


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
