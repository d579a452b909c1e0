"""The data contract as Arrow kernels: which rows of a parsed piece are usable as they stand.

`clean_rows` takes the raw columns of one piece (a JSON-lines chunk, a CSV file, a Parquet
file) and returns the rows it can decide without Python, already in `PROMPT_SCHEMA`, plus the
positions of the others. A row is decided here when its question is plain ASCII with no
control character, no leading, trailing or double space, not empty and within the length
limit (then the stripped text is the text itself and its `content_hash` input is its lower
case), and its id, class id and reference columns have the expected types and values. Every
other row goes to `records.check_record`, which gives the reasons, so a reason never depends on
which path a row took (tests/test_data.py compares the two paths on the same files).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.data import taxonomy
from aligncultura.data.records import MAX_QUESTION_CHARS, Fields

_IDS = list(range(taxonomy.NONE_ID + 1))
_SUB = [taxonomy.subdomain(i) if taxonomy.is_valid_id(i) else None for i in _IDS]
SUBDOMAIN = pa.array([s.name if s else None for s in _SUB], pa.string())
DOMAIN = pa.array([s.domain if s else None for s in _SUB], pa.string())
FORM = pa.array([s.form if s else None for s in _SUB], pa.string())
VALID_ID = np.array([s is not None for s in _SUB])


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(a, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _plain_ascii(col: pa.ChunkedArray) -> np.ndarray:
    """Non-null ASCII text without control characters, double spaces or edge spaces: its
    Python `.strip()` and `.split()` are the identity (records.normalize_question)."""
    ok = _mask(pc.string_is_ascii(col))
    ok &= ~_mask(pc.match_substring_regex(col, r"[\x00-\x1f]|  "))
    ok &= ~_mask(pc.starts_with(col, " ")) & ~_mask(pc.ends_with(col, " "))
    return ok


def _text_column(col: pa.ChunkedArray, n: int) -> np.ndarray:
    if pa.types.is_null(col.type):
        return np.zeros(n, dtype=bool)
    lengths = pc.binary_length(col).to_numpy(zero_copy_only=False)
    ok = _plain_ascii(col)
    ok &= np.nan_to_num(lengths, nan=0) > 0
    ok &= np.nan_to_num(lengths, nan=0) <= MAX_QUESTION_CHARS  # ASCII: bytes == characters
    return ok


def _ids(col: pa.ChunkedArray | None, f: Fields, first_index: int,
         n: int) -> tuple[pa.Array, np.ndarray]:
    """(row_id per row, rows whose id is decided here)."""
    index = pa.array(np.arange(first_index, first_index + n, dtype=np.int64))
    fallback = pc.binary_join_element_wise(f"{f.name}:", pc.cast(index, pa.string()), "")
    if col is None or pa.types.is_null(col.type):
        return fallback, np.ones(n, dtype=bool)
    if pa.types.is_integer(col.type):
        text = pc.cast(col, pa.string())
        ok = np.ones(n, dtype=bool)
    elif is_string(col.type):
        text = pc.cast(col, pa.string())
        ok = _plain_ascii(text) | ~_mask(pc.is_valid(text))
    else:
        return fallback, np.zeros(n, dtype=bool)
    own = pc.if_else(pc.equal(pc.binary_length(text), 0), None, text)
    return pc.coalesce(own, fallback).combine_chunks(), ok


def _class_ids(col: pa.ChunkedArray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(class id per row, -1 for none; rows whose class id is decided here)."""
    if col is None or pa.types.is_null(col.type):
        return np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool)
    if pa.types.is_integer(col.type) and not pa.types.is_boolean(col.type):
        values = pc.fill_null(pc.cast(col, pa.int64()), -1).to_numpy(zero_copy_only=False)
        null = ~_mask(pc.is_valid(col))
    elif is_string(col.type):
        text = pc.cast(col, pa.string())
        digits = _mask(pc.match_substring_regex(text, r"^[0-9]{1,3}$"))
        null = ~_mask(pc.is_valid(text)) | _mask(pc.equal(pc.binary_length(text), 0))
        values = np.full(n, -1, dtype=np.int64)
        if digits.any():
            parsed = pc.cast(pc.if_else(pa.array(digits), text, None), pa.int64())
            values = pc.fill_null(parsed, -1).to_numpy(zero_copy_only=False)
        values = np.where(null, -1, values)
        ok = (digits | null) & ((values == -1) | (values <= taxonomy.NONE_ID))
        ok &= (values == -1) | VALID_ID[np.clip(values, 0, taxonomy.NONE_ID)]
        return values, ok
    else:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    ok = null | ((values >= 0) & (values <= taxonomy.NONE_ID))
    ok &= null | VALID_ID[np.clip(values, 0, taxonomy.NONE_ID)]
    return np.where(null, -1, values), ok


def _reference(col: pa.ChunkedArray | None, n: int) -> tuple[pa.Array, np.ndarray]:
    """(stripped text or null per row, rows decided here): no NUL, nothing to quarantine."""
    if col is None or pa.types.is_null(col.type):
        return pa.nulls(n, pa.string()), np.ones(n, dtype=bool)
    if not is_string(col.type):
        return pa.nulls(n, pa.string()), np.zeros(n, dtype=bool)
    text = pc.cast(col, pa.string())
    ok = ~_mask(pc.match_substring(text, "\x00"))
    stripped = pc.utf8_trim_whitespace(text)
    value = pc.if_else(pc.equal(pc.binary_length(stripped), 0), None, stripped)
    return value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value, ok


def clean_rows(raw: pa.Table, f: Fields, first_index: int) -> tuple[pa.Table, np.ndarray]:
    """(the rows decided here, in PROMPT_SCHEMA plus their position `_pos`; the positions
    of the rows that need `check_record`)."""
    n = raw.num_rows

    def col(name: str | None) -> pa.ChunkedArray | None:
        return raw.column(name) if name and name in raw.column_names else None

    text = col(f.text)
    ok = _text_column(text, n) if text is not None else np.zeros(n, dtype=bool)
    row_ids, id_ok = _ids(col(f.id), f, first_index, n)
    cids, cls_ok = _class_ids(col(f.cls), n)
    ok &= id_ok & cls_ok
    refs = {}
    for out_name, column in f.refs:
        refs[out_name], ref_ok = _reference(col(column), n)
        ok &= ref_ok
    keep = np.flatnonzero(ok)
    take = pa.array(keep, pa.int64())
    question = pc.cast(text.take(take), pa.string()).combine_chunks() if len(keep) \
        else pa.array([], pa.string())
    lowered = pc.ascii_lower(question).cast(pa.binary()).to_pylist()
    hashes = pa.array([hashlib.sha1(b).hexdigest()[:16] for b in lowered], pa.string())
    cid = cids[keep]
    has = cid >= 0
    cls_idx = pa.array(np.where(has, cid, 0), pa.int64())
    none = pa.array(~has)

    def lookup(values: pa.Array) -> pa.Array:
        return pc.if_else(none, pa.scalar(None, pa.string()), values.take(cls_idx))

    table = pa.table({
        "row_id": row_ids.take(take),
        "source": pa.array([f.name] * len(keep), pa.string()) if len(keep)
        else pa.array([], pa.string()),
        "row_index": pa.array(keep + first_index, pa.int64()),
        "question": question,
        "content_hash": hashes,
        "class_id": pa.array(cid.astype(np.int32), pa.int32(), mask=~has),
        "subdomain": lookup(SUBDOMAIN),
        "domain": lookup(DOMAIN),
        "form": lookup(FORM),
        **{name: values.take(take) for name, values in refs.items()},
        "split": pa.nulls(len(keep), pa.string()),
        "_pos": pa.array(keep, pa.int64()),
    })
    return table, np.flatnonzero(~ok)
