"""Reading reference corpora for jobs.leakage and scanning them past the eval index.

The reference corpus is streamed and never loaded whole: Parquet and JSON-lines files are
cut into pieces of ~16 MB (pieces.py), each read, row-counted and scanned by
`scan_reference_piece`, in this process or one Ray Data task per piece (`init_and_map_pieces`
in ray.py; every file is read once, by a worker); CSV files are read one file at a time
through the data contract (so `reference.split` applies to CSV references only) and scanned
on the driver. Each group's per-eval result is turned back into match rows and reduced once
with `best_matches` (scan.py), so the outcome does not depend on grouping or order.

Progress (`ScanProgress`, a console/progress.py `Meter`): pieces done of all (a CSV file
counts as one piece), with MB/s and the ETA over the reference bytes: each piece's `nbytes`
(pieces.py; a file's pieces add up to its size) and each CSV file's size, counted as its
rows are scanned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.console.progress import Meter
from aligncultura.data.reader import FORMATS
from aligncultura.errors import InputError

from .config import read_side, ref_input
from .pieces import PIECE_BYTES, MissingColumn, Piece, plan_pieces, read_piece
from .ray import PieceError, init_and_map_pieces
from .scan import MATCH_SCHEMA, best_matches, scan_batch


def reference_files(ref: Any) -> dict[str, list[str]]:
    """The reference files grouped by format; a path that does not exist is a one-line error."""
    if ref.path:
        raise InputError(f"reference.path={ref.path}: the reference takes a list, set "
                         f"reference.paths=[{ref.path}] instead")
    if not ref.paths:
        raise InputError("reference.paths is empty: give reference.paths=[file_or_dir,...]")
    groups: dict[str, list[str]] = {"parquet": [], "jsonl": [], "csv": []}
    for raw in ref.paths:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise InputError(f"reference.paths: {path} does not exist; fix the path or drop it")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS) \
            if path.is_dir() else [path]
        if not files:
            raise InputError(f"reference.paths: directory {path} holds no .csv, .jsonl or "
                             ".parquet file")
        for f in files:
            fmt = ref.format if ref.format != "auto" else FORMATS.get(f.suffix.lower())
            if fmt not in groups:
                raise InputError(f"reference.paths: cannot tell the format of {f}; set "
                                 "reference.format=csv|jsonl|parquet")
            groups[fmt].append(str(f))
    if (groups["parquet"] or groups["jsonl"]) and not ref.id_field:
        raise InputError("reference.id_field is null: Parquet/JSONL references need an id column "
                         "(set reference.id_field=<column>)")
    return groups


def _unreadable(f: str, fmt: str, exc: BaseException) -> InputError:
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return InputError(f"{f}: not a readable {fmt} reference ({why}); check reference.paths "
                      "and reference.format")


def repair_utf8(batch: pa.RecordBatch, col: int = 0) -> tuple[pa.RecordBatch, int]:
    """pyarrow's JSON reader passes invalid UTF-8 through; replace such bytes with U+FFFD in
    the (rare) batches that hold any, so one bad byte never stops a scan. (batch, rows fixed)"""
    text = batch.column(col)
    try:
        text.validate(full=True)
        return batch, 0
    except pa.ArrowInvalid:
        pass
    raw = text.cast(pa.binary()).to_pylist()
    fixed, bad = [], 0
    for v in raw:
        if v is None:
            fixed.append(None)
            continue
        try:
            fixed.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            fixed.append(v.decode("utf-8", errors="replace"))
            bad += 1
    cols = list(batch.columns)
    cols[col] = pa.array(fixed, pa.string())
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names), bad


COUNT_KEYS = ("read", "used", "quarantined", "null_text", "empty_text", "null_id", "replaced_bytes")


def scan_reference_piece(piece: Piece, index: Any, text_field: str, id_field: str,
                         batch_size: int) -> tuple[pa.Table, dict[str, int]]:
    """Scan one piece of a Parquet/JSONL reference file: (best matches, row counts).

    Rows with a null or blank text or a null id are quarantined (counted, not scanned: they
    cannot match); rows whose bytes are not valid UTF-8 are kept with U+FFFD replacements
    and counted apart. Runs in this process (executor=local) or in a Ray task (executor=ray).
    """
    counts = dict.fromkeys(COUNT_KEYS, 0)
    parts = [MATCH_SCHEMA.empty_table()]
    fmt = "jsonl" if piece.format == "json" else piece.format
    try:
        for b in read_piece(piece, [text_field, id_field], batch_size):
            b, fixed = repair_utf8(b)
            counts["replaced_bytes"] += fixed
            text, ids = b.column(0), b.column(1)
            if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                    or pa.types.is_null(text.type)):
                raise InputError(f"{piece.path}: column '{text_field}' (reference.text_field) "
                                 f"holds {text.type}, expected text")
            null = np.asarray(text.is_null())
            blank = np.asarray(pc.fill_null(
                pc.equal(pc.utf8_trim_whitespace(text.cast(pa.string())), ""), False))
            null_id = np.asarray(ids.is_null()) & ~null & ~blank
            bad = null | blank | null_id
            counts["read"] += len(b)
            counts["null_text"] += int(null.sum())
            counts["empty_text"] += int(blank.sum())
            counts["null_id"] += int(null_id.sum())
            counts["quarantined"] += int(bad.sum())
            counts["used"] += int((~bad).sum())
            if not bad.all():
                parts.append(scan_batch(index, b.filter(pa.array(~bad)) if bad.any() else b))
    except MissingColumn as exc:
        key = "text_field" if exc.column == text_field else "id_field"
        raise InputError(f"{exc.path}: column '{exc.column}' (reference.{key}) not found; columns "
                         f"are: {', '.join(exc.available[:12])}; set reference.{key}=<column>") from None
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(piece.path, fmt, exc) from None
    return pa.concat_tables(parts), counts


class ScanProgress:
    """jobs.leakage's live progress: `total` pieces (a CSV file counts as one) and `nbytes`
    reference bytes, shown as ``[leakage scan] 3/8 pieces (38%), 4.19/11.00 MB, 2.1 MB/s, ETA
    3s, 2s elapsed`` (a bar on a terminal). `meter`: options of the `Meter` (stream, every_s,
    bar, enabled)."""

    def __init__(self, total: int, nbytes: int, label: str = "leakage scan", **meter: Any):
        self.nbytes = nbytes
        self.done = self.scanned = self.partial = 0
        self.meter = Meter(label, total, unit="pieces", rate_unit="MB/s",
                           amount_total=nbytes / 1e6, amount_unit="MB", **meter)

    def pieces(self, pieces: list[Piece]) -> None:
        """These Parquet/JSONL pieces are scanned."""
        self.finished(len(pieces), sum(p.nbytes for p in pieces))

    def finished(self, n: int, nbytes: int) -> None:
        """`n` more pieces (or CSV files) of `nbytes` are scanned."""
        self.done += n
        self.scanned += nbytes
        self.partial = 0
        self._show()

    def within(self, nbytes: int) -> None:
        """`nbytes` of the CSV file being scanned are (`finished` counts the whole file)."""
        self.partial = nbytes
        self._show()

    def _show(self) -> None:
        self.meter.set(done=self.done, amount=(self.scanned + self.partial) / 1e6)

    def close(self, final: bool = True) -> None:
        """The final line; none when the scan failed (`final=False`)."""
        self.meter.close(final)


def plan_reference_pieces(files: list[str], fmt: str, piece_bytes: int) -> list[Piece]:
    """The pieces (pieces.py) of Parquet or JSONL reference files; an unreadable file is a
    one-line InputError. Parquet footers are read here, on the driver."""
    pieces: list[Piece] = []
    for f in files:
        try:
            pieces += plan_pieces([f], fmt, piece_bytes)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(f, fmt, exc) from None
    return pieces


def reference_matches(index: Any, pieces: list[Piece], ref: Any, counts: dict[str, Any],
                      executor: str, num_workers: int | None, batch_size: int,
                      task_nodes: Any = None, progress: ScanProgress | None = None
                      ) -> Iterator[pa.Table]:
    """Match batches of Parquet/JSONL references, piece by piece (`plan_reference_pieces`): in
    this process, or one Ray Data task per piece (each worker reads its own piece, once;
    `task_nodes`, a ray.py `TaskNodes`, learns where each ran). Counts add up in `counts` as
    pieces finish, and `progress` moves."""
    for key in COUNT_KEYS:
        counts.setdefault(key, 0)
    kwargs = {"text_field": ref.text_field, "id_field": ref.id_field, "batch_size": batch_size}
    on_pieces = progress.pieces if progress is not None else None
    if executor == "ray":
        done = init_and_map_pieces(scan_reference_piece, pieces, index, num_workers, task_nodes,
                                   on_pieces, **kwargs)
    else:
        def local() -> Iterator[tuple[pa.Table, dict[str, int]]]:
            for p in pieces:
                out = scan_reference_piece(p, index, **kwargs)
                if on_pieces is not None:
                    on_pieces([p])
                yield out

        done = local()
    try:
        for matches, got in done:
            for k, v in got.items():
                counts[k] = counts.get(k, 0) + v
            yield matches
    except PieceError as exc:  # the worker's one-line InputError
        raise InputError(str(exc)) from None


def csv_matches(index: Any, files: list[str], ref: Any, counts: dict[str, Any],
                quarantine: list[dict[str, Any]], batch_size: int,
                progress: ScanProgress | None = None) -> Iterator[pa.Table]:
    """CSV references: one file at a time through the data contract, scanned on the driver;
    `progress` counts a file's bytes in proportion to its rows scanned."""
    cfg = index.config
    for f in files:
        got = read_side(replace(ref_input(ref), path=f), "reference")
        counts["read"] += got.read
        counts["used"] += got.used
        counts["quarantined"] += len(got.quarantine)
        counts["not_selected"] = counts.get("not_selected", 0) + got.used - got.table.num_rows
        quarantine += got.quarantine
        t = got.table
        size = os.path.getsize(f)
        for start in range(0, t.num_rows, batch_size):
            b = t.slice(start, batch_size)
            out = scan_batch(index, pa.table({cfg.text_column: b["question"],
                                              cfg.id_column: b["row_id"]}))
            if progress is not None:
                progress.within(size * (start + b.num_rows) // t.num_rows)
            yield out
        if progress is not None:
            progress.finished(1, size)


def scan_references(index: Any, ref: Any, executor: str, num_workers: int | None,
                    batch_size: int, piece_bytes: int = PIECE_BYTES,
                    task_nodes: Any = None, progress: bool = True, **meter: Any
                    ) -> tuple[pa.Table, dict[str, Any]]:
    """Scan every reference file past the eval index; (per-eval result, reference accounting).
    `task_nodes` (ray.py `TaskNodes`): where the Ray tasks ran, with executor=ray. `progress`:
    a live progress line on stderr (`ScanProgress`; `meter`: its Meter's options)."""
    groups = reference_files(ref)
    counts: dict[str, Any] = {"files": sum(len(v) for v in groups.values()), "read": 0, "used": 0,
                              "quarantined": 0}
    quarantine: list[dict[str, Any]] = []
    pieces = {fmt: plan_reference_pieces(groups[fmt], fmt, piece_bytes)
              for fmt in ("parquet", "jsonl")}
    planned = pieces["parquet"] + pieces["jsonl"]
    bar = ScanProgress(len(planned) + len(groups["csv"]),
                       sum(p.nbytes for p in planned)
                       + sum(os.path.getsize(f) for f in groups["csv"]),
                       enabled=progress, **meter)
    parts: list[Any] = []
    for fmt in ("parquet", "jsonl"):
        if groups[fmt]:
            parts.append(reference_matches(index, pieces[fmt], ref, counts, executor,
                                           num_workers, batch_size, task_nodes, bar))
    parts.append(csv_matches(index, groups["csv"], ref, counts, quarantine, batch_size, bar))
    try:
        result = best_matches(index, (m for part in parts for m in part))
    except BaseException:
        bar.close(final=False)
        raise
    bar.close()
    counts["scanned"] = counts["used"] - counts.get("not_selected", 0)
    counts["quarantine"] = quarantine
    return result, counts
