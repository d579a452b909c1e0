"""A batch of normalised texts (`TextBatch`) and its words or characters (`Units`).

Texts are normalised into one byte buffer + offsets (normalization.py); words and characters
are byte spans into that buffer, hashed once each (hashing.py) and shared by every shingle
size that uses them (shingles.py).

Row status: ``"null"`` (missing text), ``"empty"`` (nothing left after normalisation) or
``"ok"``. Null and empty rows have no units; later stages skip them instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .hashing import hash_ascii, hash_chars, hash_spans_poly, ranges
from .normalization import SPACE, NormalizeConfig, normalize_arrays

OK, NULL, EMPTY = "ok", "null", "empty"
Lazy = np.ndarray | Callable[[], np.ndarray]  # an array, or a function computing it once


class Units:
    """Words or characters of some texts of a batch: byte spans into the batch buffer.

    starts / ends: int64 byte offsets, ascending; doc_offsets: int64, len = texts + 1, the
    units of text i are [o[i], o[i+1]). `chars`: every unit is one UTF-8 character (1-4
    bytes). starts, ends and hashes may be given as functions, called on first use (ASCII
    characters: shingling needs only their hashes, not 2 x 8 bytes of spans per byte).
    `byte_units`: unit k is byte k of buf (an all-ASCII batch's characters).
    """

    def __init__(self, buf: np.ndarray, starts: Lazy, ends: Lazy, doc_offsets: np.ndarray,
                 hashes: Lazy | None = None, chars: bool = False, byte_units: bool = False):
        self.buf = buf
        self._starts, self._ends, self._hashes = starts, ends, hashes
        self.doc_offsets = doc_offsets
        self.chars = chars
        self.byte_units = byte_units

    @property
    def starts(self) -> np.ndarray:
        if callable(self._starts):
            self._starts = self._starts()
        return self._starts

    @property
    def ends(self) -> np.ndarray:
        if callable(self._ends):
            self._ends = self._ends()
        return self._ends

    @property
    def hashes(self) -> np.ndarray:
        """64-bit hash of each unit's bytes (polynomial mod 2^64, then fmix64)."""
        if callable(self._hashes):
            self._hashes = self._hashes()
        if self._hashes is None:
            if self.chars:
                self._hashes = hash_chars(self.buf, self.starts, self.ends)
            else:
                self._hashes = hash_spans_poly(self.buf, self.starts, self.ends)
        return self._hashes

    def hashes_at(self, idx: np.ndarray | slice) -> np.ndarray:
        """hashes[idx] (an index array or a slice), hashing only those units unless all
        hashes are already known: lets n-grams of characters be hashed piece by piece."""
        if isinstance(self._hashes, np.ndarray):
            return self._hashes[idx]
        if self.byte_units:
            return hash_ascii(self.buf[idx])
        if self.chars:
            return hash_chars(self.buf, self.starts[idx], self.ends[idx])
        return self.hashes[idx]


class TextBatch:
    """A batch of normalised texts as one byte buffer + offsets, with per-row status."""

    def __init__(self, texts, norm: NormalizeConfig = NormalizeConfig()):
        self.norm = norm
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

    @classmethod
    def reuse(cls, batch: TextBatch | None, texts, norm: NormalizeConfig) -> TextBatch:
        """`batch` when given (checked against texts and norm), else a new batch of texts:
        lets callers normalise a column once for several functions."""
        if batch is None:
            return cls(texts, norm)
        n = len(texts) if hasattr(texts, "__len__") else batch.n
        if batch.norm != norm or batch.n != n:
            raise ValueError(f"batch of {batch.n} texts normalised with {batch.norm} given for "
                             f"{n} texts with {norm}")
        return batch

    def release(self) -> None:
        """Forget cached shingles and characters (keep the words, shared by most methods)."""
        self._cache = {k: v for k, v in self._cache.items() if k in ("words", "ascii")}

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
        if key not in self._cache and self._ascii():
            self._cache[key] = self._ascii_chars(docs)
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

    def _ascii(self) -> bool:
        if "ascii" not in self._cache:
            self._cache["ascii"] = not len(self.buf) or int(self.buf.max()) < 0x80
        return self._cache["ascii"]

    def _ascii_chars(self, docs: np.ndarray | None) -> Units:
        """`chars` of an all-ASCII batch, where every byte is a character: the same units,
        with spans built only if asked for and hashes by table lookup on the bytes."""
        lens = np.diff(self.offsets) if docs is None else np.where(docs, np.diff(self.offsets), 0)
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        if docs is None:
            units = Units(self.buf, lambda: np.arange(len(self.buf), dtype=np.int64), None,
                          offsets, lambda: hash_ascii(self.buf), chars=True, byte_units=True)
        else:
            units = Units(self.buf, lambda: ranges(self.offsets[:-1], lens), None, offsets,
                          lambda: hash_ascii(self.buf[units.starts]), chars=True)
        units._ends = lambda: units.starts + 1
        return units
