"""Scheduling: run a request table through an engine, in this process or on Ray Data.

Stages never know where they run. `complete(requests, ...)` yields completion batches as they
finish (so callers persist shards as they go) whichever executor the config names:
- ``local``: one `LLMStage` in this process, kept for the job's life and reused by every call
  with the same model (a benchmark whose model and judge are one preset starts one engine);
- ``ray``: a Ray Data ``map_batches`` actor pool of `LLMStage` replicas placed by
  ``engine.replicas``, ``num_cpus_per_replica`` and ``num_gpus_per_replica``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from aligncultura.engine import COMPLETION_SCHEMA, REQUEST_SCHEMA, request_table  # noqa: F401
from aligncultura.models import ResolvedModel

_LOCAL_ENGINES: dict[str, Any] = {}


def _stage_kwargs(model: ResolvedModel, model_cfg: Any, engine_cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    def plain(x):
        return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else dict(x or {})

    engine_kwargs = {**plain(engine_cfg.engine_kwargs), **plain(model_cfg.engine_kwargs)}
    if model_cfg.trust_remote_code:
        engine_kwargs["trust_remote_code"] = True
    return {
        "model": model.to_dict(),
        "engine_kwargs": engine_kwargs,
        "chat_template_kwargs": plain(model_cfg.chat_template_kwargs),
        "threads": engine_cfg.threads,
        "env": {k: str(v) for k, v in plain(engine_cfg.env).items()},
        "cpu": engine_cfg.num_gpus_per_replica == 0,
    }


def _engine_key(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, default=str)


def local_engine(model: ResolvedModel, model_cfg: Any, engine_cfg: Any):
    from aligncultura.engine import LLMStage

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


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to RAY_ADDRESS (Slurm, `ray job submit`) or start a local Ray on loopback."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # a local Ray serves this job alone: keep every Ray server (GCS, raylet, workers,
        # agents) on loopback; otherwise Ray binds its gRPC servers to all interfaces, and
        # with RAY_AUTH_MODE=disabled anyone on the network could submit work to it
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {"env_vars": {"RAY_AUTH_MODE": "disabled"}}
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # a `ray job submit` entrypoint: the job's
        env = None  # runtime env applies; Ray refuses to merge two that set the same variable
    # ray.init replaces the driver's SIGTERM handler with sys.exit: keep the job's own
    # (jobkit.guard_signals flushes and records the interruption), or Slurm's preemption
    # SIGTERM would end the job without saying how to resume
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=env,
                     log_to_driver=False, _node_ip_address="127.0.0.1")
    except SystemExit as exc:  # SIGTERM while Ray was starting: Ray's handler exits
        if callable(sigterm) and exc.code == signal.SIGTERM:
            sigterm(signal.SIGTERM, None)
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. "node timed out during startup" (overload)
        from aligncultura.jobkit import JobError

        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        where = f"connect to Ray at RAY_ADDRESS={address}" if address else "start a local Ray"
        raise JobError(f"could not {where} ({type(exc).__name__}: {first}); rerun the "
                       "same command (finished rows are cached), or use engine=local to run "
                       "without Ray") from None
    finally:
        if callable(sigterm):
            signal.signal(signal.SIGTERM, sigterm)


def same_engine(a: tuple[ResolvedModel, Any], b: tuple[ResolvedModel, Any], engine_cfg: Any) -> bool:
    """Would the two (model, model_cfg) pairs load the very same engine?"""
    return a[0].source != "api" and _engine_key(_stage_kwargs(*a, engine_cfg)) == _engine_key(
        _stage_kwargs(*b, engine_cfg))


def complete(requests: pa.Table, model: ResolvedModel, model_cfg: Any,
             engine_cfg: Any, followup: Any = None, cache: Any = None,
             stats: dict | None = None) -> Iterator[pa.Table]:
    """Yield completion tables (engine.COMPLETION_SCHEMA) batch by batch as they finish.

    With a `cache` (aligncultura.cache.RowCache), requests whose key is cached are served from
    it first (``cached=True``) and every computed batch is persisted as soon as it arrives; when
    nothing is left to compute no engine starts. `followup` (see `LLMStage.process`) lets the
    same engine serve a second round of requests built from each batch, in the same replica.
    `stats` (a dict) receives ``cached``/``computed``/``failed`` request counts.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("cached", 0)
    stats.setdefault("computed", 0)
    if requests.num_rows == 0:
        return
    if cache is not None:
        hits, todo = [], []
        for i, (rid, key) in enumerate(zip(requests.column("request_id").to_pylist(),
                                           requests.column("key").to_pylist(), strict=True)):
            rows = cache.get(key) if key else None
            if rows:
                hits.extend({**r, "request_id": rid, "cached": True} for r in rows)
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
    for batch in _complete(requests, model, model_cfg, engine_cfg, followup):
        if cache is not None:
            rows = batch.to_pylist()
            for r in rows:  # engines that do not echo keys (API) get them here
                if not r.get("key"):
                    r["key"] = key_of.get(r["request_id"])
            cache.put(rows)
        yield batch


def _complete(requests, model, model_cfg, engine_cfg, followup) -> Iterator[pa.Table]:
    if model.source == "api":
        from aligncultura.api_engine import complete_api

        yield from complete_api(requests, model, model_cfg, engine_cfg)
        return
    if engine_cfg.executor == "local":
        stage = local_engine(model, model_cfg, engine_cfg)
        for batch in requests.to_batches(max_chunksize=engine_cfg.batch_size):
            yield stage.process(pa.Table.from_batches([batch]), followup)
        return
    if engine_cfg.executor != "ray":
        raise ValueError(f"engine.executor={engine_cfg.executor!r}: use ray or local")
    yield from _complete_ray(requests, model, model_cfg, engine_cfg, followup)


def _complete_ray(requests, model, model_cfg, engine_cfg, followup) -> Iterator[pa.Table]:
    init_ray()  # before `import ray`: it sets the environment Ray reads at import
    import ray

    from aligncultura.engine import LLMStage

    kwargs = {**_stage_kwargs(model, model_cfg, engine_cfg), "followup": followup}
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    replicas = int(engine_cfg.replicas)
    if replicas <= 0:  # auto: one replica per GPU group, or one on a CPU-only cluster
        gpus = ray.cluster_resources().get("GPU", 0)
        per = engine_cfg.num_gpus_per_replica or 0
        replicas = max(1, int(gpus // per)) if per else 1
    n_blocks = max(1, -(-requests.num_rows // engine_cfg.batch_size))
    ds = ray.data.from_arrow(requests).repartition(n_blocks)
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated.*")
    ds = ds.map_batches(
        LLMStage,
        fn_constructor_kwargs=kwargs,
        batch_size=engine_cfg.batch_size,
        batch_format="pyarrow",
        compute=actor_pool(replicas),
        num_cpus=engine_cfg.num_cpus_per_replica,
        num_gpus=engine_cfg.num_gpus_per_replica or None,
        max_restarts=engine_cfg.max_restarts,
        max_task_retries=engine_cfg.max_restarts,
    )
    from aligncultura.jobkit import raise_if_interrupted

    seen: set[str] = set()
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            seen.update(batch.column("request_id").to_pylist())
            yield batch
            raise_if_interrupted()  # the batch is persisted by now
    except Exception as exc:  # noqa: BLE001 - replicas died past their retries
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        error = f"engine failed after {engine_cfg.max_restarts} restarts: {type(exc).__name__}: " \
                f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"
        print(f"warning: {error}; the rows not finished are marked failed", file=sys.stderr)
        left = [r for r in requests.to_pylist() if r["request_id"] not in seen]
        yield failed_rows(left, error)


def failed_rows(requests: list[dict[str, Any]], error: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"request_id": r["request_id"], "sample_index": 0, "finish_reason": "error",
          "input_tokens": 0, "output_tokens": 0, "status": "failed", "error": error,
          "key": r.get("key"), "cached": False} for r in requests],
        schema=COMPLETION_SCHEMA)
