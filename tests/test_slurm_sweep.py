"""Sweeps of the real benchmark through a real Slurm: Hydra multirun with the submitit preset,
fire-and-forget submission, a killed job, preemption with requeue, and `jobs.status`.

Opt in with ALIGNCULTURA_SLURM_TESTS=1 (root: starts a local Slurm). The embedded model runs on
CPU; all tests share one row cache, so at most 2 vLLM engines start in this module (test 1),
and later tests reuse the rows (a rerun computes only what is missing). Slurm's local node has 2
CPUs and each benchmark task asks for 2, so engines never run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from slurm_env import ensure_slurm, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# the demo judge truncates some verdicts at 160 tokens (unscored): these tests prove the
# plumbing, so such a run still counts as finished
TINY = ["experiment=quickstart", "generation.max_tokens=16", "judge.max_tokens=160",
        "judge.max_unscored_rate=1.0"]
ENV = {**os.environ, "WANDB_MODE": "offline", "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One row cache for the module: rows computed by test 1 are reused by the later tests."""
    return tmp_path_factory.mktemp("slurm_rows")


def wait_until(pred, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def status(sweep: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "jobs.status", str(sweep), "--json"], cwd="/tmp",
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def array_task(sweep: Path, task: int) -> str | None:
    found = sorted((sweep / ".submitit").glob(f"*_{task}"))
    return found[0].name if found else None


def job_logs(sweep: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-4000:]}"
                     for p in sorted((sweep / ".submitit").glob("*/*_log.*")))


def check_finished_run(run_dir: Path, rows: int) -> dict:
    """A finished benchmark run dir: results, accounting, one offline W&B run, a manifest."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["generations"]["written"] == rows, summary
    assert {"win_rate", "joint_hhh", "efficiency"} <= set(
        json.loads((run_dir / "metrics.json").read_text()))
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    wandb_runs = list(run_dir.glob("wandb/**/offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in wandb_runs] == [run_id], wandb_runs
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["packages"]["ray"] and manifest["packages"]["torch"]
    assert "cuda" in manifest and "gpus" in manifest
    assert Path(manifest["slurm"]["sbatch_script"]).is_file(), manifest["slurm"]
    assert manifest["slurm"]["SLURM_JOB_NODELIST"] == "localhost"
    return {"summary": summary, "manifest": manifest}


def test_hydra_sweep_of_two_jobs_one_preempted_and_requeued(tmp_path, cache_dir):
    """`-m dataset.limit=2,3 hydra/launcher=slurm`: one array task per row limit, each starting
    its own Ray inside its allocation. Task 1 gets USR2 (a preemption) once its run has started:
    it stops cleanly (interrupted.json), submitit requeues it, and the rerun finishes in the
    same run dir, computing only the row task 0 did not."""
    ensure_slurm()
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "jobs.benchmark", "-m", "dataset.limit=2,3",
           "hydra/launcher=slurm", *TINY, f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"]
    launcher = subprocess.Popen(cmd, cwd="/tmp", env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    task1, ok = None, False
    try:
        task1 = wait_until(lambda: array_task(sweep, 1), 120, "the array to be submitted")
        array_id = task1.split("_")[0]
        # its first progress line: the run is under way (task 0's rows served from the cache)
        log1 = sweep / ".submitit" / task1 / f"{task1}_0_log.err"
        wait_until(lambda: log1.exists() and "[generate " in log1.read_text(), 420,
                   f"task {task1} to start generating")
        subprocess.run(["scancel", "--signal=USR2", task1], check=True)
        out, _ = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, f"{out[-3000:]}\n{job_logs(sweep)}"
        # the launcher returns once the results exist; the jobs end a few seconds later
        assert [wait_for_job(f"{array_id}_{i}", 120) for i in (0, 1)] == ["COMPLETED"] * 2
        ok = True
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if task1 and not ok:
            subprocess.run(["scancel", task1.split("_")[0]], capture_output=True)

    for num, rows in [(0, 2), (1, 3)]:
        run_dir = sweep / f"{num}_smollm2_135m"
        facts = check_finished_run(run_dir, rows)
        slurm = facts["manifest"]["slurm"]
        assert (slurm["SLURM_ARRAY_JOB_ID"], slurm["SLURM_ARRAY_TASK_ID"]) == (array_id, str(num))
        assert slurm["sbatch_script"].endswith(f"{array_id}_submission.sh")
        # libraries' lines go to the run's own log (console/logs.py); the Slurm log stays short
        log = run_dir / "logs" / "job.log"
        assert "Started a local Ray instance" in log.read_text(), "no Ray inside the allocation"
        slurm_log = sweep / ".submitit" / f"{array_id}_{num}" / f"{array_id}_{num}_0_log.err"
        assert "Started a local Ray instance" not in slurm_log.read_text()

    run1 = sweep / "1_smollm2_135m"
    assert json.loads((run1 / "interrupted.json").read_text())["signal"] == "SIGUSR2"
    assert json.loads((run1 / "manifest.json").read_text())["slurm"]["SLURM_RESTART_COUNT"] == "1"
    gens = json.loads((run1 / "summary.json").read_text())["generations"]
    assert gens["cached"] >= 2 and gens["computed"] >= 1, gens  # task 0's rows were reused

    report = status(sweep)
    assert [(j["num"], j["state"], j["restarts"]) for j in report["jobs"]] == [
        (0, "done", 0), (1, "done", 1)], report["jobs"]
    assert sorted(m["model"] for m in report["metrics"]) == ["0_smollm2_135m", "1_smollm2_135m"]


def _submitit_process(array_id: str, task: int) -> psutil.Process | None:
    """The job's Python process (not the srun that started it: same arguments, same env)."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        try:
            if not (cmd and Path(cmd[0]).name.startswith("python")
                    and "submitit.core._submit" in cmd):
                continue
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if (env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")) == (array_id,
                                                                               str(task)):
            return p
    return None


def test_fire_and_forget_sweep_with_a_killed_job(tmp_path, cache_dir):
    """The launcher process is stopped right after submitting (nothing waits for the jobs); task 1
    is killed with SIGKILL as soon as it runs. jobs.status reports it failed with its log within
    seconds, and task 0 (rows cached by the previous test) finishes intact."""
    ensure_slurm()
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "jobs.benchmark", "-m", "dataset.limit=2,4",
           "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", *TINY,
           f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}"]
    launcher = subprocess.Popen(cmd, cwd="/tmp", env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    task1 = None
    try:
        task1 = wait_until(lambda: array_task(sweep, 1), 120, "the array to be submitted")
        launcher.send_signal(signal.SIGINT)  # Ctrl-C: the jobs do not need the launcher
        launcher.wait(timeout=30)
        array_id = task1.split("_")[0]
        proc = wait_until(lambda: _submitit_process(array_id, 1), 120, f"{task1} to run")
        proc.kill()
        t_kill = time.monotonic()

        def failed():
            jobs = {j["num"]: j for j in status(sweep)["jobs"]}
            return jobs if jobs[1]["state"] == "failed" else None

        jobs = wait_until(failed, 60, f"jobs.status to report {task1} failed", poll_s=1)
        took = time.monotonic() - t_kill
        assert took < 30, f"reported only {took:.0f}s after the kill"
        log = sweep / ".submitit" / task1 / f"{task1}_0_log.err"
        assert jobs[1]["log"] == str(log) and log.exists(), jobs[1]
        assert "FAILED" in jobs[1]["reason"], jobs[1]

        text = subprocess.run([sys.executable, "-m", "jobs.status", str(sweep)], cwd="/tmp",
                              env=ENV, capture_output=True, text=True, timeout=60).stdout
        assert f"log: {log}" in text, text

        done = wait_until(lambda: status(sweep)["jobs"][0]["state"] in ("done", "failed"), 300,
                          "task 0 to finish", poll_s=2)
        report = status(sweep)
        assert done and report["jobs"][0]["state"] == "done", f"{report}\n{job_logs(sweep)}"
        check_finished_run(sweep / "0_smollm2_135m", 2)
        assert [m["model"] for m in report["metrics"]] == ["0_smollm2_135m"]
        assert report["counts"] == {"done": 1, "failed": 1}
        assert not (sweep / "1_smollm2_135m" / "metrics.json").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if task1:
            subprocess.run(["scancel", task1.split("_")[0]], capture_output=True)


def test_sbatch_job_preempted_requeues_and_resumes(tmp_path, cache_dir):
    """`python -m aligncultura.cluster.slurm submit` returns at once; USR2 to the batch script (what
    `--signal=B:USR2@120` sends before the time limit) stops the driver, the script shuts its Ray
    down and requeues the job, and the rerun finishes the same run dir."""
    ensure_slurm()
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aligncultura.cluster.slurm", "submit", "--job", "benchmark",
         "--run-dir", str(run_dir), "--cpus-per-task", "2", "--time", "00:20:00",
         "--ray-bootstrap-home", "--", *TINY, "dataset.limit=3", f"cache_dir={cache_dir}"],
        cwd="/tmp", env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30
    job_id = proc.stdout.split("job_id=")[1].split()[0]
    out = run_dir / f"slurm-{job_id}.out"
    try:
        wait_until(lambda: out.exists() and "driver: " in out.read_text(), 300,
                   f"job {job_id} to start its driver")
        subprocess.run(["scancel", "--batch", "--signal=USR2", job_id], check=True)
        state = wait_for_job(job_id, timeout_s=400)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
        for tmp in (f"/tmp/ray_{job_id}", f"/tmp/ray_home_{job_id}"):  # the job's Ray dirs
            shutil.rmtree(tmp, ignore_errors=True)
    logs = f"{out.read_text()}\n{(run_dir / f'slurm-{job_id}.err').read_text()[-3000:]}"
    assert state == "COMPLETED", logs
    attempts = subprocess.run(["sacct", "-j", job_id, "-D", "-X", "-n", "-P",
                               "--format=State"], capture_output=True, text=True).stdout.split()
    assert attempts == ["REQUEUED", "COMPLETED"], attempts
    assert "USR2: stopping the driver" in logs and f"requeueing job {job_id}" in logs, logs
    facts = check_finished_run(run_dir, 3)
    assert facts["manifest"]["slurm"]["SLURM_RESTART_COUNT"] == "1"
    assert facts["manifest"]["slurm"]["sbatch_script"] == str(run_dir / "sbatch.sh")
    report = status(run_dir)
    assert [(j["job_id"], j["state"], j["restarts"]) for j in report["jobs"]] == [
        (job_id, "done", 1)], report
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(f"/tmp/ray_{job_id}/" in a for a in (p.info["cmdline"] or []))]
    assert not leftovers, f"Ray processes of job {job_id} still running: {leftovers}"


def test_a_slurm_sweep_with_a_failed_job_ends_with_a_summary_not_a_traceback(tmp_path):
    """hydra/launcher=slurm: one job of two fails on its input (jobs.dedup, no engine); the
    launcher ends with every job's state and that job's own error line, exit 2."""
    ensure_slurm()
    good, missing = tmp_path / "good.csv", tmp_path / "missing.csv"
    good.write_text("id,question\na1,How is Diwali celebrated?\na2,How is Diwali celebrated?\n")
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "jobs.dedup", "-m", "hydra/launcher=slurm",
                           "hydra.launcher.cpus_per_task=1", f"input.path={good},{missing}",
                           f"hydra.sweep.dir={sweep}"], cwd="/tmp", env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:] + job_logs(sweep)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    rows = [x for x in proc.stdout.splitlines() if str(good) in x or str(missing) in x]
    assert any(" done " in x and str(good) in x for x in rows), proc.stdout
    assert any(" failed " in x and str(missing) in x for x in rows), proc.stdout
    assert [x for x in proc.stderr.splitlines() if x.startswith("error: job 1: ")
            and f"{missing} does not exist" in x], proc.stderr
    assert (sweep / "0" / "summary.json").exists()
