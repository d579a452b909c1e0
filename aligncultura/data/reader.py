"""The data layer: one input contract for every job, explicit Arrow schemas, quarantine, split.

`read_input(cfg)` reads CSV, JSONL, Parquet (or a directory of them) into `PROMPT_SCHEMA`:
a stable `row_id` per input row (the input's own id when it has one, else ``<source>:<index>``),
a `content_hash` of the normalised question (exact duplicates share it, never the id), the
subdomain / UNESCO domain / form from the class id, and the reference answers when configured.
A row that cannot be used is quarantined with file, line and reason, never silently dropped.
A problem with the input as a whole (missing file, missing column, no usable row) raises
`InputError` with one line naming the file and the column, before any engine starts.

How a file is read: sources.py parses it with Arrow's readers (JSON lines streamed in
chunks), columns.py decides the plain rows with Arrow kernels, records.py decides the rest
row by row (every quarantine reason is written there), collect.py numbers rows, keeps ids
unique and counts. `engine="rows"` reads record by record only: the reference that
tests/test_reader_engines.py holds the fast path to.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from aligncultura.config import InputConfig
from aligncultura.data.collect import Collector
from aligncultura.data.encoding import decode
from aligncultura.data.records import (  # noqa: F401  (re-exported: the contract's helpers)
    MAX_QUESTION_CHARS,
    Record,
    content_hash,
    csv_rows,
    json_lines,
    normalize_question,
)
from aligncultura.data.sources import read_csv, read_jsonl, read_parquet
from aligncultura.data.split import assign_splits, select
from aligncultura.errors import InputError

SAMPLE_NAME = "culturax_sample.jsonl"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}

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


def _python_records(path: Path, fmt: str, cfg: InputConfig, key: str) -> Iterator[Record]:
    """The reference reading of one file, record by record (`engine="rows"`)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        yield from ((i + 1, rec, None) for i, rec in enumerate(table.to_pylist()))
        return
    text = decode(path.read_bytes(), cfg.encoding, path, key, detect=fmt == "csv")
    text = text[1:] if text.startswith("\ufeff") else text
    yield from (json_lines(text) if fmt == "jsonl" else csv_rows(text))


def read_input(cfg: InputConfig, key: str = "dataset",
               explicit: Collection[str] | None = None, engine: str = "arrow") -> ReadResult:
    """Read one input (all splits); see the module docstring for the contract. `key` is where
    the input sits in the job's config (dataset, seeds, eval, input, ...): errors name it.
    `explicit`: the config keys the user set (`config.command_line_keys`); an optional column
    they did not name that the file lacks is skipped with a note (None: all are required).
    `engine`: arrow (Arrow readers and kernels, sources.py) or rows (record by record in
    Python, the reference the tests compare it with); both give the same result."""
    files, fmt = resolve_files(cfg, key)
    c = Collector(cfg, key, explicit, PROMPT_SCHEMA)
    for path in files:
        c.start_file()
        if engine == "rows":
            if fmt == "parquet":
                read_parquet(path, c, key, by_rows=True)
            else:
                c.add_records(path, _python_records(path, fmt, cfg, key))
        elif fmt == "parquet":
            read_parquet(path, c, key)
        elif fmt == "csv":
            read_csv(path, c)
        else:
            read_jsonl(path, c)
        if not c.checked and fmt != "jsonl":
            raise InputError(f"{path}: file is empty (no header row); set {key}.path to a "
                             "file with data")
    table = c.table()
    quarantine, read = c.quarantine, c.read
    if not table.num_rows:
        where = files[0] if len(files) == 1 else files[0].parent
        first = f"; first problem: line {quarantine[0]['line']}: {quarantine[0]['reason']}" \
            if quarantine else ""
        fix = (f"; check {key}.format and {key}.encoding" if read
               else f"; set {key}.path to a file with data")
        raise InputError(f"{where}: no usable row in input '{cfg.name}' ({read} read){first}{fix}")
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
