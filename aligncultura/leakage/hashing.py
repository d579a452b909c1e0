"""Hashes of byte spans, vectorised: MurmurHash3's fmix64, the poly64 polynomial hash, sha1.

Shingle hashes (`ShingleConfig.hash`, shingles.py):
- ``"poly64"`` (default): each unit (word or character) is hashed once, as a polynomial over
  its bytes mod 2^64 (prefix sums, see `poly_spans`), mixed with MurmurHash3's fmix64; an
  n-gram is the same polynomial over its n unit hashes, mixed again. A few numpy passes per
  byte and per shingle, and a word's hash is shared by every shingle size that contains it.
  Not collision-resistant against an adversary; fine for telling texts apart.
- ``"sha1"``: the first 8 bytes of SHA-1 of the shingle's bytes, little-endian. Its low
  32 bits are exactly datasketch's ``sha1_hash32``, so MinHash signatures equal
  datasketch's bit for bit (see minhash.py). About 0.3-1 us per shingle in CPython.

Also `ranges`, the span-to-index helper every stage uses.
"""

from __future__ import annotations

import hashlib
from operator import methodcaller

import numpy as np

U64 = np.uint64
_FMIX1 = U64(0xFF51AFD7ED558CCD)
_FMIX2 = U64(0xC4CEB9FE1A85EC53)
_BASE = 0x9E3779B97F4A7C15  # odd: its powers are invertible mod 2^64
_X = U64(_BASE)
LEN_SALT = U64(0x2545F4914F6CDD1D)
_CHUNK = 1 << 16  # values per prefix-sum window: stays in cache, bounds memory for 10+ MB texts


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that avalanches), on a copy of x."""
    x = np.array(x, dtype=U64, copy=True)
    return fmix64_inplace(x, np.empty_like(x))


def fmix64_inplace(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """`fmix64` of the uint64 array x in place, with t (same length) as scratch space."""
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
    return np.cumsum(step, out=step)


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
    scratch = np.empty(_CHUNK + 1, dtype=U64)  # one window's prefix sums, reused
    lo = 0
    while lo < len(starts):
        base = int(starts[lo])
        hi = max(int(np.searchsorted(reach, base + _CHUNK, "right")), lo + 1)
        width = int(reach[hi - 1]) - base
        pw, inv = _pow_tables(width)
        pre = scratch[: width + 1] if width < len(scratch) else np.empty(width + 1, dtype=U64)
        pre[0] = 0
        np.multiply(values[base : base + width], pw[:width], out=pre[1:], dtype=U64)
        np.cumsum(pre[1:], out=pre[1:])
        s = starts[lo:hi] - base
        h = out[lo:hi]
        np.take(pre, ends[lo:hi] - base, out=h)
        h -= pre[s]
        h *= inv[s]
        lo = hi
    return out


def poly_windows(values: np.ndarray, n: int, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
    """`poly_spans` of the spans [g, g + n) for g in [lo, hi), into out (length hi - lo).

    Horner's rule over n shifted slices: (..(v[g+n-1] X + v[g+n-2]) X + ..) X + v[g], the
    same sum mod 2^64 as the prefix-sum form, bit for bit, in 2n cache-friendly passes.
    Values past the end of `values` count as 0 (callers drop those windows).
    """
    seg = values[lo + n - 1 : hi + n - 1]
    out[: len(seg)] = seg
    out[len(seg) :] = 0
    for j in range(n - 2, -1, -1):
        out *= _X
        seg = values[lo + j : hi + j]
        out[: len(seg)] += seg
    return out


_ASCII_HASH: np.ndarray | None = None


def hash_ascii(codes: np.ndarray) -> np.ndarray:
    """`hash_spans_poly` of one-byte characters, given their bytes (all < 0x80)."""
    global _ASCII_HASH
    if _ASCII_HASH is None:
        ascii_ = np.arange(128, dtype=np.int64)
        _ASCII_HASH = hash_spans_poly(ascii_.astype(np.uint8), ascii_, ascii_ + 1)
    return _ASCII_HASH[codes]


def hash_chars(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`hash_spans_poly` of single characters, with a 128-entry table for ASCII ones."""
    first = buf[starts]
    if len(first) and int(first.max()) < 0x80:
        return hash_ascii(first)
    out = np.empty(len(starts), dtype=U64)
    ascii_ = first < 0x80
    out[ascii_] = hash_ascii(first[ascii_])
    wide = np.flatnonzero(~ascii_)
    out[wide] = hash_spans_poly(buf, starts[wide], ends[wide])
    return out


def hash_spans_poly(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """poly64 hash of buf[s:e] for every span: polynomial over the bytes, length, fmix64."""
    h = poly_spans(buf, starts, ends)
    h += (ends - starts).astype(U64) * LEN_SALT
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


def docs_in_chunk(offsets: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents of a flat array cut by `offsets` that have elements in [lo, hi), and
    where each one's elements start in that chunk (relative to lo); empty ones left out."""
    d0 = int(np.searchsorted(offsets, lo, "right")) - 1
    d1 = int(np.searchsorted(offsets, hi, "left"))
    docs = np.arange(d0, d1)
    seg = np.maximum(offsets[d0:d1], lo) - lo
    seg_end = np.minimum(offsets[d0 + 1 : d1 + 1], hi) - lo
    live = seg_end > seg
    return docs[live], seg[live]
