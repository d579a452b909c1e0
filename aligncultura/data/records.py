"""The data contract for one record, in plain Python: the reference semantics of the reader.

The vectorised reader (columns.py) decides most rows with Arrow kernels and hands every row it
cannot decide that way (a null, blank, over-long or non-ASCII-clean text, an odd class id, a
line Arrow cannot parse) to `check_record`, so every quarantine reason comes from this one
function. `text_records` is the per-line parser for the same cases (a JSON-lines chunk or a
CSV file Arrow rejects). The config is read once into `Fields`, never per row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aligncultura.data import taxonomy

MAX_QUESTION_CHARS = 32_000
REF_COLUMNS = ("topic", "helpful_ref", "harmless_ref", "honest_ref")


@dataclass(frozen=True)
class Fields:
    """An input's column names, read once from its config (None: not read)."""

    name: str
    key: str
    text: str
    id: str | None
    cls: str | None
    refs: tuple[tuple[str, str | None], ...]  # (output column, input column) per REF_COLUMNS

    @classmethod
    def of(cls, cfg: Any, key: str, skip: set[str]) -> Fields:
        def fld(name: str) -> str | None:
            return None if name in skip else getattr(cfg, name)

        return cls(name=str(cfg.name), key=key, text=str(cfg.text_field), id=fld("id_field"),
                   cls=fld("class_field"),
                   refs=tuple(zip(REF_COLUMNS, (fld("topic_field"), fld("helpful_field"),
                                                fld("harmless_field"), fld("honest_field")),
                                  strict=True)))

    @property
    def columns(self) -> list[str]:
        """The input columns the contract reads, text first."""
        cols = [self.text, self.id, self.cls, *(c for _, c in self.refs)]
        return list(dict.fromkeys(c for c in cols if c))


def normalize_question(text: str) -> str:
    """NFKC, casefold, whitespace collapsed: what `content_hash` is computed over."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha1(normalize_question(text).encode("utf-8")).hexdigest()[:16]


def text_value(value: Any, what: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"{what} is a {type(value).__name__}, expected text"
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in value):
        return None, f"{what} is not valid text in the configured encoding"
    if "\x00" in value:
        return None, f"{what} contains NUL bytes"
    return value, None


def class_value(value: Any) -> tuple[int | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, f"class id {value!r} is not an integer"
    try:
        number = float(value) if isinstance(value, str) else value
        cid = int(number)
        if cid != number:
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # OverflowError: "inf", "1e999"
        return None, f"class id {value!r} is not an integer"
    if not taxonomy.is_valid_id(cid):
        return None, f"unknown class id {cid} (valid: 0-{taxonomy.NONE_ID})"
    return cid, None


def check_record(rec: dict[str, Any], f: Fields,
                 row_index: int) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(row, None, row_id) for a usable record, else (None, reason, row_id or None); the
    duplicate-id check is the caller's, in input order."""
    own_id = rec.get(f.id) if f.id else None
    if own_id is not None and not isinstance(own_id, str | int) or isinstance(own_id, bool):
        return None, f"id {own_id!r} is a {type(own_id).__name__}, expected text or integer", None
    own = str(own_id).strip() if own_id is not None else ""
    row_id = own or f"{f.name}:{row_index}"
    if f.text not in rec:
        return None, f"field '{f.text}' missing ({f.key}.text_field)", row_id
    question, why = text_value(rec.get(f.text), "question")
    if why or question is None:
        return None, why or "question is null", row_id
    if not question.strip():
        return None, "question is empty or whitespace", row_id
    if len(question) > MAX_QUESTION_CHARS:
        return None, f"question has {len(question)} characters (limit {MAX_QUESTION_CHARS})", \
            row_id
    cid, why = class_value(rec.get(f.cls)) if f.cls else (None, None)
    if why:
        return None, why, row_id
    refs = {}
    for out_name, column in f.refs:
        value, why = text_value(rec.get(column), out_name) if column else (None, None)
        if why:
            return None, why, row_id
        refs[out_name] = value.strip() if isinstance(value, str) and value.strip() else None
    sub = taxonomy.subdomain(cid) if cid is not None else None
    return {
        "row_id": row_id,
        "source": f.name,
        "row_index": row_index,
        "question": question.strip(),
        "content_hash": content_hash(question),
        "class_id": cid,
        "subdomain": sub.name if sub else None,
        "domain": sub.domain if sub else None,
        "form": sub.form if sub else None,
        **refs,
        "split": None,
    }, None, row_id


Record = tuple[int, dict[str, Any] | None, str | None]  # (line, record or None, error or None)


def json_lines(text: str, first_line: int = 1) -> Iterator[Record]:
    """One JSON-lines chunk, line by line; `first_line` is the number of its first line."""
    # split on "\n" only: str.splitlines() also breaks at U+2028, U+0085 ..., which JSON
    # allows unescaped inside strings; a trailing "\r" is JSON whitespace
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield first_line + i, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(rec, dict):
            yield first_line + i, None, f"JSON line is a {type(rec).__name__}, expected an object"
            continue
        yield first_line + i, rec, None


def csv_rows(text: str) -> Iterator[Record]:
    """A CSV file: first (1, {"__header__": names}, None), then each non-blank record with the
    physical line it ends on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    yield 1, {"__header__": header}, None
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        rec = {h: (row[j] if j < len(row) else None) for j, h in enumerate(header) if h}
        yield reader.line_num, rec, None
