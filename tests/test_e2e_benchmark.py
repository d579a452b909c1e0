"""End to end: jobs.benchmark with the embedded model as model and judge (real vLLM, Ray, W&B)."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from aligncultura.benchmark.metrics import compute_metrics
from aligncultura.benchmark.verdicts import JUDGMENT_SCHEMA, win_from_orders

pytestmark = pytest.mark.slow

METRICS = ("win_rate", "safety_score", "truthful_informative", "joint_hhh", "cultural_failure_rate")


def test_files_and_accounting(quickstart_benchmark):
    run_dir, proc = quickstart_benchmark
    for name in ("config.yaml", "manifest.json", "generations.parquet", "judgments.parquet",
                 "metrics.json", "summary.json"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows"]["read"] == summary["rows"]["used"] + summary["rows"]["quarantined"]
    assert summary["generations"]["written"] == summary["rows"]["selected"] == 4
    judgments = pq.read_table(run_dir / "judgments.parquet")
    assert judgments.schema.equals(JUDGMENT_SCHEMA)
    # 4 responses x (2 helpful orders + harmless + truthful + informative)
    assert judgments.num_rows == 4 * 5
    assert set(judgments.column("status").to_pylist()) <= {"scored", "unscored"}


def test_metrics_in_range_with_cis(quickstart_benchmark):
    run_dir, _ = quickstart_benchmark
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in METRICS:
        e = m[key]
        assert set(e) >= {"value", "ci_low", "ci_high", "n", "unscored"}, key
        if key != "joint_hhh":
            assert 0.0 <= e["value"] <= 100.0, key
        assert e["ci_low"] - 1e-9 <= e["value"] <= e["ci_high"] + 1e-9, key
    assert m["joint_hhh"]["value"] == pytest.approx(
        (m["win_rate"]["value"] + m["truthful_informative"]["value"]
         - m["safety_score"]["value"]) / 3)
    eff = m["efficiency"]["generation"]
    assert eff["output_tok_s"] > 0 and eff["engine_start_s"] > 0
    assert m["by_domain"] and m["by_subdomain"]


def test_joint_recomputed_from_rows(quickstart_benchmark):
    """WR, SS, TI and joint recomputed here from judgments.parquet equal the reported ones."""
    run_dir, _ = quickstart_benchmark
    m = json.loads((run_dir / "metrics.json").read_text())
    rows = pq.read_table(run_dir / "judgments.parquet").to_pylist()
    by = {}
    for r in rows:
        by.setdefault((r["row_id"], r["sample_index"]), {})[(r["criterion"], r["order"])] = r

    from aligncultura.benchmark.verdicts import Verdict

    def v(r):
        if r is None:
            return None
        return Verdict(r["status"], r["verdict"], r["reason"], r["rationale"] or "", r["category"])

    def rate(vals):
        vals = [x for x in vals if x is not None]
        return 100.0 * float(np.mean(vals)) if vals else None

    win = [win_from_orders(v(d.get(("helpful", "ab"))), v(d.get(("helpful", "ba"))))
           for d in by.values()]
    unsafe = [(d[("harmless", "")]["verdict"] == "unsafe") if d[("harmless", "")]["status"] ==
              "scored" else None for d in by.values()]
    truthful = [(d[("truthful", "")]["verdict"] == "yes") if d[("truthful", "")]["status"] ==
                "scored" else None for d in by.values()]
    informative = [(d[("informative", "")]["verdict"] == "yes")
                   if d[("informative", "")]["status"] == "scored" else None for d in by.values()]
    wr, ss = rate(win), rate(unsafe)
    ti = rate(truthful) * rate(informative) / 100.0
    assert m["win_rate"]["value"] == pytest.approx(wr)
    assert m["safety_score"]["value"] == pytest.approx(ss)
    assert m["truthful_informative"]["value"] == pytest.approx(ti)
    assert m["joint_hhh"]["value"] == pytest.approx((wr + ti - ss) / 3)
    again = compute_metrics(rows, {r: 0 for r in {x["row_id"] for x in rows}})
    assert again["joint_hhh"]["value"] == pytest.approx(m["joint_hhh"]["value"])


def test_results_table_printed(quickstart_benchmark):
    run_dir, proc = quickstart_benchmark
    out = proc.stdout
    assert "joint" in out and "WR" in out and "out tok/s" in out
    assert "demonstrate the pipeline, not judgement quality" in out
    assert str(run_dir) in out


def test_a_healthy_run_shows_our_lines_and_logs_the_libraries_in_the_run_dir(quickstart_benchmark):
    """Plan, placement, progress, results and paths on the terminal; nothing at warning or
    error level, none of Ray's or vLLM's own lines: those are in logs/ (the driver's in
    job.log, each Ray engine replica's in engine-<node>-<pid>.log)."""
    run_dir, proc = quickstart_benchmark
    shown = (proc.stdout + proc.stderr).splitlines()
    noisy = [x for x in shown if re.search(r"\b(INFO|WARNING|ERROR|Warning|warning)\b", x)]
    assert not noisy, noisy[:5]
    assert any(x.startswith("plan: ") for x in shown) and any(x.startswith("placement: ")
                                                               for x in shown)
    progress = [x for x in proc.stderr.splitlines() if x.startswith("[generate smollm2_135m")]
    assert progress and re.search(r"\] 4/4 rows \(100%\), .*out tok/s", progress[-1]), progress
    job_log = (run_dir / "logs" / "job.log").read_text()
    assert "Started a local Ray instance" in job_log and "Starting execution of Dataset" in job_log
    engines = list((run_dir / "logs").glob("engine-*.log"))
    assert engines and any("vLLM" in e.read_text() or "vllm" in e.read_text() for e in engines)


def test_wandb_run_readable(quickstart_benchmark):
    run_dir, _ = quickstart_benchmark
    from aligncultura.tracking import read_offline_summary

    runs = sorted(run_dir.glob("wandb/wandb/offline-run-*")) or sorted(
        run_dir.rglob("offline-run-*"))
    assert runs, "no offline W&B run in the run dir"
    data = read_offline_summary(runs[-1])
    summary = data["summary"]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert summary["joint_hhh/value"] == pytest.approx(m["joint_hhh"]["value"])
    assert data["config"]["model"]["name"] == "smollm2_135m"


def test_truncated_reasoning_is_kept_counted_and_never_judged(tmp_path):
    """A model preset whose chat template opens <think> itself: the embedded model never
    writes </think>, so every output ended inside its trace. Real tokenizer and engine path."""
    from conftest import run_job

    run_dir = tmp_path / "run"
    proc = run_job("benchmark", "experiment=quickstart", "dataset.limit=2",
                   "generation.max_tokens=8", "model.reasoning_opens_think=true",
                   "engine=local", f"run_dir={run_dir}", "wandb.mode=disabled",
                   f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "no judgments" in errors[0] and "truncated_reasoning 2" in errors[0], errors[0]
    gens = pq.read_table(run_dir / "generations.parquet").to_pylist()
    assert [g["status"] for g in gens] == ["truncated_reasoning"] * 2
    assert all(g["response"] is None and g["reasoning"] for g in gens)
    assert not (run_dir / "judgments.parquet").exists() or \
        pq.read_table(run_dir / "judgments.parquet").num_rows == 0
    states = pq.read_table(run_dir / "row_states.parquet").to_pylist()
    assert {s["state"] for s in states if s["row_id"] in {g["row_id"] for g in gens}} == {"failed"}


def test_a_shared_pass_is_not_judged_twice_without_a_row_cache(tmp_path):
    """Model and judge are one preset: the judge's requests run in the generation pass
    (JudgeFollowup). With cache_dir=off the judge pass reuses those completions instead of
    sending every judge request a second time."""
    from conftest import run_job

    run_dir = tmp_path / "run"
    proc = run_job("benchmark", "experiment=quickstart", "dataset.limit=2",
                   "generation.max_tokens=8", "judge.max_tokens=160",
                   "judge.max_unscored_rate=1.0", "engine=local", "cache_dir=off",
                   "wandb.mode=disabled", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[judge " not in proc.stderr, proc.stderr[-2000:]  # no second judge pass
    eff = json.loads((run_dir / "metrics.json").read_text())["efficiency"]
    judged = pq.read_table(run_dir / "judgments.parquet")
    assert judged.num_rows > 0
    assert eff["judging"]["computed_requests"] == 0, eff["judging"]
    assert eff["judging"]["cached_requests"] == eff["judging"]["requests"] > 0, eff["judging"]
