"""Weights & Biases mirroring: the only module that imports wandb.

Metrics are written to the run directory first (JSON/Parquet); this module mirrors them to W&B
from the driver once a job is done. Everything W&B writes stays inside the run directory
(``wandb/``, ``wandb_cache/``, ``wandb_data/``, ``wandb_config/``). W&B is optional: any failure
(unwritable directory, unreachable server, init timeout) becomes a ``{"status": "failed"}`` result
and one warning line on stderr, never an exception, because the local results are already safe.

A rerun of the same run directory (a preempted and requeued Slurm job) continues the same W&B run:
its id is kept in ``wandb_run_id.txt``. Offline runs are uploaded later with ``wandb sync <dir>``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import string
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aligncultura.rundir import SECRET_VALUE, atomic_write_bytes, redact

RUN_ID_FILE = "wandb_run_id.txt"
MAX_TABLE_ROWS = 10_000
INIT_TIMEOUT_S = 20.0  # unreachable server: fail in ~25 s, not 90 s; WANDB_INIT_TIMEOUT overrides
FINISH_TIMEOUT_S = 300.0  # online uploads; past it finish() raises: sync later from the .wandb file
_ENV_DIRS = {"WANDB_DIR": "wandb", "WANDB_CACHE_DIR": "wandb_cache",
             "WANDB_DATA_DIR": "wandb_data", "WANDB_CONFIG_DIR": "wandb_config"}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1, "c": None}}`` -> ``{"a/b": 1}``: nested keys joined by "/", None dropped."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif v is not None:
            out[key] = SECRET_VALUE.sub("***", v) if isinstance(v, str) else v
    return out


@contextmanager
def _wandb_env(run_dir: Path) -> Iterator[Path]:
    """Point every W&B directory into the run dir for the duration of the call, then restore."""
    saved = {k: os.environ.get(k) for k in (*_ENV_DIRS, "WANDB_SILENT")}
    try:
        for key, sub in _ENV_DIRS.items():
            os.environ[key] = str(run_dir / sub)
        os.environ["WANDB_SILENT"] = "true"  # login prints before Settings(silent=True) applies
        for sub in _ENV_DIRS.values():
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        yield run_dir / _ENV_DIRS["WANDB_DIR"]
    finally:
        for key, val in saved.items():
            if val is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = val


def _plain(config: Any) -> dict[str, Any]:
    """A DictConfig or dataclass as a plain dict, so that ``redact`` sees every key."""
    if isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def _cell(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return json.dumps(v, default=str, ensure_ascii=False)


def _wandb_table(wandb: Any, table: Any) -> Any:
    """A pyarrow table as a ``wandb.Table`` (first MAX_TABLE_ROWS rows; nested cells as JSON)."""
    rows = table.slice(0, MAX_TABLE_ROWS).to_pylist()
    cols = table.column_names
    return wandb.Table(columns=cols, data=[[_cell(r[c]) for c in cols] for r in rows])


def _artifact_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "outputs"


def new_run_id(length: int = 8) -> str:
    """A fresh W&B run id ([a-z0-9], like W&B's own; 0.31 no longer exports a generator)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _masked(value: str | None) -> str | None:
    """Run names, groups, entities go to W&B as they are: mask anything that looks like a key."""
    return SECRET_VALUE.sub("***", value) if isinstance(value, str) else value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return SECRET_VALUE.sub("***", f"{type(exc).__name__}: {text}")[:300]


def log_run(run_dir: Path, wandb_cfg: Any, *, name: str, job_type: str, config: dict,
            summary: dict, tables: dict[str, Any] | None = None, group: str | None = None,
            artifacts: dict[str, Path] | None = None,
            images: dict[str, Path] | None = None) -> dict[str, Any]:
    """Mirror one finished job to W&B. Never raises.

    ``wandb_cfg`` is a ``WandbConfig`` (mode offline|online|disabled, project, entity, group);
    ``group`` overrides ``wandb_cfg.group``. ``summary`` may be nested: it is flattened with "/".
    ``tables`` are pyarrow tables logged as ``wandb.Table`` (capped at MAX_TABLE_ROWS rows; the
    summary says how many were logged). ``artifacts`` maps an artifact name to a file or directory;
    files are referenced, not copied, so keep them in place until an offline run is synced.
    ``images`` maps a key (e.g. ``plots/metrics``) to a PNG file, logged as a ``wandb.Image``
    (in the run's history and summary, shown as media in the W&B UI, not only as a file).

    Returns ``{"status": "disabled"}``, ``{"status": "ok", "run_id", "dir", "mode"}`` (``dir`` is
    the W&B run directory to pass to ``wandb sync``) or ``{"status": "failed", "error", "hint"}``.
    """
    mode = str(getattr(wandb_cfg, "mode", "offline"))
    if mode == "disabled":
        return {"status": "disabled"}
    run_dir = Path(run_dir).resolve()
    run = None
    try:
        if mode not in ("offline", "online"):
            raise ValueError(f"wandb.mode={mode!r}: expected offline, online or disabled")
        with _wandb_env(run_dir) as wandb_dir:
            import wandb

            id_file = run_dir / RUN_ID_FILE
            run_id = id_file.read_text().strip() if id_file.exists() else ""
            if not run_id:
                run_id = new_run_id()
                atomic_write_bytes(id_file, (run_id + "\n").encode())
            settings = wandb.Settings(
                silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True,
                init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S)),
                finish_timeout=FINISH_TIMEOUT_S, finish_timeout_raises=True,
            )
            run = wandb.init(
                project=_masked(wandb_cfg.project), entity=_masked(getattr(wandb_cfg, "entity", None)),
                group=_masked(group or getattr(wandb_cfg, "group", None)), job_type=job_type,
                name=_masked(name),
                id=run_id, resume="allow", mode=mode, dir=str(wandb_dir),
                config=redact(_plain(config)), reinit="create_new", settings=settings,
            )
            flat = flatten(summary)
            logged = {key: _wandb_table(wandb, table) for key, table in (tables or {}).items()}
            logged.update({key: wandb.Image(str(path), caption=_masked(Path(path).stem))
                           for key, path in (images or {}).items()})
            if logged:
                run.log(logged)
            for key, table in (tables or {}).items():
                flat[f"tables/{key}/rows_total"] = table.num_rows
                flat[f"tables/{key}/rows_logged"] = min(table.num_rows, MAX_TABLE_ROWS)
            run.summary.update(flat)
            for art_name, path in (artifacts or {}).items():
                path = Path(path)
                art = wandb.Artifact(_artifact_name(art_name), type=job_type)
                if path.is_dir():
                    art.add_dir(str(path), policy="immutable")
                else:
                    art.add_file(str(path), policy="immutable")
                run.log_artifact(art)
            sync_dir = str(run.settings.sync_dir)
            finishing, run = run, None  # a failed finish() is not retried below
            finishing.finish()
        return {"status": "ok", "run_id": run_id, "dir": sync_dir, "mode": mode}
    except Exception as exc:  # W&B is a mirror: never let it fail a job whose results are saved
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 - already reporting the first failure
                pass
        error = _one_line(exc)
        hint = f"local results are in {run_dir}; sync later with `wandb sync <dir>`"
        print(f"warning: W&B logging failed ({error}); {hint}", file=sys.stderr)
        return {"status": "failed", "error": error, "hint": hint}


def read_offline_summary(run_path: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Read an offline run back: config, summary, state, name, ... plus ``run`` (the run record:
    ``job_type``, ``run_group``, ``display_name``, ...) and ``artifacts`` (``name``, ``type``).

    ``run_path`` is the offline run directory (``log_run(...)["dir"]``) or its ``.wandb`` file.
    Uses ``wandb leet inspect`` because ``wandb.Api`` cannot read offline runs.
    """
    base = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_path)]
    summary_proc = subprocess.Popen([*base[:5], "--summary", *base[5:]], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    records_proc = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = summary_proc.communicate(timeout=timeout)
    records, rerr = records_proc.communicate(timeout=timeout)
    for proc, e in ((summary_proc, err), (records_proc, rerr)):
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(proc.args)}` failed ({proc.returncode}): {e.strip()}")
    result = json.loads(out)
    result["artifacts"] = []
    for line in records.splitlines():
        rec = json.loads(line) if line.strip().startswith("{") else {}
        if rec.get("type") == "run":
            result["run"] = rec["run"]
        elif rec.get("type") == "artifact":
            art = rec["artifact"]
            result["artifacts"].append({"name": art.get("name"), "type": art.get("type")})
    return result
