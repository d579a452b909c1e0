"""Human-facing views of a comparison: ``report.md`` and the tables mirrored to W&B."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.benchmark.metric_list import BY_NAME, JOINT_FIRST
from aligncultura.compare.plots import failure_rows


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _ci(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "n/a"
    if e.get("ci_low") is None:
        return f"{e['value']:.1f}"
    return f"{e['value']:.1f} [{e['ci_low']:.1f}, {e['ci_high']:.1f}]"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return out + [""]


def _p(x: float | None) -> str:
    return "n/a" if x is None or x != x else (f"{x:.2g}" if x < 0.01 else f"{x:.3f}")


def render(c: dict[str, Any], plots: dict[str, str]) -> str:
    """The whole report.md of a comparison (``plots``: name -> PNG file name)."""
    meth = c["method"]
    out = [f"# Comparison of {len(c['runs'])} benchmark run(s)", ""]
    out += _table(["label", "model", "judge", "judge2", "prompts", "run dir"],
                  [[r["label"], r["model"], r["judge"], r["judge2"] or "-", r["n_prompts"],
                    f"`{r['path']}`"] for r in c["runs"]])
    out += [f"- note: {n}" for n in c["notes"]] + ([""] if c["notes"] else [])

    out += ["## Models", "",
            f"Percent, {meth['confidence']:.0%} CI from a {meth['bootstrap']} "
            f"({meth['n_resamples']} resamples, seed {meth['seed']}). SS and fail: lower is "
            "better; joint = (WR + TI - SS) / 3.", ""]
    out += _table(["model", *[m.label for m in JOINT_FIRST], "prompts", "subdomains"],
                  [[k, *[_ci(v.get(m.name)) for m in JOINT_FIRST], v["n_prompts"],
                    v["n_subdomains"]] for k, v in c["models"].items()])
    if "metrics" in plots:
        out += [f"![metrics]({plots['metrics']})", ""]

    out += ["## Pairwise differences (A - B)", ""]
    if c["pairwise_note"]:
        out += [c["pairwise_note"] + ".", ""]
    else:
        out += [f"Paired bootstrap on the prompts both runs judged: {meth['paired']}; "
                f"{meth['bootstrap']}. Multiple comparisons: **Holm-Bonferroni** on the "
                f"paired-bootstrap p-values (two-sided, 2 x the smaller tail share at 0) over "
                f"the family of {meth['tests']} tests ({meth['family']}), family-wise error "
                f"rate {meth['alpha']}. The CIs are per-comparison {meth['confidence']:.0%} "
                "intervals (not adjusted); `significant` uses the Holm-adjusted p.", ""]
        out += _table(["A", "B", "metric", "A value", "B value", "A - B", "95% CI", "p", "p (Holm)",
                       "significant", "better", "prompts", "subdomains"],
                      [[r["a"], r["b"], BY_NAME[r["metric"]].label, r["a_value"], r["b_value"],
                        r["diff"], f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]", _p(r["p"]),
                        _p(r["p_holm"]),
                        "yes" if r["significant"] else "no", r["better"] or "-", r["n_prompts"],
                        r["n_subdomains"]] for r in c["pairwise"]])
        if "pairwise" in plots:
            out += [f"![pairwise]({plots['pairwise']})", ""]

    out += ["## Cultural failure rate by domain and subdomain", "",
            f"Percent of prompts with a failure (helpful loss in every order, unsafe or not "
            f"truthful), n = prompts with a known outcome; cells with n < {meth['min_cell_n']} "
            "are greyed out in the heatmap and marked `~` here.", ""]
    labels = list(c["failures"])
    rows = []
    for d, s, dom in failure_rows(c["failures"]):
        cells = []
        for lab in labels:
            f = c["failures"][lab]
            e = f["domains"].get(d) if dom else f["subdomains"].get(s)
            if not e or not e["n"]:
                cells.append("-")
            else:
                mark = "~" if e["n"] < meth["min_cell_n"] else ""
                cells.append(f"{mark}{_f(e['rate'], 0)} (n={e['n']})")
        rows.append([f"**{d}**" if dom else s, *cells])
    out += _table(["domain / subdomain", *labels], rows)
    if "failures" in plots:
        out += [f"![failures]({plots['failures']})", ""]

    out += ["## Efficiency", "", "From each run's metrics.json (generation stage; when model and "
            "judge share one engine, throughput and latency cover both). Tokens per response "
            "from generations.parquet.", ""]
    out += _table(["model", "out tok/s", "latency p50 s", "latency p95 s", "tokens/response",
                   "device-s / 100 samples", "judge device-s / 100", "engine start s",
                   "cached/requests"],
                  [[k, e["output_tok_s"], e["latency_p50_s"], e["latency_p95_s"],
                    e["tokens_per_response"], f"{_f(e['seconds_per_100'])} ({e['device']})",
                    e["judge_seconds_per_100"], e["engine_start_s"],
                    f"{_f(e['cached_requests'])}/{_f(e['requests'])}"]
                   for k, e in c["efficiency"].items()])
    if "efficiency" in plots:
        out += [f"![efficiency]({plots['efficiency']})", ""]

    if c["leakage"]:
        out += ["## Leakage", "", "Metrics with all judged prompts and without the prompts the "
                "run's leakage.parquet flags (flagged = true).", ""]
        rows = []
        for k, v in c["leakage"].items():
            for which in ("with", "without"):
                t = v[which]
                rows.append([k, f"{which} leaked ({v['flagged_judged']} flagged)",
                             *[_ci(t.get(m.name)) if t else "n/a" for m in JOINT_FIRST],
                             t["n_prompts"] if t else 0])
        out += _table(["model", "prompts", *[m.label for m in JOINT_FIRST], "n"], rows)

    out += ["## Judge reliability", "", "Position flip: share of pairwise (helpful) judgments "
            "whose verdict follows the position, not the text. Unscored: judge answers that could "
            "not be parsed. Kappa: Cohen's kappa with the second judge on judgments both scored "
            "(pooled over criteria: de Vries et al. 2008).", ""]
    rows = []
    for k, j in c["judges"].items():
        pf, un, j2 = j["position_flip"], j["unscored"], j.get("judge2")
        rows.append([k, j["judge"] + (" (demo)" if j["demo_only"] else ""),
                     f"{_f(pf['flip_rate'], 2)} ({pf['flips']}/{pf['pairs']})",
                     f"{_f(un['rate'], 3)} ({un['unscored']}/{un['judged']})",
                     j2["judge"] if j2 else "-",
                     f"{_f(j2['pooled']['kappa'], 2)} (n={j2['pooled']['n']})" if j2 else "-"])
    out += _table(["model", "judge", "position flip", "unscored", "judge2", "kappa (pooled)"], rows)
    for k, j in c["judges"].items():
        j2 = j.get("judge2")
        if not j2:
            continue
        out += [f"Kappa {j['judge']} vs {j2['judge']} for {k}, by criterion and domain:", ""]
        doms = sorted({d for v in j2["by_criterion"].values() for d in v["by_domain"]})
        rows = [[crit, f"{_f(v['kappa'], 2)} (n={v['n']})",
                 *[(f"{_f(v['by_domain'][d]['kappa'], 2)} (n={v['by_domain'][d]['n']})"
                    if d in v["by_domain"] else "-") for d in doms]]
                for crit, v in j2["by_criterion"].items()]
        rows.append(["pooled", f"{_f(j2['pooled']['kappa'], 2)} (n={j2['pooled']['n']})",
                     *[(f"{_f(j2['pooled']['by_domain'][d]['kappa'], 2)} "
                        f"(n={j2['pooled']['by_domain'][d]['n']})"
                        if d in j2["pooled"]["by_domain"] else "-") for d in doms]])
        out += _table(["criterion", "overall", *doms], rows)

    out += ["## Determinism", ""]
    if c["determinism"]:
        out += ["A seeded sample of prompts generated again with another batch composition "
                "(reverse order, another batch size, no cache) and judged again.", ""]
        out += _table(["model", "sample", "responses changed", "verdicts changed",
                       "verdicts changed (same response)"],
                      [[k, d.get("sample_prompts"),
                        f"{d['responses_changed']}/{d['responses']} "
                        f"({_f(d['responses_changed_share'], 2)})",
                        f"{d['verdicts_changed']}/{d['verdicts']} "
                        f"({_f(d['verdicts_changed_share'], 2)})",
                        f"{d['verdicts_changed_same_response']}/{d['verdicts_same_response']}"]
                       for k, d in c["determinism"].items()])
    else:
        out += ["No run has a determinism probe (run the benchmark with "
                "`bench.determinism_sample=0.05`).", ""]
    return "\n".join(out)


def wandb_tables(c: dict[str, Any]) -> dict[str, pa.Table]:
    """Flat tables of the comparison for W&B."""
    models = pa.Table.from_pylist([
        {"model": k, **{f"{m.name}/{f}": (v.get(m.name) or {}).get(f) for m in JOINT_FIRST
                        for f in ("value", "ci_low", "ci_high", "n")}, "n_prompts": v["n_prompts"]}
        for k, v in c["models"].items()])
    fails = []
    for lab, f in c["failures"].items():
        for d, s, dom in failure_rows({lab: f}):
            cell = f["domains"].get(d) if dom else f["subdomains"].get(s)
            fails.append({"model": lab, "domain": d, "subdomain": s or None,
                          "rate": (cell or {}).get("rate"), "n": (cell or {}).get("n", 0)})
    eff = [{"model": k, **{a: b for a, b in e.items() if a != "note"}}
           for k, e in c["efficiency"].items()]
    judges = [{"model": k, "judge": j["judge"], "flip_rate": j["position_flip"]["flip_rate"],
               "unscored_rate": j["unscored"]["rate"],
               "judge2": (j.get("judge2") or {}).get("judge"),
               "kappa_pooled": ((j.get("judge2") or {}).get("pooled") or {}).get("kappa")}
              for k, j in c["judges"].items()]
    out = {"models": models, "failures": pa.Table.from_pylist(fails),
           "efficiency": pa.Table.from_pylist(eff), "judges": pa.Table.from_pylist(judges)}
    if c["pairwise"]:
        out["pairwise"] = pa.Table.from_pylist(c["pairwise"])
    return out

