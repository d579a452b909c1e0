"""The maths of jobs.compare checked against independent computations: scipy's bootstrap, a
naive loop implementation of the two-stage cluster bootstrap, hand-worked Holm adjustments and a
direct Cohen's kappa (sklearn's when it is installed)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from aligncultura.benchmark.agreement import cohen_kappa, determinism_changes, pooled_agreement
from aligncultura.compare.bootstrap import cluster_weights, point, rates, resample
from aligncultura.stats import bootstrap_p, holm, percentile_ci

stats = pytest.importorskip("scipy.stats", reason="scipy is a dev extra")


def _values(n: int, seed: int) -> np.ndarray:
    """(n, 5) per-prompt values in the column order of aligncultura/compare/bootstrap.py, a few unknown (NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.choice([0.0, 0.5, 1.0], size=(n, 5), p=[0.4, 0.2, 0.4])
    x[rng.random((n, 5)) < 0.03] = np.nan
    return x


def test_singleton_clusters_match_scipy_paired_percentile_bootstrap():
    """One prompt per subdomain: the two-stage bootstrap is the plain prompt bootstrap, so the
    paired CI of a win-rate difference must match scipy.stats.bootstrap(paired=True)."""
    n = 240
    a, b = _values(n, 1)[:, 0], _values(n, 2)[:, 0]
    a[np.isnan(a)], b[np.isnan(b)] = 0.5, 0.5  # scipy's statistic has no NaN handling
    xa, xb = np.zeros((n, 5)), np.zeros((n, 5))
    xa[:, 0], xb[:, 0] = a, b
    da, db = resample([xa, xb], [f"s{i}" for i in range(n)], 20_000, seed=7)
    ours = percentile_ci(da["win_rate"] - db["win_rate"])
    ref = stats.bootstrap((a, b), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis), paired=True,
                          vectorized=True, method="percentile", n_resamples=20_000,
                          rng=np.random.default_rng(3)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.006)
    assert ours[1] == pytest.approx(ref.high, abs=0.006)
    assert point(xa)["win_rate"] - point(xb)["win_rate"] == pytest.approx(a.mean() - b.mean())


def test_one_cluster_matches_scipy_too():
    """All prompts in one subdomain: stage 1 always draws it, stage 2 is the prompt bootstrap."""
    x = _values(300, 4)
    x[np.isnan(x)] = 1.0
    d = resample([x], ["Music"] * len(x), 20_000, seed=1)[0]["safety_score"]
    ref = stats.bootstrap((x[:, 1],), np.mean, method="percentile", n_resamples=20_000,
                          rng=np.random.default_rng(5)).confidence_interval
    lo, hi = percentile_ci(d)
    assert lo == pytest.approx(ref.low, abs=0.006) and hi == pytest.approx(ref.high, abs=0.006)


def _naive_two_stage(x: np.ndarray, clusters: list[str], b: int, seed: int) -> np.ndarray:
    """Resample subdomains, then prompts within each drawn subdomain: plain Python loops."""
    r = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(c, []).append(i)
    names = sorted(groups)
    out = []
    for _ in range(b):
        picked = []
        for _ in names:
            members = groups[r.choice(names)]
            picked += [r.choice(members) for _ in members]
        out.append(np.mean(x[picked]))
    return np.asarray(out)


def test_two_stage_weights_agree_with_a_naive_loop():
    rng = np.random.default_rng(0)
    sizes = {"a": 3, "b": 7, "c": 15, "d": 1, "e": 9}
    clusters = [c for c, k in sizes.items() for _ in range(k)]
    shift = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.0, "e": 0.7}
    v = np.array([float(rng.random() < shift[c]) for c in clusters])
    x = np.full((len(v), 5), np.nan)
    x[:, 1] = v
    ours = resample([x], clusters, 20_000, seed=2)[0]["safety_score"]
    naive = _naive_two_stage(v, clusters, 20_000, seed=9)
    assert np.std(ours) == pytest.approx(np.std(naive), rel=0.05)
    for q in (2.5, 50, 97.5):
        assert np.percentile(ours, q) == pytest.approx(np.percentile(naive, q), abs=0.02)


def test_stage_one_draws_whole_subdomains():
    """Per resample, the weight of subdomain g is (times drawn) x n_g and G draws are made."""
    clusters = ["x"] * 4 + ["y"] * 6 + ["z"] * 1
    sizes = {"x": 4, "y": 6, "z": 1}
    idx = {c: [i for i, k in enumerate(clusters) if k == c] for c in sizes}
    for w in cluster_weights(clusters, 500, seed=3):
        drawn = 0
        for c, members in idx.items():
            total = w[:, members].sum(axis=1)
            assert np.all(total % sizes[c] == 0)
            drawn = drawn + total // sizes[c]
        assert np.all(drawn == 3)


def test_clustering_widens_the_interval_when_subdomains_differ():
    """Failures concentrated in a few subdomains: the prompt bootstrap is overconfident."""
    clusters = [f"s{k}" for k in range(8) for _ in range(25)]
    v = np.array([1.0 if c in ("s0", "s1") else 0.0 for c in clusters])
    x = np.full((len(v), 5), np.nan)
    x[:, 4] = v
    lo, hi = percentile_ci(resample([x], clusters, 5000, seed=0)[0]["cultural_failure_rate"])
    ref = stats.bootstrap((v,), np.mean, method="percentile", n_resamples=5000,
                          rng=np.random.default_rng(0)).confidence_interval
    assert (hi - lo) > 3 * (ref.high - ref.low)


def test_rates_match_a_direct_nan_mean_and_the_joint_formula():
    x = _values(50, 8)
    w = np.random.default_rng(1).integers(0, 3, size=(4, 50)).astype(float)
    got = rates(x, w)
    for b in range(4):
        m = [np.nansum(w[b] * x[:, k]) / np.sum(w[b] * ~np.isnan(x[:, k])) for k in range(5)]
        assert got["win_rate"][b] == pytest.approx(m[0])
        assert got["truthful_informative"][b] == pytest.approx(m[2] * m[3])
        assert got["joint_hhh"][b] == pytest.approx((m[0] + m[2] * m[3] - m[1]) / 3)
        assert got["cultural_failure_rate"][b] == pytest.approx(m[4])


def test_bootstrap_p_values():
    assert bootstrap_p(np.full(999, 0.2)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.zeros(100)) == 1.0
    d = np.concatenate([np.full(30, -1.0), np.full(70, 1.0)])
    assert bootstrap_p(d) == pytest.approx(2 * 31 / 101)
    assert np.isnan(bootstrap_p(np.array([np.nan])))


def test_holm_worked_example():
    # sorted: .005 x4 = .02; .01 x3 = .03; .03 x2 = .06; .04 x1 = .04 -> monotone .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, float("nan"), 0.2]) == pytest.approx([0.5, float("nan"), 0.4],
                                                          nan_ok=True)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 x 2 is capped at 1; monotone


def _kappa_direct(a: list[str], b: list[str]) -> float:
    try:
        from sklearn.metrics import cohen_kappa_score
    except ImportError:
        labels = sorted(set(a) | set(b))
        m = np.zeros((len(labels), len(labels)))
        for x, y in zip(a, b, strict=True):
            m[labels.index(x), labels.index(y)] += 1
        m /= m.sum()
        po, pe = np.trace(m), m.sum(1) @ m.sum(0)
        return (po - pe) / (1 - pe)
    return cohen_kappa_score(a, b)


def _judgment(row_id, criterion, verdict, order="", status="scored"):
    return {"row_id": row_id, "sample_index": 0, "criterion": criterion, "order": order,
            "verdict": verdict, "status": status}


def test_pooled_kappa_against_a_direct_formula():
    rng = random.Random(4)
    j1, j2, per = [], [], {}
    for i in range(80):
        for crit, labels in (("harmless", ["safe", "unsafe"]), ("truthful", ["yes", "no"])):
            v1 = rng.choice(labels)
            v2 = v1 if rng.random() < 0.7 else rng.choice(labels)
            j1.append(_judgment(f"r{i}", crit, v1))
            j2.append(_judgment(f"r{i}", crit, v2))
            per.setdefault(crit, ([], []))
            per[crit][0].append(v1)
            per[crit][1].append(v2)
    j2.append(_judgment("r0", "informative", "yes"))  # judged by one judge only: left out
    meta = {f"r{i}": 0 if i < 40 else 10 for i in range(80)}
    got = pooled_agreement(j1, j2, meta)
    po = np.mean([np.mean(np.array(a) == np.array(b)) for a, b in per.values()])
    pe = np.mean([sum(np.mean(np.array(a) == k) * np.mean(np.array(b) == k) for k in set(a))
                  for a, b in per.values()])
    assert got["n"] == 160
    assert got["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert set(got["by_domain"]) == {"Cultural and Natural Heritage",
                                     "Intangible Cultural Heritage"}
    for a, b in per.values():
        assert cohen_kappa(a, b) == pytest.approx(_kappa_direct(a, b))


def test_determinism_changes_counts():
    gens = pa.Table.from_pylist([
        {"row_id": "a", "sample_index": 0, "response": "x", "status": "ok"},
        {"row_id": "b", "sample_index": 0, "response": "y", "status": "ok"},
        {"row_id": "c", "sample_index": 0, "response": "z", "status": "ok"}])
    again = pa.Table.from_pylist([
        {"row_id": "a", "sample_index": 0, "response": "x", "status": "ok"},
        {"row_id": "b", "sample_index": 0, "response": "Y", "status": "ok"}])
    j1 = [_judgment(r, "truthful", "yes") for r in "abc"] + [_judgment("a", "helpful", "A", "ab")]
    j2 = [_judgment("a", "truthful", "no"), _judgment("b", "truthful", "yes"),
          _judgment("a", "helpful", "A", "ab")]
    out = determinism_changes(gens, again, j1, j2)
    assert out["responses"] == 2 and out["responses_changed"] == 1
    assert out["responses_changed_share"] == 0.5
    assert out["verdicts"] == 3 and out["verdicts_changed"] == 1
    assert out["verdicts_same_response"] == 2 and out["verdicts_changed_same_response"] == 1
