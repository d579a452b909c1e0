"""jobs.status and the sweep helper without a Slurm: how a job's state is decided from its run
dir, submitit's files and Slurm's records (unit tests; tests/test_slurm_sweep.py runs the same
code against a real Slurm)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from aligncultura.cluster import slurm, sweep_status
from aligncultura.cluster.sweep_status import JobStatus, collect, decide, slurm_states
from jobs import status as status_cli


def run_dir(tmp_path: Path, name: str, *, summary: str | None = None, metrics: bool = False,
            interrupted: bool = False) -> Path:
    rd = tmp_path / name
    rd.mkdir(parents=True)
    if interrupted:
        (rd / "interrupted.json").write_text(json.dumps({"signal": "SIGUSR2", "time": 0}))
        time.sleep(0.01)
    if summary:
        errors = [] if summary == "ok" else ["judge x unscored 3/4 > judge.max_unscored_rate"]
        (rd / "summary.json").write_text(json.dumps({"status": summary, "errors": errors}))
    if metrics:
        (rd / "metrics.json").write_text(json.dumps({"model": "m", "win_rate": {
            "value": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 4, "unscored": 0}}))
    return rd


def job(rd: Path | None, log: Path | None = None) -> JobStatus:
    return JobStatus(num=0, job_id="7", run_dir=str(rd) if rd else None,
                     log=str(log) if log else None)


def test_expand_array_ids():
    assert sweep_status._expand_array("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert sweep_status._expand_array("12_3") == ["12_3"]


def test_slurm_states_counts_requeues_and_prefers_squeue(monkeypatch):
    outputs = {
        "sacct": "5_0|COMPLETED|0:0|00:01:00\n5_1|REQUEUED|0:0|00:00:09\n5_1|RUNNING|0:0|00:00:02\n"
                 "6|FAILED|2:0|00:00:30\n",
        "squeue": "5_1|RUNNING|None|0:05\n5_2|PENDING|BeginTime|0:00\n99|RUNNING|None|1:00\n",
    }
    monkeypatch.setattr(sweep_status, "_run", lambda cmd: outputs[cmd[0]])
    states = slurm_states(["5_0", "5_1", "5_2", "6"])
    assert states["5_0"] == {"state": "COMPLETED", "exit_code": "0:0", "elapsed": "00:01:00",
                             "reason": "", "restarts": 0}
    assert states["5_1"]["state"] == "RUNNING" and states["5_1"]["restarts"] == 1
    assert states["5_1"]["elapsed"] == "0:05"
    assert states["5_2"]["state"] == "PENDING" and states["5_2"]["reason"] == "BeginTime"
    assert states["6"]["exit_code"] == "2:0" and "99" not in states
    monkeypatch.setattr(sweep_status, "_run", lambda cmd: None)
    assert slurm_states(["5_0"]) is None  # no Slurm here


def test_done_needs_ok_summary_and_metrics(tmp_path):
    ok = decide(job(run_dir(tmp_path, "a", summary="ok", metrics=True)),
                {"state": "COMPLETED", "exit_code": "0:0"}, None)
    assert (ok.state, ok.metrics) == ("done", str(tmp_path / "a" / "metrics.json"))
    bad = decide(job(run_dir(tmp_path, "b", summary="failed", metrics=True)),
                 {"state": "COMPLETED"}, None)
    assert bad.state == "failed" and "max_unscored_rate" in bad.reason


def test_failed_job_names_its_error_and_log(tmp_path):
    log = tmp_path / "slurm-7.err"
    log.write_text("Traceback ...\nerror: dataset.path=/x.csv: no such file; fix the path\n")
    j = decide(job(run_dir(tmp_path, "a"), log), {"state": "FAILED", "exit_code": "2:0"}, None)
    assert j.state == "failed" and j.log == str(log)
    assert j.reason == "Slurm FAILED, exit 2:0: error: dataset.path=/x.csv: no such file; fix " \
                       "the path"
    killed = decide(job(run_dir(tmp_path, "b"), tmp_path / "missing.err"),
                    {"state": "FAILED", "exit_code": "0:9"}, None)
    assert killed.reason == "Slurm FAILED, exit 0:9"


def test_queued_running_and_requeued(tmp_path):
    assert decide(job(None), {"state": "PENDING", "reason": "Resources"}, None).state == "queued"
    assert decide(job(None), {"state": "RUNNING"}, None).state == "running"
    rd = run_dir(tmp_path, "a", interrupted=True)
    requeued = decide(job(rd), {"state": "PENDING", "reason": "BeginTime", "restarts": 1}, None)
    assert requeued.state == "queued" and requeued.reason == "requeued (after 1 requeue); BeginTime"
    # interrupted and not requeued (requeue off, or out of retries): failed, with how to resume
    stopped = decide(job(rd), None, None)
    assert stopped.state == "failed" and "rerun the same command" in stopped.reason


def test_an_older_interruption_does_not_hide_a_later_success(tmp_path):
    rd = run_dir(tmp_path, "a", interrupted=True, summary="ok", metrics=True)
    j = decide(job(rd), {"state": "COMPLETED", "restarts": 1}, None)
    assert (j.state, j.restarts, j.reason) == ("done", 1, "after 1 requeue")


def test_submitit_result_and_local_processes(tmp_path):
    err = decide(job(None), None, ("error", "ValueError: boom"), local=True)
    assert (err.state, err.reason) == ("failed", "ValueError: boom")
    me = JobStatus(num=0, job_id=str(os.getpid()))
    assert decide(me, None, None, local=True).state == "running"  # a live local process
    assert decide(job(None), None, None).state == "unknown"  # no Slurm, no files yet
    dry = decide(job(None), None, ("success", ""), local=True)
    assert dry.state == "done" and "dry_run" in dry.reason


def _fake_sbatch(tmp_path, monkeypatch) -> None:
    """sbatch that prints ids 101, 102, ...; the counter lives in a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/bash\nn=$(( $(cat {bin_dir}/n 2>/dev/null || echo 100) + 1 ))\n'
                    f'echo $n > {bin_dir}/n\necho "$n;cluster"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_submit_sweep_writes_one_run_dir_per_point_and_jobs_json(tmp_path, monkeypatch):
    _fake_sbatch(tmp_path, monkeypatch)
    sweep = tmp_path / "sweep"
    jobs = slurm.submit_sweep("benchmark", ["model=qwen3_8b,smollm2_135m", "dataset.limit=2"],
                              sweep, gpus_per_node=1)
    assert [(j["job_id"], Path(j["run_dir"]).name) for j in jobs] == [
        ("101", "0_model=qwen3_8b"), ("102", "1_model=smollm2_135m")]
    assert json.loads((sweep / "jobs.json").read_text())["jobs"] == jobs
    script = (sweep / "1_model=smollm2_135m" / "sbatch.sh").read_text()
    assert f"run_dir={sweep}/1_model=smollm2_135m" in script and "#SBATCH --gpus-per-node=1" in script

    # what jobs.status makes of it while Slurm has one job running and one pending
    outputs = {"sacct": "", "squeue": "101|RUNNING|None|0:10\n102|PENDING|Priority|0:00\n"}
    monkeypatch.setattr(sweep_status, "_run", lambda cmd: outputs[cmd[0]])
    got = collect(sweep)
    assert [(j.num, j.job_id, j.state, j.overrides[0]) for j in got] == [
        (0, "101", "running", "model=qwen3_8b"), (1, "102", "queued", "model=smollm2_135m")]
    assert got[0].log == f"{sweep}/0_model=qwen3_8b/slurm-101.err"


def test_cli_sweep_dry_run_lists_the_jobs(tmp_path, capsys):
    rc = slurm.main(["submit", "--job", "benchmark", "--sweep-dir", str(tmp_path), "--dry-run",
                     "--", "model=a,b", "dataset.limit=range(1,3)"])
    assert rc == 0
    assert capsys.readouterr().out.splitlines() == [
        "# job 0: model=a dataset.limit=1", "# job 1: model=a dataset.limit=2",
        "# job 2: model=b dataset.limit=1", "# job 3: model=b dataset.limit=2"]


def test_status_cli_tables_json_and_errors(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    a = run_dir(sweep, "0_a", summary="ok", metrics=True)
    b = run_dir(sweep, "1_b")
    (b / "slurm-12.err").write_text("error: out of memory in the judge; lower engine.batch_size\n")
    slurm.write_jobs(sweep, "benchmark", [
        {"num": 0, "job_id": "11", "overrides": ["x=1", "y=0"], "run_dir": str(a)},
        {"num": 1, "job_id": "12", "overrides": ["x=2", "y=0"], "run_dir": str(b)}])
    monkeypatch.setattr(sweep_status, "_run", lambda cmd: {
        "sacct": "11|COMPLETED|0:0|00:02:00\n12|OUT_OF_MEMORY|0:125|00:01:00\n",
        "squeue": ""}[cmd[0]])
    assert status_cli.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 jobs: 1 done, 1 failed" in out
    assert f"log: {b}/slurm-12.err" in out and "OUT_OF_MEMORY" in out and "lower engine" in out
    assert "(every job: y=0)" in out and "0_a" in out and "50.0 [40.0,60.0]" in out
    assert status_cli.main([str(sweep), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"done": 1, "failed": 1}
    assert [m["model"] for m in doc["metrics"]] == ["0_a"]
    assert status_cli.main([str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert status_cli.main([str(tmp_path / "empty")]) == 2
    assert "no jobs found" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["x=glob(*)", "x=interval(0,1)"])
def test_unsupported_sweeps_are_refused(bad):
    with pytest.raises(Exception):  # noqa: B017 - Hydra or our own ValueError, both fine
        slurm.expand_sweep([bad])
