"""The data contract read as a stream, for jobs.dedup: the same rows as `load_prompts`
(aligncultura/data/reader.py), handed over piece by piece instead of held as one table.

`stream_prompts` runs the contract's own file readers (aligncultura/data/sources.py) into
its own `Collector` (aligncultura/data/collect.py), with two changes: each piece of usable rows
goes to a callback as soon as it is decided, and the ids seen so far (the contract keeps ids
unique, the first occurrence wins) are held as 128-bit digests in sorted arrays
(`CompactIds`: 8 bytes an id in memory, 16 on disk) instead of a dict of Python strings. JSON lines are read in
the contract's chunks of ~16 MB, Parquet files in batches of as much (`_read_parquet`, the
contract's `read_parquet` one batch at a time); CSV files are read whole by the contract.

The split and the row selection are global: `split_codes` and `select_rows` give exactly what
the contract's `assign_splits` and `select` (aligncultura/data/split.py) give, from per-row
arrays (content hash, class, id digests) kept by the caller. tests/test_dedup_streaming.py
holds all of this to `load_prompts` row for row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aligncultura.data import sources
from aligncultura.data.collect import Collector
from aligncultura.data.columns import is_string
from aligncultura.data.reader import PROMPT_SCHEMA, resolve_files
from aligncultura.data.sources import read_csv, read_jsonl
from aligncultura.data.split import assign_splits, select
from aligncultura.errors import InputError

SPLITS = ("train", "val", "test")  # split codes 0, 1, 2


def digests(values: Iterable[str]) -> np.ndarray:
    """(n, 2) uint64: the 128-bit BLAKE2b digest of each string's UTF-8 bytes."""
    blake = hashlib.blake2b
    raw = b"".join(blake(v.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                   for v in values)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2).astype(np.uint64)


class _Run:
    """A sorted run of CompactIds: the digests' top halves in memory; each one's (bottom half,
    value), only read when the top half matches, in memory or in a file."""

    def __init__(self, hi: np.ndarray, cold: np.ndarray, path: Path | None):
        self.hi, self.path = hi, path
        self._cold = cold if path is None else None
        if path is not None:
            np.ascontiguousarray(cold).tofile(path)

    def cold(self, pos: np.ndarray | None = None) -> np.ndarray:
        if self.path is None:
            return self._cold if pos is None else self._cold[pos]
        mm = np.memmap(self.path, dtype=np.uint64, mode="r").reshape(-1, 2)
        out = np.array(mm if pos is None else mm[pos])
        del mm
        return out

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class CompactIds:
    """The contract's `seen` (id -> where its first row is) for millions of ids: each id is a
    128-bit digest in sorted runs (merged while they are small, like an LSM tree; a run stops
    growing at _MAX_RUN ids so a merge never copies much), plus a small dict for ids added one
    at a time. Only the digests' top halves stay in memory (8 bytes an id); bottom halves and
    values go to files in `root` (None: kept in memory too) and are read for the ids whose top
    half matches. Offers the dict operations Collector uses: get, [] =, in,
    keys().isdisjoint, update."""

    _FLUSH = 1 << 14
    _MAX_RUN = 1 << 18

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.runs: list[_Run] = []
        self.pending: dict[bytes, int] = {}
        self._files = 0

    def keys(self) -> CompactIds:
        return self

    def _find(self, d: np.ndarray) -> np.ndarray:
        """Value of each digest (rows of d), -1 where absent."""
        out = np.full(len(d), -1, dtype=np.int64)
        for run in self.runs:
            pos = np.searchsorted(run.hi, d[:, 0])
            k = np.flatnonzero(pos < len(run.hi))
            k = k[run.hi[pos[k]] == d[k, 0]]
            while len(k):  # queries whose top half is at pos: compare the bottom halves
                cold = run.cold(pos[k])
                match = cold[:, 0] == d[k, 1]
                out[k[match]] = cold[match, 1].astype(np.int64)
                k = k[~match]  # another id shares the top 64 bits: try the next entry
                pos[k] += 1
                k = k[pos[k] < len(run.hi)]
                k = k[run.hi[pos[k]] == d[k, 0]]
        if self.pending:
            raw = d.astype("<u8").tobytes()
            for k in range(len(d)):
                v = self.pending.get(raw[16 * k: 16 * k + 16])
                if v is not None:
                    out[k] = v
        return out

    def _run(self, hi: np.ndarray, cold: np.ndarray) -> _Run:
        order = np.argsort(hi, kind="stable")
        path = None
        if self.root is not None:
            self._files += 1
            path = Path(self.root) / f"ids-{self._files}.bin"
        return _Run(hi[order], cold[order], path)

    def _add_run(self, d: np.ndarray, values: np.ndarray) -> None:
        self.runs.append(self._run(d[:, 0].copy(), np.stack([d[:, 1], values.astype(np.uint64)],
                                                            axis=1)))
        while len(self.runs) > 1 and 2 * len(self.runs[-1].hi) >= len(self.runs[-2].hi) \
                and len(self.runs[-1].hi) + len(self.runs[-2].hi) <= self._MAX_RUN:
            b, a = self.runs.pop(), self.runs.pop()
            merged = self._run(np.concatenate([a.hi, b.hi]), np.concatenate([a.cold(), b.cold()]))
            a.drop()
            b.drop()
            self.runs.append(merged)

    def _flush(self) -> None:
        if self.pending:
            raw = b"".join(self.pending)
            d = np.frombuffer(raw, dtype="<u8").reshape(-1, 2).astype(np.uint64)
            values = np.fromiter(self.pending.values(), dtype=np.int64, count=len(self.pending))
            self.pending = {}
            self._add_run(d, values)

    def get(self, rid: str, default: Any = None) -> Any:
        v = int(self._find(digests([rid]))[0])
        return default if v < 0 else v

    def __contains__(self, rid: object) -> bool:
        return (bool(self.runs) or bool(self.pending)) and self.get(str(rid)) is not None

    def __setitem__(self, rid: str, value: int) -> None:
        self.pending[digests([rid]).astype("<u8").tobytes()] = int(value)
        if len(self.pending) >= self._FLUSH:
            self._flush()

    def isdisjoint(self, ids: Iterable[str]) -> bool:
        ids = list(ids)
        if not ids or not (self.runs or self.pending):
            return True
        return bool((self._find(digests(ids)) < 0).all())

    def update(self, pairs: Iterable[tuple[str, int]]) -> None:
        pairs = list(pairs)
        if pairs:
            self._flush()
            ids, values = zip(*pairs, strict=True)
            self._add_run(digests(ids), np.asarray(values, dtype=np.int64))


class _Sink(list):
    """Collector.tables that hands every appended piece to a callback instead of keeping it."""

    def __init__(self, fn: Callable[[pa.Table], None]):
        super().__init__()
        self.fn = fn

    def append(self, table: pa.Table) -> None:
        self.fn(table)


@dataclass
class StreamResult:
    """The accounting of `load_prompts` (reader.py ReadResult.counts) without the table."""

    files: list[str]
    read: int = 0
    used: int = 0
    quarantine: list[dict[str, Any]] = field(default_factory=list)


def stream_prompts(cfg: Any, key: str, explicit: Collection[str] | None,
                   on_table: Callable[[pa.Table], None], workdir: Path | None = None,
                   on_read: Callable[[int, int], None] | None = None) -> StreamResult:
    """Read an input through the data contract, calling `on_table` with each piece of usable
    rows (PROMPT_SCHEMA, input order, ids unique) as soon as it is decided; the same rows
    and errors as `read_input` (reader.py), before any split. `workdir`: where `CompactIds`
    keeps the ids' cold halves (None: in memory). `on_read(done, total)`: progress in bytes
    of the input files (their sizes on disk), once with done=0 before reading, after each
    chunk (JSON lines: the file position), batch (Parquet: its share of the file's rows) or
    file (CSV) has been handed to `on_table`; its last call has done == total."""
    files, fmt = resolve_files(cfg, key)
    sizes = [p.stat().st_size for p in files]
    total = sum(sizes)
    now = [0, 0]  # bytes of the files before this one, this one's size

    def read(position: int) -> None:
        """`position` bytes of the current file are read and handed over."""
        if on_read is not None:
            on_read(now[0] + min(position, now[1]), total)

    read(0)
    c = Collector(cfg, key, explicit, PROMPT_SCHEMA)
    used = [0]

    def take(table: pa.Table) -> None:
        if table.num_rows:
            used[0] += table.num_rows
            on_table(table)

    c.tables = _Sink(take)
    c.seen = CompactIds(workdir)  # type: ignore[assignment]
    for k, path in enumerate(files):
        now[:] = [sum(sizes[:k]), sizes[k]]
        c.start_file()
        if fmt == "parquet":
            _read_parquet(path, c, key, lambda share: read(now[1] * share[0] // share[1]))
        elif fmt == "csv":
            read_csv(path, c)
        else:
            read_jsonl(path, c, read)
        if not c.checked and fmt != "jsonl":
            raise InputError(f"{path}: file is empty (no header row); set {key}.path to a "
                             "file with data")
        read(sizes[k])
    if not used[0]:  # the message of reader.read_input
        where = files[0] if len(files) == 1 else files[0].parent
        q = c.quarantine
        first = f"; first problem: line {q[0]['line']}: {q[0]['reason']}" if q else ""
        fix = (f"; check {key}.format and {key}.encoding" if c.read
               else f"; set {key}.path to a file with data")
        raise InputError(f"{where}: no usable row in input '{cfg.name}' ({c.read} read)"
                         f"{first}{fix}")
    return StreamResult([str(p) for p in files], c.read, used[0], c.quarantine)


def _read_parquet(path: Path, c: Collector, key: str,
                  on_rows: Callable[[tuple[int, int]], None] | None = None) -> None:
    """sources.py `read_parquet` in batches of ~CHUNK_BYTES: the same checks, rows, line
    numbers (row k of the file is line k + 1) and messages, without the whole table.
    `on_rows((rows, of))`: after each batch is handed over, the rows of the file read so far."""
    import pyarrow.parquet as pq

    def unreadable(exc: BaseException) -> InputError:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return InputError(f"{path}: not a readable Parquet file ({why}); check {key}.path "
                          f"and {key}.format")

    try:
        pf = pq.ParquetFile(path)
        schema, meta = pf.schema_arrow, pf.metadata
    except (OSError, pa.ArrowException) as exc:
        raise unreadable(exc) from None
    if not meta.num_rows:
        return
    c.check(path, schema.names)
    f = c.fields
    typed = f.text in schema.names and is_string(schema.field(f.text).type)
    for name in (f.id, f.cls, *(col for _, col in f.refs)):
        if name and name in schema.names:
            t = schema.field(name).type
            typed &= is_string(t) or (pa.types.is_integer(t) and name != f.text)
    size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    batches = pf.iter_batches(batch_size=max(1, int(sources.CHUNK_BYTES * meta.num_rows
                                                    / max(size, 1))))
    offset = 0
    while True:
        try:
            table = pa.Table.from_batches([next(batches)])
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            raise unreadable(exc) from None
        at = offset
        offset += table.num_rows
        if typed:
            c.add_arrow(path, table, lambda k, t=table: t.slice(k, 1).to_pylist()[0],
                        lambda k, at=at: at + k + 1)
        else:
            c.add_records(path, ((at + i + 1, rec, None)
                                 for i, rec in enumerate(table.to_pylist())))
        if on_rows is not None:
            on_rows((offset, meta.num_rows))


def hash_codes(content_hash: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The contract's `content_hash` (16 lowercase hex digits) as uint64, exactly."""
    col = content_hash.combine_chunks() if isinstance(content_hash, pa.ChunkedArray) \
        else content_hash
    col = col.cast(pa.string())
    if col.null_count == 0 and len(col):
        offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)
        offsets = offsets[col.offset: col.offset + len(col) + 1]
        if (np.diff(offsets) == 16).all():
            data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
            nib = np.where(data >= ord("a"), data - (ord("a") - 10), data - ord("0"))
            if (nib < 16).all():
                nib = nib.reshape(-1, 16).astype(np.uint64)
                out = np.zeros(len(col), dtype=np.uint64)
                for k in range(16):
                    out = (out << np.uint64(4)) | nib[:, k]
                return out
    return np.array([int(h, 16) for h in col.to_pylist()], dtype=np.uint64)


def split_codes(content_hash: np.ndarray, class_id: np.ndarray, class_null: np.ndarray,
                fractions: Sequence[float], seed: int, key: str) -> np.ndarray:
    """Per row 0 (train), 1 (val) or 2 (test): `assign_splits` (split.py) from the rows'
    content hashes (`hash_codes`) and class ids (class_null: no class). A group of rows with
    one content hash takes its first row's class; within a class the groups are ordered by
    the same seeded SHA-1 keys and cut by the same rounding."""
    assign_splits(PROMPT_SCHEMA.empty_table(), tuple(fractions), seed, key)  # its checks
    _, f_val, f_test = fractions
    uniq, first, inv = np.unique(content_hash, return_index=True, return_inverse=True)
    cls, null = class_id[first], class_null[first]  # each group's first row
    del first
    keys = bytearray()
    for a in range(0, len(uniq), 1 << 16):  # Python values for 64k groups at a time
        b = a + (1 << 16)
        keys += b"".join(
            hashlib.sha1(f"{seed}:{'None' if nl else c}:{h:016x}".encode()).digest()
            for h, c, nl in zip(uniq[a:b].tolist(), cls[a:b].tolist(), null[a:b].tolist(),
                                strict=True))
    mat = np.frombuffer(keys, dtype=np.uint8).reshape(-1, 20)
    k1 = mat[:, :8].copy().view(">u8").ravel()  # the hex digest's order, in 3 big-endian parts
    k2 = mat[:, 8:16].copy().view(">u8").ravel()
    k3 = mat[:, 16:].copy().view(">u4").ravel()
    del mat, keys
    stratum = np.where(null, np.iinfo(np.int64).min, cls.astype(np.int64))
    order = np.lexsort((k3, k2, k1, stratum))
    del k1, k2, k3
    s = stratum[order]
    bounds = np.r_[np.flatnonzero(np.r_[True, s[1:] != s[:-1]]), len(s)].tolist()
    del s, stratum
    group = np.zeros(len(uniq), dtype=np.uint8)  # train
    for st, en in zip(bounds[:-1], bounds[1:], strict=True):
        n = en - st
        v = min(en, st + int(n * f_val + 0.5))  # split.py's rounding
        t = min(en, v + int(n * f_test + 0.5))
        group[order[st:v]] = 1
        group[order[v:t]] = 2
    return group[inv]


def select_rows(splits: np.ndarray, row_ids: Callable[[np.ndarray], list[str]], split: str,
                limit: int | None, seed: int, key: str) -> np.ndarray:
    """Positions of the rows `select` (split.py) keeps, ascending: the rows of one split (or
    all), then the first `limit` by the seeded SHA-1 key of their ids. `row_ids(positions)`
    gives the ids of those rows (asked only with a limit)."""
    select(PROMPT_SCHEMA.empty_table(), split, limit, seed, key)  # its checks
    rows = np.arange(len(splits), dtype=np.int64) if split == "all" else \
        np.flatnonzero(splits == SPLITS.index(split))
    if limit is None or len(rows) <= 0:
        return rows
    keys = b"".join(hashlib.sha1(f"{seed}:{rid}".encode()).digest() for rid in row_ids(rows))
    mat = np.frombuffer(keys, dtype=np.uint8).reshape(-1, 20)
    order = np.lexsort((mat[:, 16:].copy().view(">u4").ravel(),
                        mat[:, 8:16].copy().view(">u8").ravel(),
                        mat[:, :8].copy().view(">u8").ravel()))
    return np.sort(rows[order[:limit]])
