"""Text normalisation, vectorised over a batch of texts.

A batch of texts is kept the way Arrow keeps a string column: one UTF-8 byte buffer plus
offsets. Normalisation is Arrow's NFKC and lowercase kernels, then one numpy pass over the
bytes (punctuation and whitespace to single spaces, format characters dropped, rows
trimmed). Words are then separated by exactly one ASCII space (`SPACE`), so a word n-gram
is a contiguous byte span of the buffer (shingles.py).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import ranges

SPACE = 32


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
    return np.delete(buf, idx), _shrink(offsets, idx)


def _shrink(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Row offsets once the bytes at sorted positions idx are removed."""
    if len(idx) == 0:
        return offsets
    rows = np.searchsorted(offsets, idx, "right") - 1
    shrink = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(offsets) - 1), out=shrink[1:])
    return offsets - shrink


def _clean_bytes(buf: np.ndarray, offsets: np.ndarray, strip_punct: bool):
    """Punctuation/whitespace -> one ASCII space, format chars dropped, rows trimmed.

    Works on the UTF-8 bytes directly: ASCII through a 256-entry byte map, other characters
    by decoding the code point at each lead byte (only those) and looking its class up.
    """
    table = _char_classes(strip_punct)
    byte_map = np.arange(256, dtype=np.uint8)
    byte_map[:128][table[:128] == _TO_SPACE] = SPACE
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
        out[lead[spaced]] = SPACE
        drop = np.sort(np.concatenate([ranges(lead[spaced] + 1, size[spaced] - 1),
                                       ranges(lead[gone], size[gone])]))
        out, offsets = _drop_bytes(out, offsets, drop)
    # collapse space runs and drop leading spaces; a row ending in spaces after some other
    # byte keeps the first space of that run, which is its trailing space: drop it too
    space = out == SPACE
    drop = np.zeros(len(out), dtype=bool)
    np.logical_and(space[1:], space[:-1], out=drop[1:])
    starts = offsets[:-1][offsets[:-1] < offsets[1:]]
    drop[starts] |= space[starts]
    row = np.flatnonzero(offsets[1:] > offsets[:-1])
    row = row[space[offsets[1:][row] - 1]]
    first, run = offsets[:-1][row], _last_run_starts(space, offsets[:-1][row], offsets[1:][row])
    drop[run[run > first]] = True
    idx = np.flatnonzero(drop)
    return out[np.logical_not(drop, out=drop)], _shrink(offsets, idx)


def _last_run_starts(space: np.ndarray, a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Start of the final run of spaces of rows [a, e) that end with a space: a few steps
    back for all rows at once, then row by row for the few with longer runs."""
    p = e - 1
    for _ in range(8):
        back = (p > a) & space[p - 1]
        if not back.any():
            return p
        p -= back
    for k in np.flatnonzero((p > a) & space[p - 1]):
        other = np.flatnonzero(~space[a[k] : p[k]])
        p[k] = a[k] + (other[-1] + 1 if len(other) else 0)
    return p


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
    if cfg.casefold and pc.all(pc.string_is_ascii(arr)).as_py() is not False:
        arr = pc.ascii_lower(arr)  # the same as utf8_lower on ASCII, with no ß or ς to fold
    elif cfg.casefold:
        arr = pc.replace_substring(pc.replace_substring(pc.utf8_lower(arr), "ß", "ss"), "ς", "σ")
    buf, offsets = _arrow_bytes(arr)
    if nulls.any():  # Arrow allows bytes behind a null slot: make null rows empty
        lens = np.where(nulls, np.diff(offsets), 0)
        buf, offsets = _drop_bytes(buf, offsets, ranges(offsets[:-1], lens))
    buf, offsets = _clean_bytes(buf, offsets, cfg.strip_punct)
    return buf, offsets, nulls


def normalize(texts, cfg: NormalizeConfig = NormalizeConfig()) -> pa.Array:
    """Normalised copy of `texts` (nulls stay null): words separated by single spaces."""
    return string_array(*normalize_arrays(texts, cfg))


def string_array(buf: np.ndarray, offsets: np.ndarray, nulls: np.ndarray) -> pa.Array:
    """The large_string array of `normalize_arrays`' output (nulls stay null)."""
    validity = pa.array(~nulls).buffers()[1] if nulls.any() else None
    return pa.LargeStringArray.from_buffers(
        len(nulls), pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(buf), validity,
        int(nulls.sum()),
    )
