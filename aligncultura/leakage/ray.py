"""Every Ray entry point of the leakage engine; `ray` is imported inside the functions only.

- `scan_ray`: the Ray Data runner of the eval-vs-reference scan (`scan_files` in scan.py is
  the in-process one); `map_pieces_ray` runs any per-piece function, one task per piece;
  `scan_block` is a map_batches function for custom pipelines;
- `init_and_map_pieces`: `map_pieces_ray` after joining Ray with `init_ray`
  (cluster/ray_session.py), for jobs.leakage's references (references.py);
- `RayFingerprints`: jobs.dedup's block fingerprints as Ray tasks, in order, while it reads;
- `cpu_limit`: caps the CPUs a Ray Data dataset may use;
- `TaskNodes`: per-node counts of the tasks that ran, from the node every task reports.

The eval index is broadcast once (`ray.put`) and fetched once per worker process
(`_worker_index`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
    Ray Data places tasks whose input is small with the SPREAD strategy (its default; the
    knobs to change it are deprecated in Ray 2.60): `map_pieces_ray`'s tasks take one piece
    description each, so they run on every node.
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


def task_where() -> tuple[str, str]:
    """(node IP, task id) of the Ray task that calls it, returned with the task's result."""
    import ray

    return ray.util.get_node_ip_address(), ray.get_runtime_context().get_task_id() or ""


class TaskNodes:
    """Which node ran each Ray task of a job, from the (node, task id) every task returns
    next to its result (`task_where`): no polling of Ray's state API."""

    def __init__(self) -> None:
        self.node_of: dict[str, str] = {}  # task id -> node IP

    def add(self, nodes: Iterable[str], tasks: Iterable[str]) -> None:
        for node, task in zip(nodes, tasks, strict=True):
            self.node_of[task] = node

    def counts(self) -> dict[str, int]:
        """Tasks per node IP, by IP."""
        out: dict[str, int] = {}
        for node in self.node_of.values():
            out[node] = out.get(node, 0) + 1
        return dict(sorted(out.items()))

    def report(self) -> dict[str, Any]:
        """For a job's summary.json: {"tasks": n, "tasks_per_node": {ip: n}}."""
        return {"tasks": len(self.node_of), "tasks_per_node": self.counts()}

    def line(self) -> str:
        """`ray tasks per node: 127.0.0.1=7, 127.0.0.2=6` (or `none`)."""
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"ray tasks per node: {counts or 'none'}"


class PieceError(ValueError):
    """A piece failed on a Ray worker with a data error; the message is the worker's."""


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]


_PIECE_OUT = pa.schema([
    ("matches", pa.list_(pa.struct(list(MATCH_SCHEMA)))),
    ("counts", pa.string()),  # JSON object of row counts
    ("error", pa.string()),
    ("node", pa.string()),  # where the task ran (`task_where`)
    ("task", pa.string()),
    ("piece", pa.string()),  # the piece (`Piece.to_json`), for the driver's progress
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
    node, task = task_where()
    where = [pa.array([x] * len(counts), pa.string()) for x in (node, task)]
    return pa.Table.from_arrays([pa.ListArray.from_arrays(offsets, values),
                                 pa.array(counts, pa.string()), pa.array(errors, pa.string()),
                                 *where, batch["piece"].cast(pa.string())], schema=_PIECE_OUT)


def map_pieces_ray(
    fn: Callable, pieces: list[Piece], index: LeakageIndex, num_workers: int | None = None,
    task_nodes: TaskNodes | None = None, on_pieces: Callable[[list[Piece]], None] | None = None,
    **kwargs,
) -> Iterator[tuple[pa.Table, dict]]:
    """Ray Data: one task per piece running `fn(piece, index, **kwargs) -> (matches, counts)`;
    yields (matches, summed counts) as tasks finish. The index is broadcast once (ray.put).
    Tasks are spread over the nodes (see `cpu_limit`); `task_nodes` learns where each ran;
    `on_pieces` is called with the pieces of each batch of results before it is yielded.

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
            if task_nodes is not None:
                task_nodes.add(b["node"].to_pylist(), b["task"].to_pylist())
            if on_pieces is not None:
                on_pieces([Piece.from_json(text) for text in b["piece"].to_pylist()])
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
    fn: Callable, pieces: list[Piece], index: Any, num_workers: int | None,
    task_nodes: TaskNodes | None = None, on_pieces: Callable[[list[Piece]], None] | None = None,
    **kwargs,
) -> Iterator[tuple[pa.Table, dict]]:
    """Join Ray (`init_ray`: RAY_ADDRESS or a local Ray), then `map_pieces_ray`."""
    from aligncultura.cluster.ray_session import init_ray

    init_ray(num_workers)
    return map_pieces_ray(fn, pieces, index, num_workers, task_nodes, on_pieces, **kwargs)


def _fingerprint_task(texts: pa.Array, dedup_cfg: Any) -> tuple[dict[str, np.ndarray], str, str]:
    """Ray task: `block_fingerprints` of one block of texts, and where it ran."""
    from aligncultura.leakage.dedup_stream import block_fingerprints

    return block_fingerprints(texts, dedup_cfg), *task_where()


class RayFingerprints:
    """jobs.dedup's per-block fingerprints as Ray tasks (dedup_stream.py `LocalFingerprints`
    runs them in this process): a block is submitted as soon as the input has been read that
    far, at most `num_workers` blocks (null: twice the cluster's CPUs) are in flight, and
    results come back in submission order. Tasks use the SPREAD strategy, so they run on every
    node; `task_nodes` learns where each one ran."""

    def __init__(self, dedup_cfg: Any, num_workers: int | None,
                 task_nodes: TaskNodes | None = None):
        self.cfg, self.num_workers, self.nodes = dedup_cfg, num_workers, task_nodes
        self.queue: deque = deque()
        self.task: Any = None

    def _start(self) -> None:
        """Join Ray (`init_ray`) on the first block, so that a bad input fails before."""
        import ray

        from aligncultura.cluster.ray_session import init_ray

        init_ray(self.num_workers)
        self.limit = self.num_workers or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.task = ray.remote(_fingerprint_task).options(num_cpus=1, scheduling_strategy="SPREAD")

    def submit(self, texts: pa.Array | pa.ChunkedArray) -> list[dict[str, np.ndarray]]:
        chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
        # a copy of just these rows: a slice would ship its parent's whole buffers
        block = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
        if self.task is None:
            self._start()
        self.queue.append(self.task.remote(block, self.cfg))
        return self._collect(len(self.queue) - self.limit)

    def finish(self) -> list[dict[str, np.ndarray]]:
        return self._collect(len(self.queue))

    def _collect(self, at_least: int) -> list[dict[str, np.ndarray]]:
        """The finished results at the head of the queue, waiting for the first `at_least`."""
        import ray

        out = []
        while self.queue and (len(out) < at_least or ray.wait([self.queue[0]], timeout=0)[0]):
            fp, node, task = ray.get(self.queue.popleft())
            if self.nodes is not None:
                self.nodes.add([node], [task])
            out.append(fp)
        return out
