"""jobs.judge_agreement: judges against gold labels, rubric and scorer side by side, on the
shipped labelled file (aligncultura/data/sample_data/judge_labels.jsonl, written for this
project), with real engines on the CPU."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pyarrow.parquet as pq
import pytest

from aligncultura.benchmark.labels import LABELS, read_labels, roc_auc
from aligncultura.errors import InputError
from tests.conftest import run_job


def test_roc_auc_counts_ties_half():
    pos = np.array([True, True, False, False])
    assert roc_auc(pos, np.array([0.9, 0.8, 0.1, 0.2])) == 1.0
    assert roc_auc(pos, np.array([0.1, 0.2, 0.9, 0.8])) == 0.0
    assert roc_auc(pos, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert np.isnan(roc_auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_the_shipped_labels_cover_every_criterion_and_domain():
    rows = read_labels(resources.files("aligncultura.data") / "sample_data" / "judge_labels.jsonl")
    assert len(rows) == 16 and len({r["domain"] for r in rows}) == 4
    for criterion, allowed in LABELS.items():
        assert {r[criterion] for r in rows} == set(allowed), criterion


@pytest.mark.parametrize("body, match", [
    ('{"id": "a", "question": "Q?", "response": "R.", "harmless": "maybe"}',
     r"x.jsonl:1: harmless label 'maybe' is not one of safe, unsafe"),
    ('{"id": "a", "question": "Q?", "harmless": "safe"}', r"column 'response' missing"),
    ('{"id": "a", "question": "Q?", "response": "R."}', r"no label column"),
    ('{"id": "a", "question": "Q?", "response": "R.", "truthful": "yes"}\n'
     '{"id": "a", "question": "Q2?", "response": "R2.", "truthful": "no"}',
     r"x.jsonl:2: id 'a' is repeated"),
])
def test_bad_label_files_are_one_line_errors(tmp_path, body, match):
    path = tmp_path / "x.jsonl"
    path.write_text(body + "\n")
    with pytest.raises(InputError, match=match):
        read_labels(path)


def test_a_bad_label_file_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,question,response,truthful\na,Q?,R.,perhaps\n")
    proc = run_job("judge_agreement", f"labels={path}", f"run_dir={tmp_path / 'r'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "labels.csv:2: truthful label 'perhaps' is not one of yes, no" in line


def test_rubric_and_scorer_side_by_side_against_labels(tiny_classifier, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_job("judge_agreement", "criteria=[harmless,truthful]", "compare_rubric=true",
                   "scorer/harmless=beaver_dam_7b", "scorer.harmless.model.source=local",
                   f"scorer.harmless.model.path={tiny_classifier}",
                   "scorer.harmless.model.name=tiny_beaver",
                   "scorer/truthful=truthfulqa_truth", "scorer.truthful.model.source=embedded",
                   "scorer.truthful.model.name=smollm2_135m", "scorer.truthful.model.path=null",
                   "scorer.truthful.model.engine_kwargs.max_model_len=2048", "n_resamples=200",
                   f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((run_dir / "agreement.json").read_text())
    assert set(result) == {"smollm2_135m (rubric)", "tiny_beaver (classifier)",
                           "smollm2_135m (yes_no)"}
    assert set(result["smollm2_135m (rubric)"]) == {"harmless", "truthful"}
    judged = pq.read_table(run_dir / "judgments.parquet").to_pylist()
    gold = {r["id"]: r for r in read_labels(
        resources.files("aligncultura.data") / "sample_data" / "judge_labels.jsonl")}
    for name, criterion in (("tiny_beaver (classifier)", "harmless"),
                            ("smollm2_135m (yes_no)", "truthful")):
        a = result[name][criterion]
        mine = [j for j in judged if j["criterion"] == criterion
                and j["prompt_version"].startswith(("classifier", "yes_no"))]
        assert a["labelled"] == 16 == len(mine) and a["unscored"] == 0
        agree = sum(gold[j["row_id"]][criterion] == j["verdict"] for j in mine)
        assert a["accuracy"] == pytest.approx(agree / 16)
        lo, hi = a["accuracy_ci"]
        assert lo <= a["accuracy"] <= hi
        assert 0.0 <= a["auc"] <= 1.0 and a["auc_ci"][0] <= a["auc"] <= a["auc_ci"][1]
        base = a["gold_base_rate"]
        above = sum(j["score"] > a["threshold_at_base_rate"] for j in mine) / 16
        assert abs(above - base) <= 1 / 16  # the threshold reproduces the gold base rate
        assert set(a["by_domain"]) == {"Heritage", "Music", "Performance", "Books"}
    assert "auc" not in result["smollm2_135m (rubric)"]["harmless"]  # a rubric has no score
    for line in ("harmless     tiny_beaver (classifier): accuracy",
                 "truthful     smollm2_135m (rubric): accuracy"):
        assert line in proc.stdout
