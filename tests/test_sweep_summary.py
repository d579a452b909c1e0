"""A Hydra multirun in which one job fails ends with every job's state and the failed job's own
one-line error, exit 2, no traceback; the job that succeeded keeps its results. Through the
command line, with Hydra's basic launcher (jobs in this process) and with the submitit launcher
(hydra/launcher=local: jobs as their own processes, the code path of hydra/launcher=slurm).
jobs.dedup needs no engine, so each sweep takes seconds."""

from __future__ import annotations

import json

import pytest
from conftest import run_job


@pytest.fixture()
def inputs(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id,question\na1,What is the tea ceremony called in Japan?\n"
                    "a2,How is Diwali celebrated?\na3,How is Diwali celebrated?\n")
    return good, tmp_path / "missing.csv"


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=local"]], ids=["basic", "submitit"])
def test_a_sweep_with_a_failed_job_ends_with_a_summary_not_a_traceback(inputs, tmp_path, launcher):
    good, missing = inputs
    sweep = tmp_path / "sweep"
    proc = run_job("dedup", "-m", *launcher, f"input.path={good},{missing}",
                   f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert f"sweep {sweep.resolve()}: 2 jobs" in proc.stdout
    rows = [x for x in proc.stdout.splitlines() if str(good) in x or str(missing) in x]
    assert any("done" in x and str(good) in x for x in rows), proc.stdout
    assert any("failed" in x and str(missing) in x for x in rows), proc.stdout
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: job 1: ")]
    assert len(errors) == 1 and f"{missing} does not exist (set input.path=...)" in errors[0]
    assert not any(x.startswith("error: job 0") for x in proc.stderr.splitlines())
    summary = json.loads((sweep / "0" / "summary.json").read_text())  # kept, whole
    assert summary["rows"]["read"] == 3


def test_a_sweep_where_every_job_succeeds_exits_0_with_its_table(inputs, tmp_path):
    good, _ = inputs
    proc = run_job("dedup", "-m", f"input.path={good}", "dedup.method=minhash,simhash",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count(" done ") == 2 and "error:" not in proc.stderr
