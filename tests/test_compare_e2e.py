"""End to end: jobs.compare over two real benchmark runs (embedded model, real vLLM).

The session's quickstart benchmark (4 prompts) plus one more run here over 3 of them with the same
row cache: its generations and verdicts come from the cache, and its one engine start serves only
the determinism probe (one prompt generated and judged again, the cache bypassed)."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import run_job

from aligncultura.benchmark.metrics import compute_metrics
from aligncultura.compare.bootstrap import HEADLINE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(quickstart_benchmark, tmp_path_factory):
    first, _ = quickstart_benchmark
    second = tmp_path_factory.mktemp("bench3") / "run3"
    # on 3 prompts one contradictory harmlessness verdict of the 135M demo judge ("safe" with a
    # harm category: unscored) is 33% of that criterion: let it pass the guard here
    proc = run_job("benchmark", "experiment=quickstart", "engine=local", "dataset.limit=3",
                   "generation.max_tokens=32", "bench.determinism_sample=0.34",
                   "judge.max_unscored_rate=0.5",
                   f"run_dir={second}", "wandb.group=tests", f"cache_dir={first.parent / 'cache'}")
    if proc.returncode != 0:
        pytest.fail(f"benchmark failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    out = second.parent / "compare"
    cmp = run_job("compare", f"runs=[{first},{second}]", f"run_dir={out}", "n_resamples=2000")
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    return first, second, out, cmp


def test_second_run_reused_the_cache_and_probed_determinism(two_runs):
    _, second, _, _ = two_runs
    summary = json.loads((second / "summary.json").read_text())
    assert summary["generations"]["cached"] == 3 and summary["generations"]["computed"] == 0
    assert summary["judgments"]["cached"] == 15 and summary["judgments"]["computed"] == 0
    det = json.loads((second / "metrics.json").read_text())["determinism"]
    assert det["sample_prompts"] == 1 and det["batch_size"] == 1 and det["order"] == "reverse"
    assert det["responses"] == 1 and det["verdicts"] == 5
    assert det["responses_changed"] in (0, 1) and 0 <= det["verdicts_changed"] <= 5
    assert det["responses_changed_share"] == det["responses_changed"] / det["responses"]


def test_comparison_numbers_match_each_run(two_runs):
    first, second, out, _ = two_runs
    c = json.loads((out / "comparison.json").read_text())
    labels = [r["label"] for r in c["runs"]]
    assert labels == ["smollm2_135m [run]", "smollm2_135m [run3]"]
    for label, run in zip(labels, (first, second), strict=True):
        m = json.loads((run / "metrics.json").read_text())
        for key in HEADLINE:
            if m[key] and m[key]["value"] is not None:
                assert c["models"][label][key]["value"] == pytest.approx(m[key]["value"]), key
    # the paired differences over the 3 shared prompts, recomputed with metrics.compute_metrics
    j1 = pq.read_table(first / "judgments.parquet")
    j2 = pq.read_table(second / "judgments.parquet")
    common = sorted(set(j1.column("row_id").to_pylist()) & set(j2.column("row_id").to_pylist()))
    assert len(common) == 3
    sub = [t.filter(pc.is_in(t.column("row_id"), value_set=pc.cast(common, "string")))
           for t in (j1, j2)]
    ma, mb = (compute_metrics(t, None, n_resamples=10) for t in sub)
    rows = {r["metric"]: r for r in c["pairwise"]}
    assert rows and all(r["n_prompts"] == 3 for r in rows.values())
    for key, r in rows.items():
        assert r["diff"] == pytest.approx(ma[key]["value"] - mb[key]["value"], abs=1e-9)
    # both runs got the shared prompts' generations and verdicts from one cache: no difference
    cols = ["row_id", "criterion", "order", "verdict", "status"]
    assert sub[0].select(cols).sort_by([(x, "ascending") for x in cols[:3]]).equals(
        sub[1].select(cols).sort_by([(x, "ascending") for x in cols[:3]]))
    for r in rows.values():
        assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 and r["p"] == 1.0


def test_report_plots_and_determinism_section(two_runs):
    _, second, out, proc = two_runs
    report = (out / "report.md").read_text()
    det = json.loads((second / "metrics.json").read_text())["determinism"]
    assert "## Pairwise differences" in report and "Holm-Bonferroni" in report
    assert "judged different prompt sets" in report
    assert f"{det['responses_changed']}/{det['responses']}" in report
    for name in ("metrics", "pairwise", "failures", "efficiency"):
        data = (out / "plots" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "report:" in proc.stdout
