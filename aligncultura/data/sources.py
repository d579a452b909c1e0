"""Files into the Collector: Arrow's readers first, the Python record parsers where Arrow
cannot read a piece as the contract reads it.

- JSON lines are streamed in chunks of ~16 MB cut at line ends and parsed by
  `pyarrow.json.read_json` against a schema of just the configured columns. A chunk Arrow
  rejects (a malformed line, a value of another type, bytes that are not UTF-8) is read line
  by line instead, so its good lines still count. A line over `MAX_LINE_BYTES` is skipped
  without being held in memory and quarantined.
- CSV files are read whole by `pyarrow.csv.read_csv` with every column as text; a file Arrow
  rejects (ragged rows, an odd header) is read by Python's csv module.
- Parquet files are read by `pyarrow.parquet`; columns of unexpected types go row by row.
Text that is not UTF-8 (a BOM'd UTF-16 file, an explicit or detected code page) is decoded
once (encoding.py) and re-encoded as UTF-8 for Arrow; undecodable bytes keep the row path,
where they are quarantined.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from aligncultura.data.collect import Collector
from aligncultura.data.columns import is_string
from aligncultura.data.encoding import decode
from aligncultura.data.records import csv_rows, json_lines
from aligncultura.errors import InputError

CHUNK_BYTES = 16 << 20
MAX_LINE_BYTES = 16 << 20


def _utf8(encoding: str, head: bytes) -> bool:
    """Bytes Arrow can take as they are (UTF-8, maybe with a BOM)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and encoding == "auto":
        return False
    return encoding == "auto" or codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def _text(raw: bytes, c: Collector, path: Path, detect: bool) -> str:
    text = decode(raw, c.cfg.encoding, path, c.key, detect=detect)
    return text[1:] if text.startswith("\ufeff") else text


def _reencoded(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes kept as surrogates: the row path
        return None


# ---------------------------------------------------------------------------- JSON lines


def _chunks(f: io.BufferedIOBase) -> Iterator[tuple[int, bytes | int, int]]:
    """(first line number, chunk of whole lines, its line count) or (line number, size, 1)
    for a line over MAX_LINE_BYTES, which is read through, not kept."""
    line = 1
    rest = b""
    while True:
        block = f.read(CHUNK_BYTES)
        if not block:
            break
        data = rest + block
        cut = data.rfind(b"\n") + 1
        if not cut:
            if len(data) <= MAX_LINE_BYTES:
                rest = data
                continue
            size = len(data)  # an over-long line: skip to its end
            while True:
                block = f.read(CHUNK_BYTES)
                end = block.find(b"\n")
                if not block or end >= 0:
                    break
                size += len(block)
            yield line, size + (end if block else 0), 1
            line += 1
            rest = block[end + 1:] if block else b""
            continue
        count = data.count(b"\n", 0, cut)
        yield line, data[:cut], count
        line += count
        rest = data[cut:]
    if rest:
        yield line, rest, 1


def _json_table(chunk: bytes, c: Collector) -> pa.Table | None:
    """The chunk's configured columns, or None when Arrow cannot read it as json.loads would."""
    import pyarrow.json as pj

    f = c.fields
    types: dict[str, Any] = {f.text: pa.string()}
    for _, col in f.refs:
        if col:
            types[col] = pa.string()
    if f.cls:
        types[f.cls] = pa.int64()
    for id_type in (pa.string(), pa.int64()):
        if f.id:
            types[f.id] = id_type
        try:
            return pj.read_json(
                io.BytesIO(chunk), read_options=pj.ReadOptions(block_size=1 << 22),
                parse_options=pj.ParseOptions(explicit_schema=pa.schema(types.items()),
                                              unexpected_field_behavior="ignore"))
        except (pa.ArrowException, ValueError) as exc:
            if not f.id or f"Column(/{f.id})" not in str(exc):
                return None
    return None


def _json_chunk(path: Path, first_line: int, chunk: bytes, n_lines: int, c: Collector) -> None:
    lines: list[tuple[int, bytes]] | None = None

    def nonblank() -> list[tuple[int, bytes]]:
        nonlocal lines
        if lines is None:
            lines = [(first_line + i, raw) for i, raw in enumerate(chunk.split(b"\n"))
                     if raw.decode("utf-8", "surrogateescape").strip()]
        return lines

    if not c.checked:  # the first record names the columns
        first = next((raw for _, raw in nonblank()), None)
        try:
            rec = json.loads(first) if first is not None else None
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            c.check(path, list(rec.keys()))
    table = _json_table(chunk, c) if c.checked else None
    if table is not None:
        if table.num_rows == n_lines:
            c.add_arrow(path, table, lambda k: json.loads(nonblank()[k][1]),
                        lambda k: first_line + k)
            return
        if table.num_rows == len(nonblank()):
            c.add_arrow(path, table, lambda k: json.loads(nonblank()[k][1]),
                        lambda k: nonblank()[k][0])
            return
    c.add_records(path, json_lines(chunk.decode("utf-8", "surrogateescape"), first_line))


def read_jsonl(path: Path, c: Collector, on_read: Callable[[int], None] | None = None) -> None:
    """The file's rows into `c`, ~CHUNK_BYTES at a time; `on_read(position)`: after each chunk
    is handed over, the bytes of the file read so far (a stream's progress)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if _utf8(c.cfg.encoding, head):
            f.seek(len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
            stream: io.BufferedIOBase = f  # type: ignore[assignment]
        else:
            text = _text(head + f.read(), c, path, detect=False)
            data = _reencoded(text)
            if data is None:
                c.add_records(path, json_lines(text))
                return
            stream = io.BytesIO(data)
        for line, chunk, n_lines in _chunks(stream):
            if isinstance(chunk, int):
                c.add_oversize(path, line, chunk, MAX_LINE_BYTES)
            else:
                _json_chunk(path, line, chunk, n_lines, c)
            if on_read is not None:
                on_read(f.tell())


# ---------------------------------------------------------------------------------- CSV


_NEWLINE = re.compile(rb"\r\n?|\n")


def _csv_table(data: bytes, c: Collector, path: Path) -> pa.Table | None:
    """The whole file as text columns (header names stripped), None when Arrow cannot read
    it as the csv module does; checks the header's columns first."""
    import pyarrow.csv as pcsv

    head = data[:1 << 20]
    try:
        head_text = head[:head.rfind(b"\n") + 1 or len(head)].decode("utf-8")
    except UnicodeDecodeError:
        return None
    header = next(csv.reader(io.StringIO(head_text, newline="")), None)
    if not header:
        return None
    names = [h.strip() for h in header]
    c.check(path, names)
    named = [n for n in names if n]
    if len(set(named)) != len(named):  # the csv module keeps the last of equal names
        return None
    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                strings_can_be_null=False,
                                                quoted_strings_can_be_null=False))
    except (pa.ArrowException, ValueError):
        return None
    if table.column_names != header:
        return None
    return table.rename_columns(names)  # columns without a name are dropped after the
    # blank-row check (the csv module's records leave them out)


def _without_blank_rows(table: pa.Table) -> pa.Table:
    """Without the rows whose cells are all blank (the rows the csv module skips)."""
    import pyarrow.compute as pc

    blank = None
    for col in table.columns:
        empty = pc.equal(pc.binary_length(pc.utf8_trim_whitespace(col)), 0)
        blank = empty if blank is None else pc.and_(blank, empty)
    return table.filter(pc.invert(blank)) if blank is not None and pc.any(blank).as_py() \
        else table


def read_csv(path: Path, c: Collector) -> None:
    raw = path.read_bytes()
    text: str | None = None
    data: bytes | None = raw
    if not _utf8(c.cfg.encoding, raw[:4]):
        text = _text(raw, c, path, detect=True)
        data = _reencoded(text)
    elif raw.startswith(codecs.BOM_UTF8):
        data = raw[len(codecs.BOM_UTF8):]
    table = _csv_table(data, c, path) if data is not None else None
    if table is None and text is None:
        text = _text(raw, c, path, detect=True)  # not UTF-8 (a code page) or not for Arrow
        data = _reencoded(text)
        if data is not None and data != raw:
            table = _csv_table(data, c, path)
    if table is not None:
        table = _without_blank_rows(table)
        table = table.select([k for k, n in enumerate(table.column_names) if n])
        records: list[tuple[int, dict[str, Any]]] = []

        def rows() -> list[tuple[int, dict[str, Any]]]:
            # the csv module's reading, for the rows that need a line number or a reason
            if not records:
                source = text if text is not None else data.decode("utf-8")
                records.extend((line, rec) for line, rec, _ in list(csv_rows(source))[1:])
            return records

        if c.add_arrow(path, table, lambda k: rows()[k][1], lambda k: rows()[k][0],
                       verify=lambda: len(rows()) == table.num_rows):
            return
    if text is None:
        text = _text(raw, c, path, detect=True)
    c.add_records(path, csv_rows(text))


# ------------------------------------------------------------------------------ Parquet


def read_parquet(path: Path, c: Collector, key: str, by_rows: bool = False) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({why}); check {key}.path "
                         f"and {key}.format") from None
    if not table.num_rows:
        return
    if by_rows:
        c.add_records(path, ((i + 1, rec, None) for i, rec in enumerate(table.to_pylist())))
        return
    c.check(path, table.column_names)
    f = c.fields
    typed = f.text in table.column_names and is_string(table.schema.field(f.text).type)
    for name in (f.id, f.cls, *(col for _, col in f.refs)):
        if name and name in table.column_names:
            t = table.schema.field(name).type
            typed &= is_string(t) or (pa.types.is_integer(t) and name != f.text)
    if typed:
        c.add_arrow(path, table, lambda k: table.slice(k, 1).to_pylist()[0], lambda k: k + 1)
    else:
        c.add_records(path, ((i + 1, rec, None) for i, rec in enumerate(table.to_pylist())))
