"""What ``report.html`` shows, as one JSON-ready dict (rendered by ``html.py``).

``from_comparison`` builds it from ``comparison.compare``'s result and the runs it compared
(jobs/compare.py); ``from_run`` from one benchmark run (jobs/benchmark.py), its numbers and CIs
straight from the run's metrics.json. Both share the sections of ``comparison.py`` (failures,
efficiency, judges) and the per-domain breakdown of each run's metrics.json (``by_domain``).
``samples`` is a seeded sample of at most ``SAMPLE_CAP`` responses with their prompt, response,
verdicts and outcome (cultural failure: fail / pass / undecided, or not judged).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aligncultura.benchmark.metric_list import JOINT_FIRST
from aligncultura.benchmark.scores import COL, checked_rows, responses
from aligncultura.compare.comparison import efficiency, failures, judges
from aligncultura.compare.runs import Run
from aligncultura.data import taxonomy

SAMPLE_CAP = 200
SAMPLE_SEED = 0
TEXT_CAP = 4000  # characters of a prompt or response kept in the page
RATIONALE_CAP = 600  # characters of a judge's rationale (shown on hover)
VERDICT_COLUMNS = (("helpful_ab", "helpful (A-B)"), ("helpful_ba", "helpful (B-A)"),
                   ("harmless", "harmless"), ("truthful", "truthful"),
                   ("informative", "informative"))
OUTCOMES = ("fail", "pass", "undecided", "not judged")
_MODEL_SIDE = {"ab": "A", "ba": "B"}  # aligncultura/benchmark/verdicts.py order_score


def clean(x: Any) -> Any:
    """JSON-ready: NaN and infinities become None (``JSON.parse`` rejects them), tuples lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if isinstance(x, np.generic):
        return clean(x.item())
    return x


def domain_order(names: set[str]) -> list[str]:
    """Domains in taxonomy order, then any other name."""
    known = [d for d in (*taxonomy.DOMAINS, "None") if d in names]
    return known + sorted(names - set(known))


def _cut(text: Any, cap: int = TEXT_CAP) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= cap else s[:cap] + " [...]"


def _verdict_text(r: dict[str, Any]) -> str:
    if r["status"] != "scored":
        return f"unscored ({r.get('reason') or '?'})"
    v = str(r.get("verdict"))
    if r["criterion"] == "helpful" and r.get("order") in _MODEL_SIDE:
        who = "tie" if v == "tie" else ("win" if v == _MODEL_SIDE[r["order"]] else "loss")
        return f"{who} ({v})"
    if r["criterion"] == "harmless" and r.get("category") not in (None, "", "none"):
        return f"{v} ({r['category']})"
    return v


def responses_of(run: Run) -> list[dict[str, Any]]:
    """One row per response of ``run`` (generated or judged), sorted by prompt and seed."""
    rows = checked_rows(run.judgments)
    keys = sorted({(str(r["row_id"]), int(r["sample_index"])) for r in rows})
    _, matrix, _, _ = responses(rows)  # the same sorted (row_id, sample_index) order as keys
    judged = dict(zip(keys, matrix, strict=True))
    verdicts: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
    for r in rows:
        col = r["criterion"] + (f"_{r['order']}" if r["criterion"] == "helpful" else "")
        verdicts.setdefault((str(r["row_id"]), int(r["sample_index"])), {})[col] = {
            "verdict": _verdict_text(r), "rationale": _cut(r.get("rationale"), RATIONALE_CAP)}
    gens: dict[tuple[str, int], dict[str, Any]] = {}
    if run.generations is not None:
        for g in run.generations.to_pylist():
            gens[(str(g["row_id"]), int(g["sample_index"]))] = g
    out = []
    for key in sorted(set(judged) | set(gens)):
        g = gens.get(key, {})
        cls = run.row_class.get(key[0], taxonomy.NONE_ID)
        x = judged.get(key)
        if x is None:
            outcome, failed = "not judged", [g.get("status") or "?"]
        else:
            f = x[COL["any_failed"]]
            outcome = "undecided" if np.isnan(f) else ("fail" if f == 1.0 else "pass")
            failed = [c for c in ("helpful", "harmless", "honest") if x[COL[f"{c}_failed"]] == 1.0]
        out.append({"model": run.label, "row_id": key[0], "sample_index": key[1],
                    "domain": taxonomy.domain_of(cls), "subdomain": taxonomy.name_of(cls),
                    "prompt": _cut(g.get("prompt")), "response": _cut(g.get("response")),
                    "verdicts": verdicts.get(key, {}), "outcome": outcome, "failed": failed})
    return out


def samples(runs: list[Run], cap: int = SAMPLE_CAP, seed: int = SAMPLE_SEED) -> dict[str, Any]:
    """A seeded sample of at most ``cap`` responses, split evenly over the runs."""
    rng = np.random.default_rng(seed)
    per_run = [responses_of(r) for r in runs]
    share = max(1, cap // max(1, len(runs)))
    rows: list[dict[str, Any]] = []
    for rs in per_run:
        if len(rs) > share:
            rs = [rs[i] for i in sorted(rng.choice(len(rs), size=share, replace=False))]
        rows += rs
    return {"rows": rows[:cap], "total": sum(len(rs) for rs in per_run), "cap": cap,
            "seed": seed, "columns": [{"key": k, "label": lab} for k, lab in VERDICT_COLUMNS]}


def _undecided(m: dict[str, Any]) -> dict[str, Any]:
    cfr = m.get("cultural_failure_rate") or {}
    return {"prompts": cfr.get("undecided"), "of": m.get("n_prompts"),
            "bounds": cfr.get("bounds"),
            "responses": (m.get("failures") or {}).get("undetermined"),
            "unscored_by_order": m.get("unscored_by_order")}


def _common(runs: list[Run], judge_sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "metrics": [{"name": m.name, "label": m.label, "title": m.title,
                     "higher_is_better": m.higher_is_better} for m in JOINT_FIRST],
        "domains": {r.label: r.metrics.get("by_domain") or {} for r in runs},
        "judges": {r.label: {**judge_sections[r.label], "undecided": _undecided(r.metrics),
                             "generation_failed": r.metrics.get("generation_failed")}
                   for r in runs},
        "samples": samples(runs),
    }


def from_comparison(result: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    """The page of jobs.compare: per-model values and CIs of comparison.json."""
    meth = result["method"]
    return clean({
        "kind": "comparison", "title": f"Comparison of {len(runs)} benchmark run(s)",
        "runs": result["runs"], "notes": result["notes"],
        "ci_note": f"Percent, {meth['confidence']:.0%} CI from a {meth['bootstrap']} "
                   f"({meth['n_resamples']} resamples, seed {meth['seed']}). SS and fail: lower "
                   "is better; joint = (WR + TI - SS) / 3.",
        "models": result["models"], "pairwise": result["pairwise"],
        "pairwise_note": result["pairwise_note"], "method": meth,
        "determinism": result["determinism"], **_common(runs, result["judges"])})


def from_run(run: Run) -> dict[str, Any]:
    """The page of one benchmark run: values and CIs of its metrics.json."""
    m = run.metrics
    boot = m.get("bootstrap") or {}
    models = {run.label: {**{x.name: m.get(x.name) for x in JOINT_FIRST},
                          "n_prompts": m.get("n_prompts")}}
    return clean({
        "kind": "benchmark", "title": f"Benchmark of {run.model} (judge {run.judge})",
        "runs": [{"label": run.label, "model": run.model, "judge": run.judge,
                  "judge2": (m.get("judge2") or {}).get("judge"), "path": str(run.path),
                  "n_prompts": m.get("n_prompts")}],
        "notes": ["the judge is the embedded demo model: these scores demonstrate the pipeline, "
                  "not judgement quality"] if m.get("judge_demo_only") else [],
        "ci_note": f"Percent, {boot.get('confidence', 0.95):.0%} bootstrap CI over prompts "
                   f"({boot.get('n_resamples', '?')} resamples, seed {boot.get('seed', '?')}; "
                   "metrics.json). SS and fail: lower is better; joint = (WR + TI - SS) / 3.",
        "models": models, "pairwise": [], "pairwise_note": None, "method": {"bootstrap": boot},
        "determinism": {run.label: m["determinism"]} if m.get("determinism") else {},
        **_common([run], {run.label: judges(run)})})


def run_sections(run: Run) -> dict[str, Any]:
    """The comparison sections of one run that its plots draw (failures, efficiency)."""
    return {"failures": {run.label: failures(run)}, "efficiency": {run.label: efficiency(run)}}
