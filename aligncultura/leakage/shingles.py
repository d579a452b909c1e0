"""Normalise texts, cut them into shingles and hash the shingles, vectorised over a batch.

A batch of texts is kept the way Arrow keeps a string column: one UTF-8 byte buffer plus
offsets (`TextBatch`). Normalisation is Arrow's NFKC and lowercase kernels, then one numpy
pass over the bytes (punctuation and whitespace to single spaces, format characters
dropped, rows trimmed). Words are then separated by exactly one ASCII space, so a word
n-gram is a contiguous byte span of the buffer, the same bytes as
``" ".join(words[i:i + n]).encode()``. Everything works on arrays of spans; no Python loop
runs per text or per shingle (except the optional sha1 hash, which is datasketch's).

Shingle hashes (`ShingleConfig.hash`):
- ``"poly64"`` (default): each unit (word or character) is hashed once, as a polynomial over
  its bytes mod 2^64 (prefix sums, see `poly_spans`), mixed with MurmurHash3's fmix64; an
  n-gram is the same polynomial over its n unit hashes, mixed again. A few numpy passes per
  byte and per shingle, and a word's hash is shared by every shingle size that contains it.
  Not collision-resistant against an adversary; fine for telling texts apart.
- ``"sha1"``: the first 8 bytes of SHA-1 of the shingle's bytes, little-endian. Its low
  32 bits are exactly datasketch's ``sha1_hash32``, so MinHash signatures equal
  datasketch's bit for bit (see minhash.py). About 0.3-1 us per shingle in CPython.

Row status: ``"null"`` (missing text), ``"empty"`` (nothing left after normalisation) or
``"ok"``. Null and empty rows have no shingles; later stages skip them instead of failing.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import astuple, dataclass, field
from operator import methodcaller

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OK, NULL, EMPTY = "ok", "null", "empty"

U64 = np.uint64
_FMIX1 = U64(0xFF51AFD7ED558CCD)
_FMIX2 = U64(0xC4CEB9FE1A85EC53)
_BASE = 0x9E3779B97F4A7C15  # odd: its powers are invertible mod 2^64
_LEN_SALT = U64(0x2545F4914F6CDD1D)
_CHUNK = 1 << 18  # values per prefix-sum window: bounds memory for 10+ MB texts
_SPACE = 32


@dataclass
class NormalizeConfig:
    """How texts are normalised before shingling (all on by default).

    Defaults and why: near-duplicate detection should not care about Unicode compatibility
    forms (full-width letters, ligatures), case, punctuation or spacing, which are the
    cheapest edits and carry no content; the lm-eval decontamination n-grams are computed
    on lowercased, punctuation-free text too.
    """

    nfkc: bool = True  # Unicode NFKC (full-width -> ASCII, ligatures split, NBSP -> space)
    casefold: bool = True  # Arrow's Unicode lowercase, plus the casefold-only folds ß->ss, ς->σ
    strip_punct: bool = True  # Unicode punctuation and symbols (\p{P}, \p{S}) become spaces


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


# ----------------------------------------------------------------------------- numpy helpers


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that avalanches), on a copy of x."""
    x = np.array(x, dtype=U64, copy=True)
    t = np.empty_like(x)
    for mult in (_FMIX1, _FMIX2):
        np.right_shift(x, U64(33), out=t)
        x ^= t
        x *= mult
    np.right_shift(x, U64(33), out=t)
    x ^= t
    return x


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l), without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    step = np.ones(int(ends[-1]), dtype=np.int64)
    step[0] = starts[0]
    step[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(step)


def _powers(base: int, n: int) -> np.ndarray:
    out = np.full(max(n, 1), base, dtype=U64)
    out[0] = 1
    return np.cumprod(out, dtype=U64)  # wraps mod 2^64, which is the intent


_POW = (_powers(_BASE, _CHUNK + 1), _powers(pow(_BASE, -1, 1 << 64), _CHUNK + 1))


def _pow_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(X^i, X^-i) mod 2^64 for i <= n; grows only for a single span longer than _CHUNK."""
    if n + 1 <= len(_POW[0]):
        return _POW
    return _powers(_BASE, n + 1), _powers(pow(_BASE, -1, 1 << 64), n + 1)


def poly_spans(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """sum_j values[s + j] * X^j mod 2^64 for every span [s, e) (spans sorted by start).

    With prefix sums P[i] = sum_{j<i} values[j] X^j, a span is (P[e] - P[s]) * X^-s: three
    streaming passes over the values and a few gathers per span, whatever the span lengths.
    Done in windows of about _CHUNK values so memory stays bounded on 10+ MB texts.
    """
    out = np.empty(len(starts), dtype=U64)
    if len(starts) == 0:
        return out
    reach = np.maximum.accumulate(ends)
    lo = 0
    while lo < len(starts):
        base = int(starts[lo])
        hi = max(int(np.searchsorted(reach, base + _CHUNK, "right")), lo + 1)
        width = int(reach[hi - 1]) - base
        pw, inv = _pow_tables(width)
        pre = np.zeros(width + 1, dtype=U64)
        np.cumsum(np.multiply(values[base : base + width], pw[:width], dtype=U64), out=pre[1:])
        s = starts[lo:hi] - base
        h = pre[ends[lo:hi] - base]
        h -= pre[s]
        h *= inv[s]
        out[lo:hi] = h
        lo = hi
    return out


# ----------------------------------------------------------------------------- normalisation


def as_string_array(texts) -> pa.Array:
    """A pyarrow string array from an Arrow array/chunked array, numpy array or list."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    if not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), type=pa.string())
    if pa.types.is_dictionary(texts.type):
        texts = texts.dictionary_decode()
    if pa.types.is_null(texts.type):
        texts = texts.cast(pa.string())
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise TypeError(f"texts must be a string column, got Arrow type {texts.type}")
    return texts


_KEEP, _TO_SPACE, _DROP = 0, 1, 2
_PUNCT_TABLE: dict[bool, np.ndarray] = {}


def _char_classes(strip_punct: bool) -> np.ndarray:
    """Action per code point < 0x20000 (BMP + plane 1; above: kept), built once (~0.3 s).

    Space: separators (Z*) and controls (Cc), plus punctuation (P*) and symbols (S*) when
    stripping punctuation. Drop: format characters (Cf: soft hyphen, zero-width joiners).
    """
    if strip_punct not in _PUNCT_TABLE:
        space = ("Z", "Cc", "P", "S") if strip_punct else ("Z", "Cc")
        table = np.zeros(0x20000, dtype=np.uint8)
        for cp in range(0x20000):
            cat = unicodedata.category(chr(cp))
            if cat == "Cf":
                table[cp] = _DROP
            elif cat.startswith(space) or cat == "Cc":
                table[cp] = _TO_SPACE
        _PUNCT_TABLE[strip_punct] = table
    return _PUNCT_TABLE[strip_punct]


def _drop_bytes(buf: np.ndarray, offsets: np.ndarray, idx: np.ndarray):
    """Remove the bytes at sorted positions idx; offsets shrink by the drops in each row."""
    if len(idx) == 0:
        return buf, offsets
    rows = np.searchsorted(offsets, idx, "right") - 1
    shrink = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(offsets) - 1), out=shrink[1:])
    return np.delete(buf, idx), offsets - shrink


def _clean_bytes(buf: np.ndarray, offsets: np.ndarray, strip_punct: bool):
    """Punctuation/whitespace -> one ASCII space, format chars dropped, rows trimmed.

    Works on the UTF-8 bytes directly: ASCII through a 256-entry byte map, other characters
    by decoding the code point at each lead byte (only those) and looking its class up.
    """
    table = _char_classes(strip_punct)
    byte_map = np.arange(256, dtype=np.uint8)
    byte_map[:128][table[:128] == _TO_SPACE] = _SPACE
    out = byte_map[buf]
    lead = np.flatnonzero(buf >= 0xC0)
    if len(lead):
        b0 = buf[lead].astype(np.int32)
        size = 2 + (b0 >= 0xE0) + (b0 >= 0xF0)
        last = len(buf) - 1
        cp = ((b0 & np.where(size == 2, 0x1F, 0x0F)) << 6) | (buf[np.minimum(lead + 1, last)] & 0x3F)
        for k in (2, 3):  # third and fourth bytes, only for the characters that have them
            more = np.flatnonzero(size > k)
            if len(more):
                cp[more] = (cp[more] << 6) | (buf[np.minimum(lead[more] + k, last)] & 0x3F)
        action = np.where(cp < len(table), table[np.minimum(cp, len(table) - 1)], _KEEP)
        spaced, gone = action == _TO_SPACE, action == _DROP
        out[lead[spaced]] = _SPACE
        drop = np.sort(np.concatenate([ranges(lead[spaced] + 1, size[spaced] - 1),
                                       ranges(lead[gone], size[gone])]))
        out, offsets = _drop_bytes(out, offsets, drop)
    # collapse space runs and drop leading spaces, then drop the (single) trailing space
    space = out == _SPACE
    drop = np.zeros(len(out), dtype=bool)
    np.logical_and(space[1:], space[:-1], out=drop[1:])
    starts = offsets[:-1][offsets[:-1] < offsets[1:]]
    drop[starts] |= space[starts]
    out, offsets = _drop_bytes(out, offsets, np.flatnonzero(drop))
    ends = offsets[1:][offsets[1:] > offsets[:-1]] - 1
    return _drop_bytes(out, offsets, ends[out[ends] == _SPACE])


def _arrow_bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data bytes, int64 offsets starting at 0) of a string array, zero-copy where possible."""
    arr = arr.cast(pa.large_string())
    n = len(arr)
    bufs = arr.buffers()
    if n == 0 or bufs[1] is None:
        return np.zeros(0, np.uint8), np.zeros(n + 1, np.int64)
    offs = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    base, end = int(offs[0]), int(offs[-1])
    data = np.frombuffer(bufs[2], dtype=np.uint8)[base:end] if end > base else np.zeros(0, np.uint8)
    return data, offs - base


def normalize_arrays(texts, cfg: NormalizeConfig = NormalizeConfig()):
    """(bytes, offsets, null mask) of the normalised texts; nulls come out as empty rows."""
    arr = as_string_array(texts)
    nulls = np.asarray(arr.is_null()) if arr.null_count else np.zeros(len(arr), dtype=bool)
    if cfg.nfkc:
        arr = pc.utf8_normalize(arr, form="NFKC")
    if cfg.casefold:
        arr = pc.replace_substring(pc.replace_substring(pc.utf8_lower(arr), "ß", "ss"), "ς", "σ")
    buf, offsets = _arrow_bytes(arr)
    if nulls.any():  # Arrow allows bytes behind a null slot: make null rows empty
        lens = np.where(nulls, np.diff(offsets), 0)
        buf, offsets = _drop_bytes(buf, offsets, ranges(offsets[:-1], lens))
    buf, offsets = _clean_bytes(buf, offsets, cfg.strip_punct)
    return buf, offsets, nulls


def normalize(texts, cfg: NormalizeConfig = NormalizeConfig()) -> pa.Array:
    """Normalised copy of `texts` (nulls stay null): words separated by single spaces."""
    buf, offsets, nulls = normalize_arrays(texts, cfg)
    validity = pa.array(~nulls).buffers()[1] if nulls.any() else None
    return pa.LargeStringArray.from_buffers(
        len(nulls), pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(buf), validity,
        int(nulls.sum()),
    )


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


_ASCII_HASH: np.ndarray | None = None


def hash_chars(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`hash_spans_poly` of single characters, with a 128-entry table for ASCII ones."""
    global _ASCII_HASH
    if _ASCII_HASH is None:
        codes = np.arange(128, dtype=np.int64)
        _ASCII_HASH = hash_spans_poly(codes.astype(np.uint8), codes, codes + 1)
    first = buf[starts]
    if len(first) and int(first.max()) < 0x80:
        return _ASCII_HASH[first]
    out = np.empty(len(starts), dtype=U64)
    ascii_ = first < 0x80
    out[ascii_] = _ASCII_HASH[first[ascii_]]
    wide = np.flatnonzero(~ascii_)
    out[wide] = hash_spans_poly(buf, starts[wide], ends[wide])
    return out


def hash_spans_poly(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """poly64 hash of buf[s:e] for every span: polynomial over the bytes, length, fmix64."""
    h = poly_spans(buf, starts, ends)
    h += (ends - starts).astype(U64) * _LEN_SALT
    return fmix64(h)


def hash_spans_sha1(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """First 8 bytes of SHA-1 of buf[s:e], little-endian (low 32 bits = datasketch sha1_hash32)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=U64)
    data = buf.tobytes()
    pieces = map(data.__getitem__, map(slice, starts.tolist(), ends.tolist()))
    digests = b"".join(map(methodcaller("digest"), map(hashlib.sha1, pieces)))
    mat = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)[:, :8]
    return np.ascontiguousarray(mat).view("<u8").ravel().astype(U64)


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
            nonspace = buf != _SPACE
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
    out += m.astype(U64) * _LEN_SALT
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
