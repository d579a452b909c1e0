"""Every Ray entry point of the leakage engine; `ray` is imported inside the functions only.

- `scan_ray`: the Ray Data runner of the eval-vs-reference scan (`scan_files` in scan.py is
  the in-process one); `map_pieces_ray` runs any per-piece function, one task per piece;
  `scan_block` is a map_batches function for custom pipelines;
- `init_and_map_pieces`: `map_pieces_ray` after joining Ray with `init_ray`
  (cluster/ray_session.py), for jobs.leakage's references (references.py);
- `ray_fingerprints`: jobs.dedup's fingerprints on Ray Data;
- `cpu_limit`: caps the CPUs a Ray Data dataset may use.

The eval index is broadcast once (`ray.put`) and fetched once per worker process
(`_worker_index`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .pieces import Piece, check_format, list_files, plan_pieces
from .scan import MATCH_SCHEMA, LeakageIndex, best_matches, scan_batch, scan_piece

_WORKER_INDEX: dict[str, LeakageIndex] = {}


def _worker_index(index_ref) -> LeakageIndex:
    """The index behind `index_ref` (`ray.put(index)` or the index), fetched once per process."""
    import ray

    key = index_ref.hex() if isinstance(index_ref, ray.ObjectRef) else str(id(index_ref))
    if key not in _WORKER_INDEX:
        _WORKER_INDEX.clear()
        _WORKER_INDEX[key] = ray.get(index_ref) if isinstance(index_ref, ray.ObjectRef) else index_ref
    return _WORKER_INDEX[key]


def scan_block(batch: pa.Table, index_ref) -> pa.Table:
    """Ray Data map_batches function for custom pipelines: `index_ref` is `ray.put(index)` (or
    the index itself); the index is fetched once per worker process, then `scan_batch`."""
    return scan_batch(_worker_index(index_ref), batch)


@contextmanager
def cpu_limit(num_workers: int | None):
    """Cap the CPUs Ray Data may use (one per task) while the block runs, then restore.

    Unlike a TaskPoolStrategy size this bounds every operator of the dataset. Datasets copy
    the context when created, so create the dataset inside the block, and consume it there.
    """
    import ray

    options = ray.data.DataContext.get_current().execution_options
    saved = options.resource_limits
    if num_workers:
        options.resource_limits = saved.copy(cpu=num_workers)
    try:
        yield
    finally:
        options.resource_limits = saved


class PieceError(ValueError):
    """A piece failed on a Ray worker with a data error; the message is the worker's."""


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]


_PIECE_OUT = pa.schema([
    ("matches", pa.list_(pa.struct(list(MATCH_SCHEMA)))),
    ("counts", pa.string()),  # JSON object of row counts
    ("error", pa.string()),
])


def _piece_task(batch: pa.Table, fn: Callable, index_ref, kwargs: dict) -> pa.Table:
    """Ray Data map function: run `fn(piece, index, **kwargs)` on each piece of the batch."""
    index = _worker_index(index_ref)
    tables, sizes, counts, errors = [], [], [], []
    for text in batch["piece"].to_pylist():
        try:
            matches, count, error = *fn(Piece.from_json(text), index, **kwargs), None
        except (ValueError, KeyError, OSError, pa.ArrowException) as exc:  # data errors
            matches, count, error = MATCH_SCHEMA.empty_table(), {}, _one_line(exc)
        tables.append(matches.cast(MATCH_SCHEMA))
        sizes.append(matches.num_rows)
        counts.append(json.dumps(count))
        errors.append(error)
    values = pa.concat_tables([MATCH_SCHEMA.empty_table(), *tables]).to_struct_array().combine_chunks()
    offsets = pa.array(np.r_[0, np.cumsum(sizes)], pa.int32())
    return pa.Table.from_arrays([pa.ListArray.from_arrays(offsets, values),
                                 pa.array(counts, pa.string()), pa.array(errors, pa.string())],
                                schema=_PIECE_OUT)


def map_pieces_ray(
    fn: Callable, pieces: list[Piece], index: LeakageIndex, num_workers: int | None = None,
    **kwargs,
) -> Iterator[tuple[pa.Table, dict]]:
    """Ray Data: one task per piece running `fn(piece, index, **kwargs) -> (matches, counts)`;
    yields (matches, summed counts) as tasks finish. The index is broadcast once (ray.put).

    `fn` must be importable on the workers (a module-level function). A data error on a
    worker (ValueError, KeyError, OSError, pyarrow's) stops the scan with PieceError carrying
    the worker's one-line message.
    """
    import ray

    if not pieces:
        return
    with cpu_limit(num_workers):
        items = [{"piece": p.to_json()} for p in pieces]
        out = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _piece_task, fn_kwargs={"fn": fn, "index_ref": ray.put(index), "kwargs": kwargs},
            batch_format="pyarrow", batch_size=1, num_cpus=1,
        )
        for b in out.iter_batches(batch_format="pyarrow", batch_size=None):
            errors = [e for e in b["error"].to_pylist() if e]
            if errors:
                raise PieceError(errors[0])
            total: dict[str, int] = {}
            for text in b["counts"].to_pylist():
                for k, v in json.loads(text).items():
                    total[k] = total.get(k, 0) + v
            flat = pc.list_flatten(b["matches"]).combine_chunks()
            yield pa.Table.from_struct_array(flat).cast(MATCH_SCHEMA), total


def scan_ray(
    index: LeakageIndex, paths, fmt: str = "parquet", num_workers: int | None = None,
    batch_size: int | None = None, piece_bytes: int | None = None,
) -> pa.Table:
    """Ray Data runner: cut the files into pieces of ~`piece_bytes`, scan one piece per task
    (each worker reads its own piece), reduce on the driver.

    Uses the running Ray instance (or starts a local one, as Ray Data does). num_workers caps
    the concurrent scan tasks (None: all CPUs). Same result as `scan_files`.
    """
    fmt = check_format(fmt)
    pieces = plan_pieces(list_files(paths, fmt), fmt,
                         index.config.piece_bytes if piece_bytes is None else piece_bytes)
    found = map_pieces_ray(scan_piece, pieces, index, num_workers, batch_size=batch_size)
    return best_matches(index, (matches for matches, _ in found))


def init_and_map_pieces(
    fn: Callable, pieces: list[Piece], index: Any, num_workers: int | None, **kwargs,
) -> Iterator[tuple[pa.Table, dict]]:
    """Join Ray (`init_ray`: RAY_ADDRESS or a local Ray), then `map_pieces_ray`."""
    from aligncultura.cluster.ray_session import init_ray

    init_ray(num_workers)
    return map_pieces_ray(fn, pieces, index, num_workers, **kwargs)


def _fingerprint_block(batch: pa.Table, dedup_cfg: Any) -> pa.Table:
    """Ray Data map function: fingerprints of one block of texts, keyed by row position."""
    from aligncultura.leakage.clusters import fingerprint_rows

    fp = fingerprint_rows(batch.column("text"), dedup_cfg)
    cols: dict[str, Any] = {"pos": batch.column("pos")}
    for k, v in fp.items():
        cols[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]) \
            if v.ndim == 2 else pa.array(v)
    return pa.table(cols)


def ray_fingerprints(texts: pa.ChunkedArray | pa.Array, dedup_cfg: Any, num_workers: int | None,
                     batch_size: int) -> dict[str, np.ndarray]:
    """`fingerprint_rows` over the texts on Ray Data (blocks of `batch_size` rows), put back
    in row order on the driver."""
    import ray

    from aligncultura.cluster.ray_session import init_ray

    init_ray(num_workers)
    n = len(texts)
    with cpu_limit(num_workers):
        table = pa.table({"pos": pa.array(np.arange(n, dtype=np.int64)), "text": texts})
        ds = ray.data.from_arrow(table).repartition(max(1, -(-n // batch_size)))
        out = ds.map_batches(_fingerprint_block, fn_kwargs={"dedup_cfg": dedup_cfg},
                             batch_format="pyarrow", batch_size=batch_size, num_cpus=1)
        parts = list(out.iter_batches(batch_format="pyarrow", batch_size=None))
    got = pa.concat_tables(parts).combine_chunks()
    pos = got.column("pos").to_numpy()
    if len(pos) != n or not np.array_equal(np.sort(pos), np.arange(n)):
        raise RuntimeError(f"Ray fingerprinting returned {len(pos)} rows for {n} texts")
    order = np.argsort(pos, kind="stable")
    result: dict[str, np.ndarray] = {}
    for k in got.column_names[1:]:
        col = got.column(k).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            arr = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        else:
            arr = col.to_numpy()
        result[k] = arr[order]
    return result
