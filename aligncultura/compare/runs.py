"""Finished benchmark run dirs, loaded for comparison.

A run dir of ``jobs.benchmark`` holds ``metrics.json``, ``judgments.parquet`` and
``config.yaml`` (and, when present, ``judgments_judge2.parquet``, ``generations.parquet`` and a
leakage report ``leakage.parquet`` with ``row_id`` (or ``eval_id``) and ``flagged``, in the run
dir or named by the run's ``bench.leakage_report``). Prompts are
mapped to subdomains by re-reading the run's dataset through the input contract (its
``config.yaml``'s ``dataset``); a dataset file whose hash differs from the manifest's is noted.
Every problem is a one-line ``JobError`` naming the run dir.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aligncultura.errors import JobError


@dataclass
class Run:
    path: Path
    label: str
    metrics: dict[str, Any]
    judgments: pa.Table
    row_class: dict[str, int]  # row_id -> class id (41 = None)
    config: dict[str, Any] = field(default_factory=dict)  # the run's config.yaml
    generations: pa.Table | None = None
    judgments2: pa.Table | None = None
    leaked: set[str] | None = None  # row ids flagged by leakage.parquet; None = no report
    notes: list[str] = field(default_factory=list)
    # summary.json's verdict on the run's own guards (judge.max_unscored_rate,
    # bench.max_failed_rate): ok | failed | unknown (no summary.json)
    status: str = "unknown"
    errors: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.metrics.get("model") or self.path.name)

    @property
    def judge(self) -> str:
        return str(self.metrics.get("judge") or "?")


def expand_runs(spec: Any, exclude: Path | None = None) -> list[Path]:
    """Run dirs from ``runs=``: a list of dirs and/or globs. A glob (or a sweep dir given as
    such) keeps the directories that are benchmark runs (``manifest.json`` of job benchmark, or
    a ``metrics.json``); a dir given by name must be a finished run."""
    items = [spec] if isinstance(spec, str | Path) else list(spec or [])
    if not items:
        raise JobError("runs= is empty: give benchmark run dirs, runs=[dir1,dir2] or "
                       "runs='sweep/*'")
    out: list[Path] = []
    for item in items:
        text = os.path.expanduser(str(item))
        if glob.has_magic(text):
            found = [p for p in sorted(Path(x) for x in glob.glob(text)) if _is_benchmark_dir(p)]
            if not found:
                raise JobError(f"runs={item}: the glob matches no benchmark run dir")
            out.extend(found)
        elif not Path(text).is_dir():
            raise JobError(f"runs: {item} is not a directory (give benchmark run dirs)")
        elif _is_sweep_dir(Path(text)):  # a multirun dir: its benchmark runs
            out.extend(p for p in sorted(Path(text).iterdir()) if _is_benchmark_dir(p))
        else:
            out.append(Path(text))
    seen, unique = set(), []
    for p in out:
        r = p.resolve()
        if r not in seen and r != (exclude.resolve() if exclude else None):
            seen.add(r)
            unique.append(r)
    return unique


def _is_sweep_dir(p: Path) -> bool:
    """Not a run itself (no manifest, no metrics) but holding benchmark runs."""
    if (p / "manifest.json").exists() or (p / "metrics.json").exists():
        return False
    return any(_is_benchmark_dir(c) for c in p.iterdir())


def _is_benchmark_dir(p: Path) -> bool:
    if not p.is_dir():
        return False
    if (p / "manifest.json").exists():
        try:
            return json.loads((p / "manifest.json").read_text()).get("job") == "benchmark"
        except (OSError, ValueError):
            return False
    return (p / "metrics.json").exists()


def _row_classes(path: Path, ds: dict[str, Any], judged: set[str]) -> tuple[dict[str, int],
                                                                             list[str]]:
    """row_id -> class id from the run's own dataset (``ds``: its config's dataset), and notes."""
    from omegaconf import OmegaConf

    from aligncultura.config import InputConfig
    from aligncultura.data.reader import load_prompts
    from aligncultura.rundir import file_sha256

    where = ds.get("path") or "the embedded sample"
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(InputConfig), ds)
        table = load_prompts(cfg).table
    except Exception as exc:  # noqa: BLE001 - any reader failure: one line naming the run
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{path}: cannot read its dataset ({where}) to map prompts to "
                       f"subdomains: {msg}") from None
    classes = {r: 41 if c is None else int(c) for r, c in
               zip(table.column("row_id").to_pylist(), table.column("class_id").to_pylist(),
                   strict=True)}
    missing = sorted(judged - classes.keys())
    if missing:
        raise JobError(f"{path}: {len(missing)} judged row ids (e.g. {missing[0]}) are not in its "
                       f"dataset ({where}) any more: was the dataset changed?")
    notes = []
    manifest = path / "manifest.json"
    inputs = json.loads(manifest.read_text()).get("inputs", {}) if manifest.exists() else {}
    for f, sha in inputs.items():
        if Path(f).exists() and file_sha256(f) != sha:
            notes.append(f"{path.name}: dataset file {f} changed since the run (hash differs)")
    return classes, notes


def _leaked(path: Path, config: dict[str, Any]) -> set[str] | None:
    """Flagged row ids of the run's leakage report: ``leakage.parquet`` in the run dir, else the
    ``bench.leakage_report`` the run was given (jobs.leakage's output); None without one."""
    f = path / "leakage.parquet"
    if not f.exists():
        given = (config.get("bench") or {}).get("leakage_report")
        if not given:
            return None
        f = Path(os.path.expanduser(str(given)))
        if not f.exists():
            raise JobError(f"{path}: its bench.leakage_report {f} does not exist any more")
    t = pq.read_table(f)
    key = "row_id" if "row_id" in t.column_names else "eval_id"
    if key not in t.column_names or "flagged" not in t.column_names:
        raise JobError(f"{f}: a leakage report needs columns row_id (or eval_id) and flagged, "
                       f"got {t.column_names}")
    return {r for r, flag in zip(t.column(key).to_pylist(), t.column("flagged").to_pylist(),
                                 strict=True) if flag}


def load_run(path: Path) -> Run:
    """One benchmark run dir; a missing piece is a one-line JobError naming the dir."""
    path = Path(path)
    if not (path / "metrics.json").exists():
        raise JobError(f"{path}: no metrics.json: not a finished benchmark run (rerun "
                       f"jobs.benchmark with run_dir={path}, or leave it out of runs=)")
    if not (path / "judgments.parquet").exists():
        raise JobError(f"{path}: no judgments.parquet: not a finished benchmark run")
    metrics = json.loads((path / "metrics.json").read_text())
    judgments = pq.read_table(path / "judgments.parquet")
    if judgments.num_rows == 0:
        raise JobError(f"{path}: judgments.parquet is empty: nothing to compare")
    import yaml

    if not (path / "config.yaml").exists():
        raise JobError(f"{path}: no config.yaml: cannot tell which dataset the run judged")
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    classes, notes = _row_classes(path, config.get("dataset") or {},
                                  set(judgments.column("row_id").to_pylist()))
    opt = {n: pq.read_table(path / f) if (path / f).exists() else None
           for n, f in (("generations", "generations.parquet"),
                        ("judgments2", "judgments_judge2.parquet"))}
    summary = json.loads((path / "summary.json").read_text()) \
        if (path / "summary.json").exists() else {}
    return Run(path, str(metrics.get("model") or path.name), metrics, judgments, classes,
               config=config, leaked=_leaked(path, config), notes=notes,
               status=str(summary.get("status") or "unknown"),
               errors=list(summary.get("errors") or []), **opt)


def load_runs(spec: Any, exclude: Path | None = None, include_failed: bool = False) -> list[Run]:
    """Load every run of ``runs=``; labels are model names, made unique with the dir name.

    A run that failed its own guards (summary.json status ``failed``) is left out with one line
    naming it and the guard, unless `include_failed`: then it stays, marked in its label and
    its notes."""
    runs = []
    for run in (load_run(p) for p in expand_runs(spec, exclude)):
        if run.status != "failed":
            runs.append(run)
            continue
        why = run.errors[0] if run.errors else "summary.json status failed"
        if not include_failed:
            print(f"compare: left out {run.path}: it failed its guard ({why}); "
                  "compare.include_failed=true keeps it, marked", flush=True)
            continue
        run.notes.append(f"{run.path.name} failed its guard ({why}): compared anyway "
                         "(compare.include_failed=true)")
        runs.append(run)
    if not runs:
        raise JobError(f"runs={spec}: every run failed its guards (see their summary.json); "
                       "set compare.include_failed=true to compare them anyway")
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.model] = counts.get(r.model, 0) + 1
    for r in runs:
        if counts[r.model] > 1:
            r.label = f"{r.model} [{r.path.name}]"
    for r in runs:
        if r.status == "failed":
            r.label = f"{r.label} (failed guard)"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label} #{i + 1}"
    return runs
