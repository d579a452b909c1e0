"""Where a job's output goes: the terminal gets our own lines (plan, progress, results, paths,
one-line errors); everything the libraries underneath print (Ray's and vLLM's INFO and WARNING
lines, torch's C++ warnings, Python warnings, loading bars) goes to ``<run dir>/logs/job.log``,
and each Ray engine replica's to ``<run dir>/logs/engine-<node>-<pid>.log``. ``verbose=true``
leaves everything on the terminal, Ray replicas' lines included.

How: `route` points file descriptors 1 and 2 at the log (so C++ code and child processes write
there) and gives Python's ``sys.stdout``/``sys.stderr`` copies of the terminal's descriptors (so
our prints still reach the terminal); the libraries' own logging handlers and Python's warnings
are pointed at the log after those libraries are imported (`capture_loggers`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

# loggers of the libraries underneath (ours print to the terminal; these go to the log)
THIRD_PARTY = ("ray", "vllm", "torch", "transformers", "filelock", "urllib3", "datasets",
               "huggingface_hub", "py.warnings", "numexpr", "wandb", "hydra")

_STATE: dict[str, Any] = {"verbose": True, "log": None, "path": None}
_LOCK = threading.Lock()


def verbose() -> bool:
    """True unless `route` sent the libraries' output to a log (the default for jobs)."""
    return bool(_STATE["verbose"])


def log_dir() -> Path | None:
    """The run dir's ``logs/`` while the libraries' output goes there."""
    return _STATE["path"].parent if _STATE["path"] is not None else None


def log_stream() -> TextIO | None:
    return _STATE["log"]


def route(run_dir: Path, verbose_run: bool) -> Path | None:
    """Send the libraries' output to ``<run_dir>/logs/job.log`` (unless `verbose_run`); returns
    the log's path. Called once per job by `rundir.start_run`; a second call (a Hydra multirun
    job in the same process) moves the log to the new run dir."""
    with _LOCK:
        _STATE["verbose"] = bool(verbose_run)
        if verbose_run:
            _restore()
            return None
        path = Path(run_dir) / "logs" / "job.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        except OSError:  # a read-only run dir: keep everything on the terminal
            _STATE["verbose"] = True
            return None
        _restore()  # a previous job of this process (Hydra multirun)
        sys.stdout.flush()
        sys.stderr.flush()
        _STATE["term"] = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
        sys.stdout = _terminal(_STATE["term"][0], sys.stdout)
        sys.stderr = _terminal(_STATE["term"][1], sys.stderr)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _STATE["log"], _STATE["path"] = log, path
        handler = logging.StreamHandler(log)
        handler._aligncultura = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.captureWarnings(True)
    capture_loggers()
    return path


def _terminal(fd: int, like: TextIO) -> TextIO:
    stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=like.encoding or "utf-8",
                              errors="backslashreplace", line_buffering=True)
    return stream


def restore() -> None:
    """The terminal back for everything (end of a job; the next job of a multirun routes
    again)."""
    with _LOCK:
        _restore()
        _STATE["verbose"] = True


def _restore() -> None:
    log = _STATE["log"]
    if log is None:
        return
    out, err, py_out, py_err = _STATE.pop("term")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    sys.stdout, sys.stderr = py_out, py_err
    _point_loggers(log, py_err)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_aligncultura", False):
            root.removeHandler(h)
    logging.captureWarnings(False)
    log.close()
    _STATE["log"] = _STATE["path"] = None


def capture_loggers() -> None:
    """Point the console handlers of the libraries' loggers (`THIRD_PARTY`: they install their
    own when imported) at the job's log. A no-op when the run is verbose."""
    if _STATE["log"] is not None:
        _point_loggers(None, _STATE["log"])


def _point_loggers(old: TextIO | None, new: TextIO) -> None:
    """Console handlers of the `THIRD_PARTY` loggers (those writing to `old`, or to the
    terminal when `old` is None) write to `new` from now on. Other handlers are left alone:
    some own their stream and close it (torch's trace handler)."""
    term = _STATE.get("term") or ()
    console = [sys.__stdout__, sys.__stderr__, *term[2:], sys.stdout, sys.stderr] \
        if old is None else [old]
    for name in [n for n in list(logging.Logger.manager.loggerDict)
                 if n.split(".")[0] in THIRD_PARTY]:
        for h in getattr(logging.getLogger(name), "handlers", []):
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
                continue
            if any(h.stream is c for c in console):
                h.setStream(new)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Python-level stdout/stderr to the job's log inside the block (libraries' loading bars);
    nothing changes when the run is verbose."""
    log = _STATE["log"]
    if log is None:
        yield
        return
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def engine_log(log_dir_name: str | None) -> None:
    """In a Ray engine replica: send this process's output (vLLM, torch) to
    ``<log_dir>/engine-<node>-<pid>.log``; a log dir this node cannot write is left alone."""
    if not log_dir_name:
        return
    import socket

    try:
        path = Path(log_dir_name) / f"engine-{socket.gethostname()}-{os.getpid()}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
