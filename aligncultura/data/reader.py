"""The data layer: one input contract for every job, explicit Arrow schemas, quarantine, split.

`read_input(cfg)` reads CSV, JSONL, Parquet (or a directory of them) into `PROMPT_SCHEMA`:
a stable `row_id` per input row (the input's own id when it has one, else ``<source>:<index>``),
a `content_hash` of the normalised question (exact duplicates share it, never the id), the
subdomain / UNESCO domain / form from the class id, and the reference answers when configured.
A row that cannot be used is quarantined with file, line and reason, never silently dropped.
A problem with the input as a whole (missing file, missing column, no usable row) raises
`InputError` with one line naming the file and the column, before any engine starts.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import sys
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from aligncultura.config import InputConfig
from aligncultura.data import taxonomy
from aligncultura.data.encoding import decode
from aligncultura.data.split import assign_splits, select
from aligncultura.errors import InputError

SAMPLE_NAME = "culturax_sample.jsonl"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
MAX_QUESTION_CHARS = 32_000

PROMPT_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("row_index", pa.int64()),
        ("question", pa.string()),
        ("content_hash", pa.string()),
        ("class_id", pa.int32()),
        ("subdomain", pa.string()),
        ("domain", pa.string()),
        ("form", pa.string()),
        ("topic", pa.string()),
        ("helpful_ref", pa.string()),
        ("harmless_ref", pa.string()),
        ("honest_ref", pa.string()),
        ("split", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("row_id", pa.string()),
        ("reason", pa.string()),
    ]
)

@dataclass
class ReadResult:
    table: pa.Table  # PROMPT_SCHEMA, usable rows
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    files: list[str] = field(default_factory=list)
    used: int = 0  # rows that passed validation (read = used + quarantined)

    @property
    def counts(self) -> dict[str, int]:
        """read = used + quarantined; used = selected + not_selected (split and limit)."""
        return {
            "read": self.read,
            "used": self.used,
            "quarantined": len(self.quarantine),
            "selected": self.table.num_rows,
            "not_selected": self.used - self.table.num_rows,
        }


def normalize_question(text: str) -> str:
    """NFKC, casefold, whitespace collapsed: what `content_hash` is computed over."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha1(normalize_question(text).encode("utf-8")).hexdigest()[:16]


def sample_path() -> Path:
    return Path(str(resources.files("aligncultura.data") / "sample_data" / SAMPLE_NAME))


def resolve_files(cfg: InputConfig, key: str = "dataset") -> tuple[list[Path], str]:
    """The files an input names and their format; raises InputError before any work starts."""
    if not cfg.path and cfg.name != "sample":
        raise InputError(
            f"input '{cfg.name}' has no path: set {key}.path=... (only the embedded 'sample' "
            "input may leave it empty)"
        )
    path = Path(os.path.expanduser(cfg.path)) if cfg.path else sample_path()
    if not path.exists():
        raise InputError(f"input '{cfg.name}': {path} does not exist (set {key}.path=...)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise InputError(
                f"input '{cfg.name}': directory {path} holds no .csv, .jsonl or .parquet file; "
                f"set {key}.path to a data file or a folder of them"
            )
    else:
        files = [path]
    fmt = cfg.format
    if fmt == "auto":
        kinds = {FORMATS.get(p.suffix.lower()) for p in files}
        if None in kinds or len(kinds) != 1:
            raise InputError(
                f"input '{cfg.name}': cannot tell the format of {path} from its suffix; "
                f"set {key}.format=csv|jsonl|parquet"
            )
        fmt = kinds.pop()
    if fmt not in ("csv", "jsonl", "parquet"):
        raise InputError(f"input '{cfg.name}': format '{fmt}' unknown; use csv, jsonl or parquet")
    if fmt != "parquet" and cfg.encoding != "auto":
        try:
            codecs.lookup(cfg.encoding)
        except LookupError:
            raise InputError(f"{key}.encoding={cfg.encoding!r} is not a known text encoding; "
                             "use auto, or e.g. utf-8, cp1252 or latin-1") from None
    return files, fmt


def _records(path: Path, fmt: str, cfg: InputConfig, key: str = "dataset"):
    """Yield (line, record-or-None, error-or-None) for one file."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: not a readable Parquet file ({why}); check {key}.path "
                             f"and {key}.format") from None
        for i, rec in enumerate(table.to_pylist()):
            yield i + 1, rec, None
        return
    text = decode(path.read_bytes(), cfg.encoding, path, key, detect=fmt == "csv")
    if text.startswith("\ufeff"):
        text = text[1:]
    if fmt == "jsonl":
        # split on "\n" only: str.splitlines() also breaks at U+2028, U+0085 ..., which JSON
        # allows unescaped inside strings; a trailing "\r" is JSON whitespace
        for i, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield i + 1, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(rec, dict):
                yield i + 1, None, f"JSON line is a {type(rec).__name__}, expected an object"
                continue
            yield i + 1, rec, None
        return
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


OPTIONAL_FIELDS = ("id_field", "class_field", "topic_field", "helpful_field", "harmless_field",
                   "honest_field")


def _check_columns(cfg: InputConfig, path: Path, columns: list[str], key: str,
                   explicit: Collection[str] | None, skip: set[str]) -> None:
    """Every configured column must exist, but for an optional field the user did not name
    (not in `explicit`, the keys set on the command line; None: every field counts as
    named): a missing one is skipped (added to `skip`) with a one-line note."""
    required = {f"{key}.text_field": cfg.text_field}
    for name in OPTIONAL_FIELDS:
        value = getattr(cfg, name)
        if value and name not in skip:
            required[f"{key}.{name}"] = value
    for setting, col in required.items():
        name = setting.rsplit(".", 1)[1]
        if col not in columns and explicit is not None and name != "text_field" \
                and setting not in explicit:
            skip.add(name)
            print(f"note: {path}: no column '{col}' for {setting} (left at its preset value): "
                  f"read without it; name the column with {setting}=<column>", file=sys.stderr,
                  flush=True)
            continue
        if col not in columns:
            names = [c[:40] for c in columns if c]
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "none"
            fix = f"set {setting}=<column>" + (" or null" if setting != f"{key}.text_field" else "")
            raise InputError(f"{path}: column '{col}' ({setting}) not found; columns are: {shown}; "
                             f"{fix}")


def _text(value: Any, what: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"{what} is a {type(value).__name__}, expected text"
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in value):
        return None, f"{what} is not valid text in the configured encoding"
    if "\x00" in value:
        return None, f"{what} contains NUL bytes"
    return value, None


def _class_id(value: Any) -> tuple[int | None, str | None]:
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


def read_input(cfg: InputConfig, key: str = "dataset",
               explicit: Collection[str] | None = None) -> ReadResult:
    """Read one input (all splits); see the module docstring for the contract. `key` is where
    the input sits in the job's config (dataset, seeds, eval, input, ...): errors name it.
    `explicit`: the config keys the user set (`config.command_line_keys`); an optional column
    they did not name that the file lacks is skipped with a note (None: all are required)."""
    files, fmt = resolve_files(cfg, key)
    skip: set[str] = set()

    def fld(name: str) -> str | None:
        return None if name in skip else getattr(cfg, name)

    rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    seen_ids: dict[str, str] = {}
    read = 0
    index = 0
    for path in files:
        checked = False
        for line, rec, error in _records(path, fmt, cfg, key):
            if rec is not None and "__header__" in rec:
                _check_columns(cfg, path, rec["__header__"], key, explicit, skip)
                checked = True
                continue
            if rec is not None and not checked:
                # the first record names the columns; a later JSONL line without the text field
                # is quarantined (a missing optional field reads as null)
                _check_columns(cfg, path, list(rec.keys()), key, explicit, skip)
                checked = True
            read += 1
            row_index = index
            index += 1

            def bad(reason: str, rid: str | None = None, *, _p=path, _l=line) -> None:
                quarantine.append(
                    {"source": cfg.name, "file": str(_p), "line": _l, "row_id": rid, "reason": reason}
                )

            if error is not None:
                bad(error)
                continue
            own_id = rec.get(fld("id_field")) if fld("id_field") else None
            if own_id is not None and not isinstance(own_id, str | int) or isinstance(own_id, bool):
                bad(f"id {own_id!r} is a {type(own_id).__name__}, expected text or integer")
                continue
            own = str(own_id).strip() if own_id is not None else ""
            row_id = own or f"{cfg.name}:{row_index}"
            if cfg.text_field not in rec:
                bad(f"field '{cfg.text_field}' missing ({key}.text_field)", row_id)
                continue
            question, why = _text(rec.get(cfg.text_field), "question")
            if why or question is None:
                bad(why or "question is null", row_id)
                continue
            if not question.strip():
                bad("question is empty or whitespace", row_id)
                continue
            if len(question) > MAX_QUESTION_CHARS:
                bad(f"question has {len(question)} characters (limit {MAX_QUESTION_CHARS})", row_id)
                continue
            cid, why = _class_id(rec.get(fld("class_field"))) if fld("class_field") \
                else (None, None)
            if why:
                bad(why, row_id)
                continue
            refs = {}
            for out_name, column in (("topic", fld("topic_field")),
                                     ("helpful_ref", fld("helpful_field")),
                                     ("harmless_ref", fld("harmless_field")),
                                     ("honest_ref", fld("honest_field"))):
                value, why = _text(rec.get(column), out_name) if column else (None, None)
                if why:
                    break
                refs[out_name] = value.strip() if isinstance(value, str) and value.strip() \
                    else None
            if why:
                bad(why, row_id)
                continue
            if row_id in seen_ids:
                bad(f"duplicate id '{row_id}' (first seen at {seen_ids[row_id]})", row_id)
                continue
            seen_ids[row_id] = f"{path.name}:{line}"
            sub = taxonomy.subdomain(cid) if cid is not None else None
            rows.append(
                {
                    "row_id": row_id,
                    "source": cfg.name,
                    "row_index": row_index,
                    "question": question.strip(),
                    "content_hash": content_hash(question),
                    "class_id": cid,
                    "subdomain": sub.name if sub else None,
                    "domain": sub.domain if sub else None,
                    "form": sub.form if sub else None,
                    **refs,
                    "split": None,
                }
            )
        if not checked and fmt != "jsonl":
            raise InputError(f"{path}: file is empty (no header row); set {key}.path to a "
                             "file with data")
    if not rows:
        where = files[0] if len(files) == 1 else files[0].parent
        first = f"; first problem: line {quarantine[0]['line']}: {quarantine[0]['reason']}" if quarantine else ""
        fix = (f"; check {key}.format and {key}.encoding" if read
               else f"; set {key}.path to a file with data")
        raise InputError(f"{where}: no usable row in input '{cfg.name}' ({read} read){first}{fix}")
    table = pa.Table.from_pylist(rows, schema=PROMPT_SCHEMA)
    return ReadResult(table=table, quarantine=quarantine, read=read,
                      files=[str(p) for p in files], used=table.num_rows)


def quarantine_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def load_prompts(cfg: InputConfig, key: str = "dataset",
                 explicit: Collection[str] | None = None) -> ReadResult:
    """Read, split and select: what a job feeds its first stage."""
    result = read_input(cfg, key, explicit)
    table = assign_splits(result.table, tuple(cfg.split_fractions), cfg.split_seed, key)
    result.table = select(table, cfg.split, cfg.limit, cfg.split_seed, key)
    return result
