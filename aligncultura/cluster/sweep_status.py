"""Reconstruct the state of every job of a sweep from its files and from Slurm.

Nothing has to keep running for this: a sweep submitted and forgotten is read back later from
  - Hydra + submitit sweeps (``hydra/launcher=slurm|local``): ``<sweep>/.submitit/<job id>/``
    (submission pickle, ``*_log.out/err``, ``*_result.pkl``) and each job's run dir
    ``<sweep>/<subdir>/`` (``.hydra/hydra.yaml`` names its job id and number);
  - ``python -m aligncultura.cluster.slurm submit`` sweeps: ``<sweep>/jobs.json`` (job ids, run dirs;
    logs are ``<run dir>/slurm-<id>.out/.err``);
  - each run dir: ``summary.json`` (status), ``metrics.json``, ``interrupted.json``;
  - Slurm: ``squeue`` (queued and running jobs) and ``sacct`` (finished ones, with requeues).

States: queued | running | done | failed (with a reason and the log to read) | unknown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED",
          "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


@dataclass
class JobStatus:
    num: int | None
    job_id: str | None
    state: str = "unknown"  # queued | running | done | failed | unknown
    reason: str = ""
    slurm_state: str | None = None
    exit_code: str | None = None
    restarts: int = 0
    elapsed: str | None = None
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None
    log: str | None = None  # stderr log: read it first when a job failed
    log_out: str | None = None
    metrics: str | None = None  # metrics.json of a done job

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run(cmd: list[str]) -> str | None:
    """stdout, or None when the command is missing, fails or hangs (no Slurm here)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _expand_array(job_id: str) -> list[str]:
    """sacct/squeue show pending array tasks as one line: ``12_[0-3,5%2]`` -> 12_0 ... 12_5."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def slurm_states(job_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    """``{job id: {state, exit_code, restarts, elapsed, reason}}`` from sacct, with squeue's view
    (live from the controller) for jobs still queued or running. None when Slurm is absent."""
    if not job_ids:
        return {}
    wanted = set(job_ids)
    acct = _run(["sacct", "-D", "-X", "-n", "-P", "-j", ",".join(sorted(wanted)),
                 "--format=JobID,State,ExitCode,Elapsed"])
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r|%M"])
    if acct is None and queue is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for line in (acct or "").splitlines():  # -D: one line per attempt, oldest first
        parts = line.split("|")
        if len(parts) < 4:
            continue
        for jid in _expand_array(parts[0]):
            if jid in wanted:
                prev = out.get(jid)
                out[jid] = {"state": parts[1].split()[0], "exit_code": parts[2],
                            "elapsed": parts[3], "reason": "",
                            "restarts": prev["restarts"] + 1 if prev else 0}
    for line in (queue or "").splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[0] in wanted:
            rec = out.setdefault(parts[0], {"restarts": 0, "exit_code": None})
            rec.update(state=parts[1], reason="" if parts[2] == "None" else parts[2],
                       elapsed=parts[3])
    return out


def _from_jobs_json(sweep: Path) -> list[JobStatus]:
    doc = _read_json(sweep / "jobs.json") or {}
    jobs = []
    for j in doc.get("jobs", []):
        rd = Path(j["run_dir"])
        jobs.append(JobStatus(num=j.get("num"), job_id=str(j["job_id"]),
                              overrides=list(j.get("overrides", [])), run_dir=str(rd),
                              log=str(rd / f"slurm-{j['job_id']}.err"),
                              log_out=str(rd / f"slurm-{j['job_id']}.out")))
    return jobs


def _hydra_run_dirs(sweep: Path) -> dict[str, tuple[int, Path]]:
    """submitit job id -> (Hydra job number, run dir), from each run dir's .hydra/hydra.yaml."""
    import yaml

    out = {}
    for hy in sweep.glob("*/.hydra/hydra.yaml"):
        try:
            job = (yaml.safe_load(hy.read_text()) or {}).get("hydra", {}).get("job", {})
        except (OSError, yaml.YAMLError):
            continue
        if job.get("id") is not None:
            out[str(job["id"])] = (int(job.get("num", -1)), hy.parent.parent)
    return out


def _submitted(folder: Path, job_id: str) -> tuple[int | None, list[str]]:
    """(Hydra job number, overrides) from submitit's submission pickle (the job's arguments)."""
    try:
        from submitit.core.utils import DelayedSubmission

        args = DelayedSubmission.load(folder / f"{job_id}_submitted.pkl").args
        return int(args[2]), list(args[0])
    except Exception:  # noqa: BLE001 - a missing or foreign pickle only costs the overrides
        return None, []


def _submitit_result(path: Path) -> tuple[str, str] | None:
    """("success", "") or ("error", last traceback line) from a submitit result pickle."""
    if not path.exists():
        return None
    try:
        import pickle

        with open(path, "rb") as fh:
            kind, value = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001
        return "error", f"unreadable result {path.name}: {type(exc).__name__}"
    if kind == "success":
        # Hydra's submitit launcher returns the job's JobReturn: a job that raised is a
        # submitit success holding status FAILED and the exception
        status = getattr(getattr(value, "status", None), "name", None)
        if status == "FAILED":
            exc = getattr(value, "_return_value", None)
            msg = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
            return "error", msg or f"{type(exc).__name__} (Hydra job failed)"
        return "success", ""
    lines = [x for x in str(value).strip().splitlines() if x.strip()]
    return "error", lines[-1].strip() if lines else "failed"


def _from_submitit(sweep: Path) -> tuple[list[JobStatus], dict[str, tuple[str, str] | None]]:
    folders = [p for p in (sweep / ".submitit").glob("*") if p.is_dir() and
               (p / f"{p.name}_submitted.pkl").exists()]
    dirs = _hydra_run_dirs(sweep)
    jobs, results = [], {}
    for folder in folders:
        jid = folder.name
        num, rd = dirs.get(jid, (None, None))
        overrides: list[str] = []
        if rd is not None:
            ov = rd / ".hydra" / "overrides.yaml"
            if ov.exists():
                import yaml

                overrides = list(yaml.safe_load(ov.read_text()) or [])
        if num is None or not overrides:
            num2, overrides = _submitted(folder, jid)
            num = num if num is not None else num2
        jobs.append(JobStatus(num=num, job_id=jid, overrides=overrides,
                              run_dir=str(rd) if rd else None,
                              log=str(folder / f"{jid}_0_log.err"),
                              log_out=str(folder / f"{jid}_0_log.out")))
        results[jid] = _submitit_result(folder / f"{jid}_0_result.pkl")
    return jobs, results


def _local_sweep(sweep: Path) -> bool:
    text = (sweep / "multirun.yaml").read_text() if (sweep / "multirun.yaml").exists() else ""
    return "LocalLauncher" in text


def _error_line(log: str | None) -> str:
    """The job's own one-line error (``error: ...``) from its stderr log, if it printed one."""
    if not log or not os.path.exists(log):
        return ""
    with open(log, errors="replace") as fh:
        tail = fh.readlines()[-200:]
    errors = [x.strip() for x in tail if x.startswith("error: ")]
    return errors[-1] if errors else ""


def _pid_alive(job_id: str | None) -> bool:
    if not job_id or not job_id.isdigit():
        return False
    try:
        os.kill(int(job_id), 0)
    except (OSError, OverflowError):
        return False
    return True


def decide(job: JobStatus, slurm: dict[str, Any] | None, result: tuple[str, str] | None,
           local: bool = False) -> JobStatus:
    """Fill ``job.state``/``reason`` from Slurm's record, the submitit result and the run dir."""
    if slurm:
        job.slurm_state = slurm.get("state")
        job.exit_code = slurm.get("exit_code")
        job.restarts = int(slurm.get("restarts") or 0)
        job.elapsed = slurm.get("elapsed")
    state = job.slurm_state
    rd = Path(job.run_dir) if job.run_dir else None
    summary = _read_json(rd / "summary.json") if rd else None
    interrupted = _read_json(rd / "interrupted.json") if rd else None
    if interrupted and summary and \
            (rd / "summary.json").stat().st_mtime >= (rd / "interrupted.json").stat().st_mtime:
        interrupted = None  # an older attempt was interrupted; a later one finished
    note = f" (after {job.restarts} requeue{'s' * (job.restarts > 1)})" if job.restarts else ""
    if state in QUEUED:
        job.state = "queued"
        job.reason = (slurm or {}).get("reason") or ""
        if interrupted or job.restarts:
            job.reason = f"requeued{note}; {job.reason}".rstrip("; ")
    elif state in RUNNING or (local and result is None and _pid_alive(job.job_id)):
        job.state = "running"
    elif state and state != "COMPLETED":
        job.state = "failed"
        why = _error_line(job.log) or (f"interrupted by {interrupted['signal']}" if interrupted
                                       else "")
        job.reason = f"Slurm {state}, exit {job.exit_code}" + (f": {why}" if why else "")
        if summary is not None and summary.get("status") == "ok" and not interrupted:
            job.reason += " (after writing its results: see metrics.json)"
    elif summary is not None and not interrupted:
        # a benchmark's summary says ok or failed; other jobs' summaries (generate, dedup,
        # leakage, ...) are written once they finished
        if summary.get("status", "ok") == "ok":
            job.state = "done"
            job.metrics = str(rd / "metrics.json") if (rd / "metrics.json").exists() else None
            job.reason = note.strip(" ()")
        else:
            job.state = "failed"
            job.reason = (summary.get("errors") or ["summary.json: status failed"])[0]
    elif result is not None and result[0] == "error":
        job.state, job.reason = "failed", result[1]
    elif interrupted:
        job.state = "failed"
        job.reason = f"interrupted by {interrupted['signal']}: rerun the same command to resume"
    elif state == "COMPLETED" or (result is not None and result[0] == "success"):
        job.state, job.reason = "done", "finished without results (dry_run?)"
    elif local or slurm is None:
        ended = result is not None or (job.log and os.path.exists(job.log))
        job.state = "failed" if local and ended else "unknown"
        job.reason = "the process ended without a result" if job.state == "failed" else \
            "no Slurm record and no results yet"
    return job


def collect(sweep_dir: str | Path) -> list[JobStatus]:
    """Every job of the sweep (or single submitted run) in ``sweep_dir``, with its state."""
    sweep = Path(sweep_dir).resolve()
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such sweep directory")
    jobs = _from_jobs_json(sweep)
    results: dict[str, tuple[str, str] | None] = {}
    if (sweep / ".submitit").is_dir():
        sub_jobs, results = _from_submitit(sweep)
        jobs += sub_jobs
    if not jobs:
        raise FileNotFoundError(
            f"{sweep}: no jobs found (neither jobs.json nor .submitit/); pass the sweep dir "
            "that hydra.sweep.dir or `aligncultura.cluster.slurm submit` printed")
    local = _local_sweep(sweep)
    states = {} if local else slurm_states([j.job_id for j in jobs if j.job_id])
    for job in jobs:
        rec = (states or {}).get(job.job_id) if states is not None else None
        decide(job, rec, results.get(job.job_id), local=local)
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0,
                                       j.job_id or ""))


def status_table(jobs: list[JobStatus]) -> str:
    head = ["#", "job id", "state", "slurm", "elapsed", "overrides", "where"]
    shared = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    rows = []
    for j in jobs:
        overrides = " ".join(o for o in j.overrides if o not in shared)
        where = j.log if j.state == "failed" else j.run_dir or j.log_out or ""
        rows.append([str(j.num if j.num is not None else "?"), j.job_id or "?", j.state,
                     j.slurm_state or "-", j.elapsed or "-", overrides or "-",
                     ("log: " if j.state == "failed" else "") + (where or "-")])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    out = []
    for r in [head, *rows]:
        out.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    if shared:
        out.append(f"  (every job: {' '.join(o for o in jobs[0].overrides if o in shared)})")
    for j in jobs:
        if j.reason:
            out.append(f"  #{j.num if j.num is not None else '?'} ({j.job_id}) {j.state}: {j.reason}")
    return "\n".join(out)
