"""What every job shares: run dir set-up, one-line errors, progress, efficiency stats."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.rundir import SECRET_VALUE, RunDir, write_json


class JobError(RuntimeError):
    """A failure the user can act on: printed as one line, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from aligncultura.data import InputError
    from aligncultura.models import ModelError
    from aligncultura.taxonomy import TaxonomyError

    return (JobError, InputError, ModelError, TaxonomyError, OmegaConfBaseException,
            FileNotFoundError, PermissionError)


def cli(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a job's `run(cfg)` for the command line: a user error is one line and exit 2."""

    @functools.wraps(run)
    def main(cfg: Any) -> Any:
        redact_hydra_files()
        try:
            return run(cfg)
        except user_errors() as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {SECRET_VALUE.sub('***', msg)}", file=sys.stderr, flush=True)
            sys.exit(2)

    return main


def resolve_run_dir(cfg: Any, job: str) -> RunDir:
    """`run_dir=PATH` when given, else Hydra's job output dir (one per multirun job)."""
    if cfg.get("run_dir"):
        return RunDir(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return RunDir(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return RunDir(Path("runs") / job / time.strftime("%Y-%m-%d_%H-%M-%S"))


def start_run(cfg: Any, job: str, input_files: Iterable[str]) -> RunDir:
    from omegaconf import OmegaConf

    rd = resolve_run_dir(cfg, job)
    rd.write_config(OmegaConf.to_container(cfg, resolve=True))
    rd.write_manifest(job, sorted(set(input_files)))
    redact_hydra_files()
    return rd


def redact_hydra_files() -> None:
    """Hydra writes the overrides and the config as typed into `<output dir>/.hydra/` (and a
    multirun's `multirun.yaml`): mask secret-looking keys and values there too."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return
    import yaml

    from aligncultura.rundir import atomic_write_bytes, redact

    files = list((Path(hc.runtime.output_dir) / hc.output_subdir).glob("*.yaml")) \
        if hc.output_subdir else []
    if hc.sweep.dir:
        files.append(Path(hc.sweep.dir) / "multirun.yaml")
    for f in files:
        try:
            data = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if redact(data) != data:
            atomic_write_bytes(f, yaml.safe_dump(redact(data), sort_keys=False).encode())


def row_cache(cfg: Any, model: Any, model_cfg: Any):
    """The row cache for one model (`cache_dir=PATH`, default ~/.cache/aligncultura/rows);
    `cache_dir=off` disables it."""
    from aligncultura.cache import RowCache, salt
    from aligncultura.models import default_cache_dir

    where = cfg.get("cache_dir")
    if where == "off":
        return None
    root = Path(os.path.expanduser(where)) if where else default_cache_dir() / "rows"
    return RowCache(root, salt(model, model_cfg, cfg.get("engine")))


class Progress:
    """A periodic progress line on stderr: rows done / total, rate, elapsed."""

    def __init__(self, label: str, total: int, enabled: bool = True, every_s: float = 5.0):
        self.label, self.total, self.enabled, self.every_s = label, total, enabled, every_s
        self.done = 0
        self.tokens = 0
        self.cached = 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, rows: int, tokens: int = 0, batch: pa.Table | None = None) -> None:
        """`rows` more done; the rate counts `tokens` plus the output tokens of the rows of
        `batch` this run computed (rows served from the row cache are counted apart)."""
        if batch is not None:
            hit = pc.fill_null(batch.column("cached"), False)
            live = batch.filter(pc.invert(hit))
            tokens += sum(live.column("output_tokens").to_pylist())
            self.cached += min(rows, batch.num_rows - live.num_rows)
        self.done += rows
        self.tokens += tokens
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            el = now - self.t0
            pct = 100.0 * self.done / max(self.total, 1)
            cached = f", {self.cached} from the row cache" if self.cached else ""
            print(f"[{self.label}] {self.done}/{self.total} ({pct:.0f}%) "
                  f"{el:.0f}s elapsed, {self.tokens / max(el, 1e-9):.1f} out tok/s{cached}",
                  file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def efficiency(completions: pa.Table, wall_s: float, num_gpus: float = 0.0,
               replicas: int = 1) -> dict[str, Any]:
    """Throughput and cost of one engine stage from its completion rows.

    Engine start is reported apart and excluded from the throughput (the replicas start
    in parallel, so the largest start time is subtracted from the stage's wall time).
    """
    n_cached = int(pc.sum(completions.column("cached")).as_py() or 0) if completions.num_rows else 0
    if n_cached:  # rows served from the cache cost nothing in this run
        completions = completions.filter(pc.invert(pc.fill_null(completions.column("cached"), False)))
    ok = completions.filter(pc.equal(completions.column("status"), "ok")) \
        if completions.num_rows else completions
    out_tok = int(np.sum(ok.column("output_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    in_tok = int(np.sum(ok.column("input_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    lat = [x for x in completions.column("latency_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    starts = [x for x in completions.column("engine_start_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    engine_start = max(starts) if starts else 0.0
    steady = max(wall_s - engine_start, 1e-9) if completions.num_rows else 0.0
    cpu = float(np.nansum(completions.column("cpu_s").to_numpy(zero_copy_only=False))) \
        if completions.num_rows else 0.0
    rss = completions.column("peak_rss_mb").to_pylist() if completions.num_rows else []
    n = max(completions.num_rows, 1)
    return {
        "requests": completions.num_rows,
        "cached_requests": n_cached,
        "output_tokens": out_tok,
        "input_tokens": in_tok,
        "output_tok_s": out_tok / steady if steady else None,
        "input_tok_s": in_tok / steady if steady else None,
        "requests_s": completions.num_rows / steady if steady else None,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "latency_p95_s": float(np.percentile(lat, 95)) if lat else None,
        "engine_start_s": engine_start,
        "wall_s": wall_s,
        "steady_s": steady,
        "cpu_s": cpu,
        "cpu_s_per_100": 100.0 * cpu / n,
        "gpu_s": num_gpus * replicas * steady,
        "gpu_s_per_100": 100.0 * num_gpus * replicas * steady / n,
        "output_tokens_per_response": out_tok / max(ok.num_rows, 1),
        "peak_rss_mb": max([peak_rss_mb(), *[r for r in rss if r is not None]]),
    }


def check_presets(conf_dir: Path, groups: Iterable[str], argv: list[str] | None = None) -> None:
    """Catch `group=name` overrides naming no preset before Hydra does: one line, exit 2."""
    for arg in (sys.argv[1:] if argv is None else argv):
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups:
            continue
        for name in value.split(","):  # multirun lists
            if name and name != "null" and not (conf_dir / key / f"{name}.yaml").exists():
                available = ", ".join(sorted(p.stem for p in (conf_dir / key).glob("*.yaml")))
                print(f"error: {key}={name}: no such preset in {conf_dir / key}; available: "
                      f"{available}", file=sys.stderr)
                sys.exit(2)


def precheck(conf_dir: Path, config_name: str, groups: Iterable[str]) -> None:
    """Validate the command line before Hydra runs the job: a bad preset name, a typo in a
    key or a value of the wrong type is one line on stderr and exit 2 (not a stack trace)."""
    check_presets(conf_dir, groups)
    args = sys.argv[1:]
    if any(a.startswith("-") for a in args):  # --multirun, --cfg, --help: Hydra's own paths
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - every composition error is a user error here
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        if exc.__cause__ is not None:
            lines += [x.strip() for x in str(exc.__cause__).splitlines()[:1] if x.strip()]
        msg = SECRET_VALUE.sub("***", " ".join(dict.fromkeys(lines[:3]))[:400]) or type(exc).__name__
        print(f"error: {msg} (see `python -m jobs.{config_name} --cfg job` for the keys)",
              file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


class Interrupted(BaseException):
    """SIGTERM/SIGINT/SIGUSR1/SIGUSR2 arrived: finished work is persisted, the job stops.

    A BaseException (like KeyboardInterrupt), so that no `except Exception` on the way (the
    runner's replica-failure handler, an engine's per-row fallback) turns it into failed rows."""


_PENDING: list[int] = []  # guarded signals that arrived and have not stopped the job yet


def raise_if_interrupted() -> None:
    """Raise Interrupted if a guarded signal arrived but its exception was lost.

    Python drops an exception raised by a signal handler that happens to run inside a
    finalizer or another callback it cannot propagate from ("Exception ignored in ..."); the
    job would then run on and miss its preemption. Long loops call this between batches;
    `guard_signals` checks once more when its block ends.
    """
    if _PENDING:
        raise Interrupted(signal.Signals(_PENDING[-1]).name)


@contextlib.contextmanager
def guard_signals(rd: RunDir):
    """Turn termination and preemption signals into a clean stop.

    Completed batches are already persisted (row cache, written atomically as they finish), so
    stopping only records what happened and says how to resume. A handler that was installed
    before (submitit's USR2 requeue, for one) is called afterwards so it can still act.
    """
    names = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        _PENDING.append(signum)
        raise Interrupted(signal.Signals(signum).name)

    for name in names:
        sig = getattr(signal, name)
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield
        raise_if_interrupted()  # a signal whose exception was swallowed still stops the job
    except Interrupted as exc:
        write_json(rd / "interrupted.json", {"signal": str(exc), "time": time.time()})
        sig = _PENDING[-1] if _PENDING else None
        prev = previous.get(sig) if sig else None
        if callable(prev) and prev not in (signal.default_int_handler,):
            prev(sig, None)
        raise JobError(f"interrupted by {exc}: finished rows are cached; rerun the same command "
                       f"to resume ({rd.path})") from None
    finally:
        _PENDING.clear()
        for sig, prev in previous.items():
            signal.signal(sig, prev)


def write_row_states(rd: RunDir, prompts: Any, gens: pa.Table, judgments: pa.Table | None) -> dict:
    """Give every input row exactly one terminal state with a reason; check they add up.

    ok | unscored (a judge could not score one of its judgments) | failed (generation failed
    after retries) | quarantined (unusable input) | not_selected (outside the split or limit).
    """
    states: list[dict[str, Any]] = []
    for q in prompts.quarantine:
        states.append({"row_id": q["row_id"] or f"{q['file']}:{q['line']}", "state": "quarantined",
                       "reason": q["reason"]})
    selected = set(prompts.table.column("row_id").to_pylist())
    failed: dict[str, str] = {}
    for g in gens.to_pylist():
        if g["status"] != "ok":
            failed[g["row_id"]] = g["error"] or "generation failed"
    uns: dict[str, set[str]] = {}
    for j in (judgments.to_pylist() if judgments is not None else []):
        if j["status"] != "scored":
            uns.setdefault(j["row_id"], set()).add(f"{j['criterion']}:{j['reason']}")
    for rid in prompts.table.column("row_id").to_pylist():
        if rid in failed:
            states.append({"row_id": rid, "state": "failed", "reason": failed[rid][:300]})
        elif rid in uns:
            states.append({"row_id": rid, "state": "unscored", "reason": ", ".join(sorted(uns[rid]))})
        else:
            states.append({"row_id": rid, "state": "ok", "reason": ""})
    not_selected = prompts.used - len(selected)
    counts: dict[str, int] = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    counts["not_selected"] = not_selected
    total = sum(counts.values())
    rd.write_parquet("row_states.parquet", pa.Table.from_pylist(
        states, schema=pa.schema([("row_id", pa.string()), ("state", pa.string()),
                                  ("reason", pa.string())])))
    line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if total != prompts.read:
        raise JobError(f"accounting: {line} = {total} rows, but {prompts.read} were read")
    print(f"rows: {prompts.read} read = {line}", flush=True)
    return counts
