"""Scheduling: run a request table through an engine, in this process or on Ray Data.

Stages never know where they run. `run_requests(requests, ...)` is the one request loop: row
cache, engine, progress and timing. Underneath, `complete(requests, ...)` yields completion
batches as they finish (each persisted to the row cache at once) whichever executor the config
names:
- ``local``: one `LLMStage` in this process, kept for the job's life and reused by every call
  with the same model (a benchmark whose model and judge are one preset starts one engine);
- ``ray``: a Ray Data ``map_batches`` actor pool of `LLMStage` replicas placed by
  ``engine.replicas``, ``num_cpus_per_replica`` and ``num_gpus_per_replica``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.cluster.ray_session import init_ray
from aligncultura.config import plain_dict
from aligncultura.engine.models import ResolvedModel
from aligncultura.engine.progress import Progress
from aligncultura.engine.requests import (
    COMPLETION_SCHEMA,
    failed_completions,
    identities,
    request_table,
)

_LOCAL_ENGINES: dict[str, Any] = {}
ENGINE_START_TIMEOUT_S = 1800  # a replica loading an 8B checkpoint from a slow filesystem
NODE_LOSS_WAIT_S = 45.0  # how long a retry waits for Ray to declare a lost node dead


def _stage_kwargs(model: ResolvedModel, model_cfg: Any, engine_cfg: Any) -> dict[str, Any]:
    engine_kwargs = {**plain_dict(engine_cfg.engine_kwargs), **plain_dict(model_cfg.engine_kwargs)}
    if model_cfg.trust_remote_code:
        engine_kwargs["trust_remote_code"] = True
    return {
        "model": model.to_dict(),
        "engine_kwargs": engine_kwargs,
        "chat_template_kwargs": plain_dict(model_cfg.chat_template_kwargs),
        "threads": engine_cfg.threads,
        "env": {k: str(v) for k, v in plain_dict(engine_cfg.env).items()},
        "cpu": engine_cfg.num_gpus_per_replica == 0,
        "opens_think": bool(model_cfg.get("reasoning_opens_think")),
    }


def _engine_key(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, default=str)


def local_engine(model: ResolvedModel, model_cfg: Any, engine_cfg: Any):
    from aligncultura.engine.vllm_stage import LLMStage

    kwargs = _stage_kwargs(model, model_cfg, engine_cfg)
    key = _engine_key(kwargs)
    if key not in _LOCAL_ENGINES:
        _LOCAL_ENGINES[key] = LLMStage(**kwargs)
    return _LOCAL_ENGINES[key]


def actor_pool(replicas: int):
    """The engine stage's Ray Data compute strategy: `replicas` actors, one call at a time each,
    run on the actor's main thread.

    By default Ray Data wraps an actor UDF so that `__init__` runs on the actor's main thread
    and every `__call__` on a separate executor thread. vLLM's CPU worker binds its OpenMP
    threads when the engine starts, i.e. for the constructing thread; calls from another
    thread get a fresh, unbound OpenMP team and ran ~20% slower here (bench/bench_engine.py:
    the engine's two compute threads at 84% + 55% CPU instead of 98% + 97%).
    `enable_true_multi_threading` drops that wrapper; `max_concurrent_calls_per_actor=1`
    keeps one batch at a time per engine (vllm.LLM is not thread-safe).
    """
    import ray

    return ray.data.ActorPoolStrategy(size=replicas, max_concurrent_calls_per_actor=1,
                                      enable_true_multi_threading=True)


def same_engine(a: tuple[ResolvedModel, Any], b: tuple[ResolvedModel, Any], engine_cfg: Any) -> bool:
    """Would the two (model, model_cfg) pairs load the very same engine?"""
    return a[0].source != "api" and _engine_key(_stage_kwargs(*a, engine_cfg)) == _engine_key(
        _stage_kwargs(*b, engine_cfg))


def complete(requests: pa.Table, model: ResolvedModel, model_cfg: Any,
             engine_cfg: Any, followup: Any = None, cache: Any = None,
             stats: dict | None = None, progress: Progress | None = None) -> Iterator[pa.Table]:
    """Yield completion tables (engine.COMPLETION_SCHEMA) batch by batch as they finish.

    With a `cache` (aligncultura.engine.cache.RowCache), requests whose key is cached are served from
    it first (``cached=True``) and every computed batch is persisted as soon as it arrives; when
    nothing is left to compute no engine starts. `followup` (see `LLMStage.process`) lets the
    same engine serve a second round of requests built from each batch, in the same replica.
    `stats` (a dict) receives ``cached``/``computed`` request counts, and ``fatal`` (the
    reason) when rows were failed because no engine could serve them any more. `progress`
    receives the engines' requests as they finish (between the batches).
    """
    stats = stats if stats is not None else {}
    stats.setdefault("cached", 0)
    stats.setdefault("computed", 0)
    if requests.num_rows == 0:
        return
    if cache is not None:
        hits, todo = [], []
        for i, (ident, key) in enumerate(zip(identities(requests),
                                             requests.column("key").to_pylist(), strict=True)):
            rows = cache.get(key) if key else None
            if rows:
                hits.extend({**r, **ident, "cached": True} for r in rows)
            else:
                todo.append(i)
        stats["cached"] += requests.num_rows - len(todo)
        if hits:
            yield pa.Table.from_pylist(hits, schema=COMPLETION_SCHEMA)
        requests = requests.take(pa.array(todo, pa.int64()))
        if requests.num_rows == 0:
            return
    stats["computed"] += requests.num_rows
    key_of = dict(zip(requests.column("request_id").to_pylist(),
                      requests.column("key").to_pylist(), strict=True))
    for batch in _complete(requests, model, model_cfg, engine_cfg, followup, progress, stats):
        if cache is not None:
            rows = batch.to_pylist()
            for r in rows:  # engines that do not echo keys (API) get them here
                if not r.get("key"):
                    r["key"] = key_of.get(r["request_id"])
            cache.put(rows)
        yield batch


def engine_dataset(requests: pa.Table, stage: Any, kwargs: dict[str, Any], engine_cfg: Any):
    """The Ray Data pipeline of an engine pass: the request table in blocks of
    ``engine.batch_size``, mapped by an actor pool of `stage` replicas placed as
    `placement.plan_replicas` says (checked before any replica starts)."""
    init_ray()  # before `import ray`: it sets the environment Ray reads at import
    import ray

    from aligncultura.engine.placement import cluster_nodes, plan_replicas

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    # hand out rows once every replica has loaded its engine: otherwise the first replica up
    # takes every block of a short pass while the others still load (seen with 2 replicas on
    # 2 nodes and 4 rows: one node did all of them)
    ctx.wait_for_min_actors_s = ENGINE_START_TIMEOUT_S
    gpus, cpus = float(engine_cfg.num_gpus_per_replica or 0), float(engine_cfg.num_cpus_per_replica)
    plan = plan_replicas(cluster_nodes(), int(engine_cfg.replicas), gpus, cpus,
                         kwargs.get("engine_kwargs"))
    print(plan.line(gpus, cpus), flush=True)
    n_blocks = max(1, -(-requests.num_rows // engine_cfg.batch_size))
    ds = ray.data.from_arrow(requests).repartition(n_blocks)
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
    return ds.map_batches(
        stage,
        fn_constructor_kwargs=kwargs,
        batch_size=engine_cfg.batch_size,
        batch_format="pyarrow",
        compute=actor_pool(plan.replicas),
        num_cpus=cpus,
        num_gpus=gpus or None,
        # a lost replica is not restarted by Ray (its constructor arguments live in the object
        # store, so Ray warns at error level that a restart could fail): the pass stops and
        # `_complete_ray` runs the unfinished rows in a new pass, engine.max_restarts times
        max_restarts=0,
        max_task_retries=0,
        scheduling_strategy="SPREAD",  # replicas over every node, not packed onto the first
    )



def _complete(requests, model, model_cfg, engine_cfg, followup, progress=None, stats=None
              ) -> Iterator[pa.Table]:
    if model.source == "api":
        from aligncultura.engine.api import complete_api

        yield from complete_api(requests, model, model_cfg, engine_cfg)
        return
    if engine_cfg.executor == "local":
        stage = local_engine(model, model_cfg, engine_cfg)
        stage.ticks.sink = progress.tick if progress is not None else None
        try:
            for batch in requests.to_batches(max_chunksize=engine_cfg.batch_size):
                yield stage.process(pa.Table.from_batches([batch]), followup)
        finally:
            stage.ticks.sink = None
        return
    if engine_cfg.executor != "ray":
        raise ValueError(f"engine.executor={engine_cfg.executor!r}: use ray or local")
    poller = None
    if progress is not None and progress.meter.enabled:
        from aligncultura.engine.progress import HubPoller, hub_actor

        init_ray()
        poller = HubPoller(hub_actor(), progress)
    try:
        yield from _complete_ray(requests, model, model_cfg, engine_cfg, followup,
                                 poller.hub if poller is not None else None, stats)
    finally:
        if poller is not None:
            poller.stop()


def _complete_ray(requests, model, model_cfg, engine_cfg, followup, hub=None, stats=None
                  ) -> Iterator[pa.Table]:
    """Batches from a Ray Data pass of LLMStage replicas. When a replica is lost for good (its
    node died, or it crashed past ``engine.max_restarts``), Ray Data stops the whole pass: the
    rows not finished then go through a new pass on the replicas the cluster can still place
    (``engine.max_restarts`` such passes at most); only what is left after that is failed,
    with the error that stopped the last pass. When the surviving cluster cannot place a
    replica at all, the rows left are failed at once with the plan's reason. Either way
    ``stats["fatal"]`` holds that reason: the job writes what it has, then exits non-zero."""
    from aligncultura.console import logs as runlog
    from aligncultura.engine.vllm_stage import LLMStage
    from aligncultura.rundir import raise_if_interrupted

    log_dir = runlog.log_dir()
    kwargs = {**_stage_kwargs(model, model_cfg, engine_cfg), "followup": followup,
              "progress": hub, "log_dir": str(log_dir) if log_dir is not None else None}
    from aligncultura.engine.placement import cluster_nodes
    from aligncultura.errors import JobError

    stats = stats if stats is not None else {}
    todo, retries, cfg = requests, 0, engine_cfg
    reason = ""
    while True:
        seen: set[str] = set()
        try:
            ds = engine_dataset(todo, LLMStage, kwargs, cfg)  # a plan that cannot run: JobError
        except JobError as exc:
            if not retries:
                raise  # before any engine started: the plan line is the whole error
            error = (f"no engine replica can be placed any more after {reason[:200]} "
                     f"({retries} retr{'y' if retries == 1 else 'ies'}): {exc}")
            stats["fatal"] = error
            print(f"warning: {error}; the {todo.num_rows} rows not finished are marked failed",
                  file=sys.stderr, flush=True)
            yield failed_completions(todo, error)
            return
        nodes_before = {n.name for n in cluster_nodes()}
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None,
                                         prefetch_batches=0):
                seen.update(batch.column("request_id").to_pylist())
                yield batch
                raise_if_interrupted()  # the batch is persisted by now
            return
        except Exception as exc:  # noqa: BLE001 - a replica (or its node) was lost
            # a preemption signal that arrived inside Ray's C++ code comes back as some other
            # error (a SystemError "returned a result with an exception set"): it stops the job
            raise_if_interrupted()
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            left = [i for i, rid in enumerate(todo.column("request_id").to_pylist())
                    if rid not in seen]
            todo = todo.take(pa.array(left, pa.int64()))
            if retries < int(engine_cfg.max_restarts) and todo.num_rows:
                retries += 1
                print(f"warning: an engine pass stopped ({reason[:200]}); retrying its "
                      f"{todo.num_rows} unfinished rows on the replicas the cluster can still "
                      f"place (retry {retries}/{engine_cfg.max_restarts})", file=sys.stderr,
                      flush=True)
                _settle(nodes_before, cluster_nodes)
                cfg = _with_replicas(engine_cfg, 0)  # as many as the surviving nodes hold
                continue
            error = f"engine failed ({retries} retr{'y' if retries == 1 else 'ies'} of the " \
                    f"unfinished rows): {reason}"
            stats["fatal"] = error
            print(f"warning: {error}; the {todo.num_rows} rows not finished are marked failed",
                  file=sys.stderr)
            yield failed_completions(todo, error)
            return


def _settle(nodes_before: set[str], live: Any, timeout_s: float = NODE_LOSS_WAIT_S) -> None:
    """Before a retry, give Ray the time to notice a lost node (its health checks take ~15-30
    s): wait until a node of `nodes_before` is gone from `live()` or `timeout_s` passed, so the
    retry is planned on the nodes that really are left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if nodes_before - {n.name for n in live()}:
            return
        time.sleep(1.0)


def _with_replicas(engine_cfg: Any, replicas: int) -> Any:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(plain_dict(engine_cfg)) if not OmegaConf.is_config(engine_cfg) \
        else engine_cfg.copy()
    OmegaConf.update(cfg, "replicas", replicas, force_add=True)
    return cfg


@dataclass
class Pass:
    """What one pass of a request table through an engine returned."""

    completions: pa.Table  # COMPLETION_SCHEMA: every row, cached or computed, followups too
    wall_s: float
    cached: int  # requests served from the row cache
    computed: int  # requests sent to an engine
    error: str | None = None  # rows were failed because no engine could serve them any more


def run_requests(requests: list[dict[str, Any]] | pa.Table, model: ResolvedModel, model_cfg: Any,
                 engine_cfg: Any, *, label: str, cache: Any = None, followup: Any = None,
                 progress: bool = True) -> Pass:
    """The request loop every stage uses: the row cache, then the engine, with a progress line.

    `requests`: request dicts (see `requests.request_table`; keyed here with the cache's salt)
    or a request table. Progress counts these requests; its token rate counts every token the
    engine produced, followup requests included (a shared generate + judge pass rates both).
    """
    if not isinstance(requests, pa.Table):
        requests = request_table(requests, cache.salt if cache is not None else None)
    stats: dict[str, int] = {}
    own = set(requests.column("request_id").to_pylist())
    bar = Progress(label, len(own), enabled=progress, followup=followup is not None)
    parts = []
    t0 = time.perf_counter()
    try:
        for batch in complete(requests, model, model_cfg, engine_cfg, followup, cache=cache,
                              stats=stats, progress=bar):
            parts.append(batch)
            mine = pa.array([rid in own for rid in batch.column("request_id").to_pylist()])
            main, side = batch.filter(mine), batch.filter(pc.invert(mine))
            live = side.filter(pc.invert(pc.fill_null(side.column("cached"), False)))
            bar.update(len(set(main.column("request_id").to_pylist())), batch=main,
                       tokens=sum(live.column("output_tokens").to_pylist()))
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    completions = pa.concat_tables(parts) if parts else COMPLETION_SCHEMA.empty_table()
    return Pass(completions, wall, stats.get("cached", 0), stats.get("computed", 0),
                stats.get("fatal"))
