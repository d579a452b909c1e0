"""Compare benchmark runs: is model A really better than model B, or is it noise, or the judge?

    runs = load_runs(["runs/a", "runs/b"])        # or a glob of a sweep dir: "sweep/*"
    result = compare(runs, cfg)                   # comparison.json's dict; see jobs/compare.py

Runs are loaded by ``runs.py`` (one model each). The comparison reports per model the headline
metrics (``metric_list.JOINT_FIRST``) with subdomain-clustered bootstrap CIs, every pairwise
difference on the prompts both runs judged with a paired bootstrap CI (``bootstrap.py``) and a
Holm-Bonferroni adjusted p-value, failure rates by domain and subdomain with n, efficiency,
metrics with and without leaked rows, judge reliability and the determinism probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from aligncultura.benchmark.agreement import judge_agreement, pooled_agreement, position_flip_rate
from aligncultura.benchmark.metric_list import BY_NAME, JOINT_FIRST
from aligncultura.benchmark.scores import unscored_share
from aligncultura.compare.bootstrap import HEADLINE, columns, point, prompt_matrix, resample
from aligncultura.compare.runs import Run
from aligncultura.config import WandbConfig
from aligncultura.data import taxonomy
from aligncultura.errors import JobError
from aligncultura.stats import bootstrap_p, holm, percentile_ci


@dataclass
class CompareConfig:
    runs: Any = MISSING  # benchmark run dirs [a,b,...] or a glob of a sweep dir ("sweep/*")
    run_dir: str | None = None  # null = Hydra's output dir
    n_resamples: int = 10_000  # bootstrap resamples (the smallest p-value is 2 / (n + 1))
    seed: int = 0
    confidence: float = 0.95
    alpha: float = 0.05  # family-wise error rate of the Holm-Bonferroni correction
    min_cell_n: int = 10  # heatmap cells with fewer prompts are greyed out
    plots: bool = True
    # runs whose own guards failed (summary.json status failed) are left out, one line each;
    # true keeps them, marked "(failed guard)"
    include_failed: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)
    verbose: bool = False  # the libraries' own lines on the terminal (else logs/)


ConfigStore.instance().store(name="compare_schema", node=CompareConfig)


# ---- sections -----------------------------------------------------------------------------------


def _pct(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else 100.0 * float(x)


def _clusters(run: Run, ids) -> list[str]:
    return [taxonomy.name_of(run.row_class[r]) for r in ids]


def metric_table(run: Run, ids, cfg: Any) -> dict[str, Any]:
    """Headline metrics of one run on the prompts ``ids`` with clustered-bootstrap CIs."""
    ids, x = prompt_matrix(run.judgments, sorted(ids))
    pt = point(x)
    dist = resample([x], _clusters(run, ids), cfg.n_resamples, cfg.seed)[0]
    out: dict[str, Any] = {}
    for m in JOINT_FIRST:
        lo, hi = percentile_ci(dist[m.name], cfg.confidence)
        known = int(np.sum(~np.all(np.isnan(columns(x, m.columns)), axis=1)))
        value = _pct(pt[m.name])
        out[m.name] = {"value": value, "ci_low": _pct(lo) if value is not None else None,
                       "ci_high": _pct(hi) if value is not None else None, "n": known}
    out["n_prompts"] = len(ids)
    out["n_subdomains"] = len(set(_clusters(run, ids)))
    return out


def _judged(run: Run) -> list[str]:
    return sorted(set(run.judgments.column("row_id").to_pylist()))


def pairwise(runs: list[Run], cfg: Any) -> list[dict[str, Any]]:
    """Every pair (A, B) in input order and every headline metric: A - B on the prompts both
    judged, paired clustered-bootstrap CI and p-value, Holm-adjusted over all the tests."""
    judged = [set(_judged(r)) for r in runs]
    groups: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    for i, j in combinations(range(len(runs)), 2):
        common = tuple(sorted(judged[i] & judged[j]))
        if not common:
            raise JobError(f"runs {runs[i].path} and {runs[j].path} share no judged prompt: "
                           "compare runs of the same dataset (see dataset.* in their config.yaml)")
        groups.setdefault(common, []).append((i, j))
    rows: list[dict[str, Any]] = []
    for common, pairs in groups.items():
        involved = sorted({k for p in pairs for k in p})
        blocks = {k: prompt_matrix(runs[k].judgments, list(common))[1] for k in involved}
        clusters = _clusters(runs[pairs[0][0]], common)
        dist = dict(zip(involved, resample([blocks[k] for k in involved], clusters,
                                           cfg.n_resamples, cfg.seed), strict=True))
        pts = {k: point(blocks[k]) for k in involved}
        for i, j in pairs:
            for m in HEADLINE:
                diff = pts[i][m] - pts[j][m]
                if not np.isfinite(diff):
                    continue
                d = dist[i][m] - dist[j][m]
                lo, hi = percentile_ci(d, cfg.confidence)
                rows.append({"a": runs[i].label, "b": runs[j].label, "metric": m,
                             "a_value": _pct(pts[i][m]), "b_value": _pct(pts[j][m]),
                             "diff": _pct(diff), "ci_low": _pct(lo), "ci_high": _pct(hi),
                             "p": bootstrap_p(d), "n_prompts": len(common),
                             "n_subdomains": len(set(clusters))})
    for r, adj in zip(rows, holm([r["p"] for r in rows]), strict=True):
        r["p_holm"] = adj
        r["significant"] = bool(np.isfinite(adj) and adj < cfg.alpha)
        better = (r["diff"] < 0) != BY_NAME[r["metric"]].higher_is_better
        r["better"] = (r["a"] if better else r["b"]) if r["significant"] else None
    return rows


def failures(run: Run) -> dict[str, Any]:
    """Cultural failure rate (percent of prompts, mean over seeds) and n by domain, subdomain."""
    ids, x = prompt_matrix(run.judgments)
    fail = columns(x, ["any_failed"])[:, 0]
    subs: dict[str, list[float]] = {}
    doms: dict[str, list[float]] = {}
    for r, f in zip(ids, fail, strict=True):
        subs.setdefault(taxonomy.name_of(run.row_class[r]), []).append(f)
        doms.setdefault(taxonomy.domain_of(run.row_class[r]), []).append(f)

    def cell(vals: list[float]) -> dict[str, Any]:
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        return {"rate": _pct(v.mean()) if v.size else None, "n": int(v.size)}

    return {"domains": {d: cell(v) for d, v in sorted(doms.items())},
            "subdomains": {s: {"domain": taxonomy.domain_of(s), **cell(v)}
                           for s, v in sorted(subs.items())}}


def efficiency(run: Run) -> dict[str, Any]:
    """From metrics.json's efficiency; tokens per response from generations.parquet."""
    eff = run.metrics.get("efficiency") or {}
    g, j = eff.get("generation") or {}, eff.get("judging") or {}
    gpu = bool(g.get("gpu_s"))
    tokens = g.get("output_tokens_per_response")
    if run.generations is not None and run.generations.num_rows:
        ok = [t for t, s in zip(run.generations.column("output_tokens").to_pylist(),
                                run.generations.column("status").to_pylist(), strict=True)
              if s == "ok" and t is not None]
        tokens = float(np.mean(ok)) if ok else None
    return {"output_tok_s": g.get("output_tok_s"), "latency_p50_s": g.get("latency_p50_s"),
            "latency_p95_s": g.get("latency_p95_s"), "tokens_per_response": tokens,
            "device": "GPU" if gpu else "CPU",
            "seconds_per_100": g.get("gpu_s_per_100" if gpu else "cpu_s_per_100"),
            "judge_seconds_per_100": j.get("gpu_s_per_100" if gpu else "cpu_s_per_100"),
            "engine_start_s": g.get("engine_start_s"), "requests": g.get("requests"),
            "cached_requests": g.get("cached_requests"), "wall_s": eff.get("wall_s"),
            "note": g.get("note")}


def judges(run: Run) -> dict[str, Any]:
    """Position flips, unscored rate and, with a second judge, Cohen's kappa (per criterion and
    pooled, overall and per domain)."""
    def unscored(t: pa.Table) -> dict[str, Any]:
        share = unscored_share(t)
        u, n = sum(v[0] for v in share.values()), sum(v[1] for v in share.values())
        return {"by_criterion": {c: list(v) for c, v in share.items() if v[1]},
                "rate": u / n if n else None, "unscored": u, "judged": n}

    out = {"judge": run.judge, "demo_only": bool(run.metrics.get("judge_demo_only")),
           "position_flip": position_flip_rate(run.judgments), "unscored": unscored(run.judgments)}
    if run.judgments2 is not None:
        j2 = run.judgments2
        name = (run.metrics.get("judge2") or {}).get("judge") or \
            (j2.column("judge")[0].as_py() if j2.num_rows else "?")
        out["judge2"] = {"judge": name, "position_flip": position_flip_rate(j2),
                         "unscored": unscored(j2),
                         "pooled": pooled_agreement(run.judgments, j2, run.row_class),
                         "by_criterion": judge_agreement(run.judgments, j2, run.row_class)}
    return out


def leakage(run: Run, cfg: Any) -> dict[str, Any] | None:
    if run.leaked is None:
        return None
    ids = _judged(run)
    clean = [r for r in ids if r not in run.leaked]
    out = {"flagged": len(run.leaked), "flagged_judged": len(ids) - len(clean),
           "with": metric_table(run, ids, cfg)}
    out["without"] = metric_table(run, clean, cfg) if clean else None
    return out


def compare(runs: list[Run], cfg: Any) -> dict[str, Any]:
    """Every section of the comparison as one JSON-ready dict (see the module docstring)."""
    notes = [n for r in runs for n in r.notes]
    if len({r.judge for r in runs}) > 1:
        notes.append("the runs were judged by different judges: a difference mixes model and "
                     "judge (" + ", ".join(f"{r.label}: {r.judge}" for r in runs) + ")")
    if any(r.metrics.get("judge_demo_only") for r in runs):
        notes.append("a judge is the embedded demo model: its scores demonstrate the pipeline, "
                     "not judgement quality")
    judged = [set(_judged(r)) for r in runs]
    if len(runs) > 1 and len(set.union(*judged)) != len(set.intersection(*judged)):
        notes.append("the runs judged different prompt sets: per-model numbers use each run's own "
                     "prompts, pairwise differences the prompts both runs judged")
    n_tests_max = len(HEADLINE) * len(runs) * (len(runs) - 1) // 2
    pairs = pairwise(runs, cfg) if len(runs) > 1 else []
    n_tests = sum(np.isfinite(r["p"]) for r in pairs)
    if n_tests and 2 / (cfg.n_resamples + 1) * n_tests >= cfg.alpha:
        notes.append(f"with {n_tests} tests and n_resamples={cfg.n_resamples} no Holm-adjusted "
                     f"p-value can go below alpha={cfg.alpha}: raise n_resamples")
    return {
        "runs": [{"label": r.label, "model": r.model, "judge": r.judge, "path": str(r.path),
                  "n_prompts": len(judged[k]),
                  "judge2": (r.metrics.get("judge2") or {}).get("judge")}
                 for k, r in enumerate(runs)],
        "method": {"bootstrap": "two-stage cluster bootstrap: resample subdomains with "
                                "replacement, then prompts within each drawn subdomain",
                   "paired": "the same resample weights for both runs of a pair, on the prompts "
                             "both judged",
                   "correction": "holm", "alpha": cfg.alpha, "family": "all pairs x headline "
                   "metrics", "tests": int(n_tests), "tests_max": n_tests_max,
                   "n_resamples": cfg.n_resamples, "seed": cfg.seed,
                   "confidence": cfg.confidence, "min_cell_n": cfg.min_cell_n},
        "models": {r.label: metric_table(r, judged[k], cfg) for k, r in enumerate(runs)},
        "pairwise": pairs,
        "pairwise_note": None if len(runs) > 1 else
        "one model only: no pairwise comparison (give two or more runs)",
        "failures": {r.label: failures(r) for r in runs},
        "efficiency": {r.label: efficiency(r) for r in runs},
        "leakage": {r.label: x for r in runs if (x := leakage(r, cfg)) is not None},
        "judges": {r.label: judges(r) for r in runs},
        "determinism": {r.label: r.metrics["determinism"] for r in runs
                        if r.metrics.get("determinism")},
        "notes": notes,
    }
