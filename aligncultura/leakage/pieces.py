"""Reference files cut into pieces: the unit of work of the scan runners.

    pieces = plan_pieces(list_files("refs/", "parquet"), "parquet")
    for piece in pieces:
        for batch in read_piece(piece, ["text", "id"], batch_size=1024): ...

A piece holds about `piece_bytes` of data, so a Ray task takes seconds, not minutes, and
workers finish together whatever the file sizes. Each worker reads its own piece, so nothing
is read twice, read ahead or held in the object store. (With Ray Data's `read_parquet`, Ray
2.60 first read all files in one task into the object store, then scanned multi-batch blocks
that left a worker idle at the tail: 1.36-1.54x on 2 workers against 1.66x with pieces;
BENCHMARKS.md.)

- Parquet: a run of consecutive row groups of one file, up to `piece_bytes` (uncompressed,
  from the file's metadata); a row group larger than that is cut into row ranges (each
  range's reader decodes the row group and skips to its rows: decoding is ~100x faster than
  scanning, so the waste is small).
- JSON lines: a byte range of one file holding the lines that *start* in it (Hadoop's rule),
  so every line belongs to exactly one piece however the ranges fall.

Each piece carries `nbytes`, its share of its file's size on disk, for progress (MB/s): a
JSON piece's byte range; a Parquet piece's row groups' compressed sizes (a row range: its
share of the rows), scaled so that the pieces of a file add up to the file's size exactly.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import pyarrow as pa

PIECE_BYTES = 16_000_000  # ~3-4 s of scanning per piece on one core (BENCHMARKS.md)
FORMATS = ("parquet", "json")


class MissingColumn(KeyError):
    """A column the scan needs is not in the file (`column`, `available` say which)."""

    def __init__(self, path: str, column: str, available: list[str]):
        super().__init__(column)
        self.path, self.column, self.available = path, column, available

    def __str__(self) -> str:
        return (f"{self.path}: column {self.column!r} not found; columns are: "
                f"{', '.join(self.available[:12])}")


@dataclass(frozen=True)
class Piece:
    path: str
    format: str  # parquet | json
    row_groups: tuple[int, ...] = ()  # parquet: consecutive row groups
    start: int = 0  # parquet: first row within those row groups; json: first byte
    stop: int | None = None  # exclusive; None: to the end
    # the piece's share of its file's size on disk (progress only; not part of its identity)
    nbytes: int = field(default=0, compare=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Piece:
        d = json.loads(text)
        return cls(**{**d, "row_groups": tuple(d["row_groups"])})


def check_format(fmt: str) -> str:
    if fmt == "jsonl":
        return "json"
    if fmt not in FORMATS:
        raise ValueError(f"reference format {fmt!r}: use 'parquet' or 'json' (JSON lines)")
    return fmt


def list_files(paths, fmt: str) -> list[str]:
    """Files of `paths` (a path or a list; directories are listed, sorted, as pyarrow does)."""
    import pyarrow.dataset as ds

    fmt = check_format(fmt)
    files: list[str] = []
    for p in [paths] if isinstance(paths, str | os.PathLike) else paths:
        files += sorted(ds.dataset(str(p), format=fmt).files) if os.path.isdir(p) else [str(p)]
    return files


def plan_pieces(files: list[str], fmt: str, piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """Pieces of about `piece_bytes` covering every row of `files` exactly once, in order."""
    fmt = check_format(fmt)
    if piece_bytes < 1:
        raise ValueError(f"piece_bytes={piece_bytes}: must be >= 1")
    out: list[Piece] = []
    for f in files:
        out += _parquet_pieces(f, piece_bytes) if fmt == "parquet" else _json_pieces(f, piece_bytes)
    return out


def _parquet_pieces(path: str, piece_bytes: int) -> list[Piece]:
    import pyarrow.parquet as pq

    md = pq.read_metadata(path)
    out: list[Piece] = []
    weights: list[int] = []  # compressed bytes of each piece (progress: `_spread`)
    run: list[int] = []
    run_bytes = run_disk = 0
    for rg in range(md.num_row_groups):
        meta = md.row_group(rg)
        rows, size = meta.num_rows, max(meta.total_byte_size, 1)
        if rows == 0:
            continue
        disk = sum(meta.column(c).total_compressed_size for c in range(meta.num_columns))
        if size > piece_bytes and rows > 1:  # cut a big row group into row ranges
            if run:
                out.append(Piece(path, "parquet", tuple(run)))
                weights.append(run_disk)
                run, run_bytes, run_disk = [], 0, 0
            k = min(rows, -(-size // piece_bytes))
            edges = [rows * i // k for i in range(k + 1)]
            for a, b in zip(edges, edges[1:], strict=False):
                if b > a:
                    out.append(Piece(path, "parquet", (rg,), a, b))
                    weights.append(disk * b // rows - disk * a // rows)
            continue
        if run and run_bytes + size > piece_bytes:
            out.append(Piece(path, "parquet", tuple(run)))
            weights.append(run_disk)
            run, run_bytes, run_disk = [], 0, 0
        run.append(rg)
        run_bytes += size
        run_disk += disk
    if run:
        out.append(Piece(path, "parquet", tuple(run)))
        weights.append(run_disk)
    return _spread(out, weights, os.path.getsize(path))


def _spread(pieces: list[Piece], weights: list[int], size: int) -> list[Piece]:
    """The pieces with `nbytes` in proportion to `weights`, adding up to `size` exactly (the
    file's header, footer and empty row groups spread over its pieces)."""
    if not pieces:
        return pieces
    total = sum(weights)
    cum, edges = 0, [0]
    for i, w in enumerate(weights):
        cum += w
        edges.append(size * cum // total if total else size * (i + 1) // len(weights))
    return [replace(p, nbytes=b - a) for p, a, b in zip(pieces, edges[:-1], edges[1:], strict=True)]


def _json_pieces(path: str, piece_bytes: int) -> list[Piece]:
    size = os.path.getsize(path)
    if size == 0:
        return []
    return [Piece(path, "json", (), a, min(a + piece_bytes, size), min(a + piece_bytes, size) - a)
            for a in range(0, size, piece_bytes)]


def read_piece(piece: Piece, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """The piece's rows, `columns` only, in batches of at most `batch_size` rows.

    A missing column raises MissingColumn; unreadable data raises pyarrow's / the OS's error.
    """
    if piece.format == "parquet":
        yield from _read_parquet(piece, columns, batch_size)
    else:
        yield from _read_json(piece, columns, batch_size)


def _read_parquet(piece: Piece, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(piece.path)
    names = pf.schema_arrow.names
    for c in columns:
        if c not in names:
            raise MissingColumn(piece.path, c, names)
    pos, stop = 0, piece.stop
    for b in pf.iter_batches(batch_size=batch_size, row_groups=list(piece.row_groups),
                             columns=columns, use_threads=False):
        a, z = max(piece.start - pos, 0), b.num_rows if stop is None else min(stop - pos, b.num_rows)
        pos += b.num_rows
        if z > a:
            yield b.slice(a, z - a) if (a, z) != (0, b.num_rows) else b
        if stop is not None and pos >= stop:
            return


def _json_lines(piece: Piece) -> bytes:
    """The bytes of the lines that start in [start, stop)."""
    with open(piece.path, "rb") as f:
        start = piece.start
        if start > 0:  # the line running into `start` belongs to the piece before
            f.seek(start - 1)
            f.readline()
            start = f.tell()
        stop = piece.stop if piece.stop is not None else os.fstat(f.fileno()).st_size
        if start >= stop:
            return b""
        f.seek(start)
        data = f.read(stop - start)
        if not data.endswith(b"\n"):
            data += f.readline()  # finish the last line that starts before `stop`
    return data


def _read_json(piece: Piece, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pj

    data = _json_lines(piece)
    if not data.strip():
        return
    # one block for the whole piece: a line of any length parses (pyarrow's default block
    # of 1 MB rejects longer lines)
    table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(
        block_size=len(data) + 1, use_threads=False))
    names = table.schema.names
    for c in columns:
        if c not in names:
            raise MissingColumn(piece.path, c, names)
    yield from table.select(columns).to_batches(max_chunksize=batch_size)
