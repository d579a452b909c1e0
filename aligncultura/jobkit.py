"""What every job shell shares: the command-line wrapper (one-line errors, exit 2) and the
precheck of presets and keys before Hydra runs. Only `jobs/` imports it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from aligncultura.errors import InputError, JobError
from aligncultura.rundir import SECRET_VALUE, redact_hydra_files


def user_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from aligncultura.data.taxonomy import TaxonomyError
    from aligncultura.engine.models import ModelError

    return (JobError, InputError, ModelError, TaxonomyError, OmegaConfBaseException,
            FileNotFoundError, PermissionError)


def cli(run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a job's `run(cfg)` for the command line: a user error is one line and exit 2."""

    @functools.wraps(run)
    def main(cfg: Any) -> Any:
        from aligncultura import rundir
        from aligncultura.console import logs as runlog

        redact_hydra_files()
        rundir._CONSOLE.append(True)  # start_run sends the libraries' lines to logs/
        try:
            result = run(cfg)
        except user_errors() as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            line = printable(SECRET_VALUE.sub('***', msg))
            print(f"error: {line}", file=sys.stderr, flush=True)
            if in_multirun():  # the sweep goes on; `launch` sums it up at the end
                _JOBS.append(_job_record("failed", line))
                raise JobFailed(line) from None
            sys.exit(2)
        except Exception as exc:
            if in_multirun():
                _JOBS.append(_job_record("failed", f"{type(exc).__name__}: {exc}"[:300]))
            raise
        finally:
            rundir._CONSOLE.clear()
            runlog.restore()
        if in_multirun():
            _JOBS.append(_job_record("done", ""))
        return result

    return main


class JobFailed(Exception):
    """A job of a sweep stopped on a user error (its one line is printed and recorded); Hydra
    marks the job failed and goes on with the others."""


_JOBS: list[dict[str, Any]] = []  # the jobs of this process's sweep (basic launcher), in order
_SWEEP: dict[str, str] = {}  # the sweep dir, recorded by `SweepDir` when a multirun starts


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def _job_record(state: str, error: str) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return {"num": hc.job.num, "overrides": list(hc.overrides.task), "state": state,
            "error": error, "run_dir": hc.runtime.output_dir}


class SweepDir(Callback):
    """A Hydra callback (conf/<job>.yaml, ``hydra.callbacks``): records the sweep dir when a
    multirun starts, for `launch`'s summary."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _SWEEP["dir"] = str(config.hydra.sweep.dir)


def launch(hydra_main: Callable[[], Any], argv: list[str] | None = None) -> None:
    """Run a job's `@hydra.main`. A multirun (``-m``) in which jobs fail ends with a table of
    every job and each failed job's own one-line error, and exit 2, instead of Hydra's or
    submitit's traceback; the jobs that succeeded keep their results."""
    args = sys.argv[1:] if argv is None else argv
    if not any(a in ("-m", "--multirun") for a in args):
        hydra_main()
        return
    import os

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises: the summary below replaces its report
    error: BaseException | None = None
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            error = exc
    except Exception as exc:  # noqa: BLE001 - a failed job, or the launcher's report of one
        error = exc
    sys.exit(sweep_summary(error))


def sweep_summary(error: BaseException | None) -> int:
    """Print the sweep's jobs (submitit launchers: `jobs.status`' table, read from the sweep
    dir; the basic launcher: the jobs this process ran) and each failure's one line; the exit
    code (2 when any job or the sweep itself failed)."""
    sweep = _SWEEP.get("dir")
    failed: list[str] = []
    if sweep and (Path(sweep) / ".submitit").is_dir():
        import time

        from aligncultura.cluster.sweep_status import collect, status_table

        jobs = collect(sweep)
        waiting = [j for j in jobs if j.state in ("queued", "running")]
        if waiting:  # the launcher stopped at the first failure; the others still run
            print(f"sweep: waiting for {len(waiting)} job(s) still queued or running "
                  "(Ctrl-C leaves them running; `python -m jobs.status "
                  f"{sweep}` shows them later)", file=sys.stderr, flush=True)
        while waiting:
            time.sleep(5)
            jobs = collect(sweep)
            waiting = [j for j in jobs if j.state in ("queued", "running")]
        print(f"sweep {Path(sweep).resolve()}: {len(jobs)} jobs")
        print(status_table(jobs))
        failed = [f"job {j.num}: {j.reason or 'failed'} (log: {j.log})" for j in jobs
                  if j.state == "failed"]
    elif _JOBS:
        print(f"sweep {Path(sweep).resolve() if sweep else ''}: {len(_JOBS)} jobs")
        for j in _JOBS:
            where = j["error"] if j["state"] == "failed" else j["run_dir"]
            print(f"  #{j['num']} {j['state']:6s} {' '.join(j['overrides']) or '-'}  {where}")
        failed = [f"job {j['num']}: {j['error']}" for j in _JOBS if j["state"] == "failed"]
    if error is not None and not failed:
        msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        failed = [f"{type(error).__name__}: {msg}"[:400]]
    for line in failed:
        print(f"error: {printable(SECRET_VALUE.sub('***', line))}", file=sys.stderr, flush=True)
    return 2 if failed else 0


def printable(text: str) -> str:
    """Control characters (NUL, escape sequences, a UTF-16 file read as bytes, ...) shown as
    escapes, never sent raw to the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode()
                   for ch in text)


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
