"""Row accounting for one input: records and Arrow pieces in, usable rows and quarantine out.

`Collector` is fed the pieces of each file in input order (sources.py): a Python record
stream (`add_records`), or a parsed Arrow piece (`add_arrow`, decided by columns.py with the
undecided rows sent to `records.check_record`), or a line too long to parse (`add_oversize`).
It numbers rows across files, keeps ids unique in input order (the first occurrence wins,
later ones are quarantined naming it), and counts read = used + quarantined.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aligncultura.data.columns import clean_rows
from aligncultura.data.records import Fields, Record, check_record
from aligncultura.errors import InputError

OPTIONAL_FIELDS = ("id_field", "class_field", "topic_field", "helpful_field", "harmless_field",
                   "honest_field")


def check_columns(cfg: Any, path: Path, columns: list[str], key: str,
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


def _same(line: int) -> int:
    return line


class Collector:
    """See the module docstring. `schema`: the output schema (PROMPT_SCHEMA)."""

    def __init__(self, cfg: Any, key: str, explicit: Collection[str] | None, schema: pa.Schema):
        self.cfg, self.key, self.explicit, self.schema = cfg, key, explicit, schema
        self.skip: set[str] = set()
        self.fields = Fields.of(cfg, key, self.skip)
        self.tables: list[pa.Table] = []
        self.quarantine: list[dict[str, Any]] = []
        # id -> where its first usable row is: piece number * 2**40 + position in the piece
        self.seen: dict[str, int] = {}
        self.pieces: list[tuple[str, Callable[[int], int]]] = []  # (file name, line of pos)
        self.read = 0
        self.index = 0
        self.checked = False  # the current file's columns were checked

    def start_file(self) -> None:
        self.checked = False

    def check(self, path: Path, columns: list[str]) -> None:
        check_columns(self.cfg, path, columns, self.key, self.explicit, self.skip)
        self.fields = Fields.of(self.cfg, self.key, self.skip)
        self.checked = True

    def _entry(self, path: Path, line: int, reason: str, rid: str | None) -> dict[str, Any]:
        return {"source": self.fields.name, "file": str(path), "line": line, "row_id": rid,
                "reason": reason}

    def _bad(self, path: Path, line: int, reason: str, rid: str | None) -> None:
        self.quarantine.append(self._entry(path, line, reason, rid))

    def _piece(self, path: Path, line: Callable[[int], int]) -> int:
        self.pieces.append((path.name, line))
        return (len(self.pieces) - 1) << 40

    def _unique(self, path: Path, rid: str, line: Callable[[int], int], pos: int,
                base: int) -> bool:
        first = self.seen.get(rid)
        if first is not None:
            name, first_line = self.pieces[first >> 40]
            where = f"{name}:{first_line(first & ((1 << 40) - 1))}"
            self._bad(path, line(pos), f"duplicate id '{rid}' (first seen at {where})", rid)
            return False
        self.seen[rid] = base + pos
        return True

    def add_records(self, path: Path, records: Iterable[Record]) -> None:
        """A Python record stream: (line, record, error); a CSV header comes first as
        (1, {"__header__": names}, None)."""
        rows = []
        base = self._piece(path, _same)
        for line, rec, error in records:
            if rec is not None and "__header__" in rec:
                self.check(path, rec["__header__"])
                continue
            if rec is not None and not self.checked:
                # the first record names the columns; a later JSONL line without the text
                # field is quarantined (a missing optional field reads as null)
                self.check(path, list(rec.keys()))
            self.read += 1
            row_index = self.index
            self.index += 1
            if error is not None:
                self._bad(path, line, error, None)
                continue
            row, why, rid = check_record(rec, self.fields, row_index)
            if why is not None:
                self._bad(path, line, why, rid)
            elif self._unique(path, row["row_id"], _same, line, base):
                rows.append(row)
        if rows:
            self.tables.append(pa.Table.from_pylist(rows, schema=self.schema))

    def add_oversize(self, path: Path, line: int, size: int, limit: int) -> None:
        self.read += 1
        self.index += 1
        self._bad(path, line, f"line has {size} bytes (limit {limit}); not parsed", None)

    def add_arrow(self, path: Path, raw: pa.Table, record: Callable[[int], dict[str, Any]],
                  line: Callable[[int], int], verify: Callable[[], bool] | None = None) -> bool:
        """A parsed piece: row k of `raw` is record(k), on line(k) of `path`. When some row
        needs its record or line, `verify()` is asked first whether those can be trusted;
        if not, nothing is added and False is returned (the caller reads the piece by rows)."""
        n = raw.num_rows
        first = self.index
        table, rest = clean_rows(raw, self.fields, first)
        table = table.cast(self.schema.append(pa.field("_pos", pa.int64())))
        ids = table["row_id"].to_pylist()
        if verify is not None and (len(rest) or len(set(ids)) < len(ids)
                                   or any(rid in self.seen for rid in ids)) and not verify():
            return False
        self.read += n
        self.index += n
        extra, extra_pos, entries = [], [], []
        for pos in rest.tolist():
            row, why, rid = check_record(record(pos), self.fields, first + pos)
            if why is not None:
                entries.append((pos, self._entry(path, line(pos), why, rid)))
            else:
                extra.append(row)
                extra_pos.append(pos)
        if extra:
            more = pa.Table.from_pylist(extra, schema=self.schema)
            more = more.append_column("_pos", pa.array(extra_pos, pa.int64()))
            table = pa.concat_tables([table, more])
            table = table.take(np.argsort(table["_pos"].to_numpy(), kind="stable"))
            ids = table["row_id"].to_pylist()
        positions = table["_pos"].to_numpy()
        keep = np.ones(table.num_rows, dtype=bool)
        base = self._piece(path, line)
        if len(set(ids)) == len(ids) and self.seen.keys().isdisjoint(ids):
            self.seen.update(zip(ids, (positions + base).tolist(), strict=True))
        else:
            for k, (rid, pos) in enumerate(zip(ids, positions.tolist(), strict=True)):
                if not self._unique(path, rid, line, pos, base):
                    keep[k] = False
                    entries.append((pos, self.quarantine.pop()))
        # quarantine in input order: rejected rows and duplicates interleave
        self.quarantine += [e for _, e in sorted(entries, key=lambda pe: pe[0])]
        if not keep.all():
            table = table.filter(pa.array(keep))
        if table.num_rows:
            self.tables.append(table.drop_columns(["_pos"]))
        return True

    def table(self) -> pa.Table:
        if not self.tables:
            return self.schema.empty_table()
        return pa.concat_tables(self.tables).combine_chunks()
