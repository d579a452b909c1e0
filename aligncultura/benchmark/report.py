"""Human-facing views of benchmark results: the printed table and the W&B tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.benchmark.metric_list import CULTURAL_FAILURE_RATE, METRICS


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    ci = f" [{lo:.1f},{hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{entry['value']:.1f}{ci}"


def results_table(all_metrics: list[dict[str, Any]], judge_demo: bool = False) -> str:
    """A compact fixed-width table: model, WR, SS, TI, joint (95% CI), failure rate, the
    prompts whose failure is undecided, unscored judgments, generations left out of every
    metric, output tok/s."""
    head = ["model", *[metric.label for metric in METRICS], "undecided", "unscored",
            "gen failed", "out tok/s"]
    rows = []
    for m in all_metrics:
        uns = sum(int(v[0]) for v in (m.get("unscored") or {}).values())
        tot = sum(int(v[1]) for v in (m.get("unscored") or {}).values())
        tok = ((m.get("efficiency") or {}).get("generation") or {}).get("output_tok_s")
        cfr = m.get(CULTURAL_FAILURE_RATE.name) or {}
        undecided = f"{cfr['undecided']}/{m.get('n_prompts')}" if "undecided" in cfr else "n/a"
        gen = m.get("generation_failed")
        gen_failed = f"{gen['excluded']}/{gen['total']}" if gen else "n/a"
        rows.append([m.get("model", "?"), *[_cell(m.get(metric.name)) for metric in METRICS],
                     undecided, f"{uns}/{tot}", gen_failed,
                     f"{tok:.1f}" if tok is not None else "n/a"])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append("percent, 95% bootstrap CI over prompts; SS and fail: lower is better; "
               "joint = (WR + TI - SS) / 3")
    out.append("fail: over prompts whose failure is decided (every criterion scored); "
               "undecided: prompts left out of it; gen failed: generations left out of every "
               "metric (metrics.json: bounds, reasons)")
    if judge_demo:
        out.append("NOTE: the judge is the embedded demo model: these scores demonstrate the "
                   "pipeline, not judgement quality.")
    for m in all_metrics:
        if m.get("note"):
            out.append(f"note ({m.get('model')}): {m['note']}")
    return "\n".join(out)


def per_sample_table(judgments: pa.Table, gens: pa.Table, prompts: pa.Table) -> pa.Table:
    """One row per generated response with its verdicts side by side."""
    q = dict(zip(prompts.column("row_id").to_pylist(), prompts.column("question").to_pylist(),
                 strict=True))
    sub = dict(zip(prompts.column("row_id").to_pylist(), prompts.column("subdomain").to_pylist(),
                   strict=True))
    verdicts: dict[tuple[str, int], dict[str, str]] = {}
    for j in judgments.to_pylist():
        key = (j["row_id"], j["sample_index"])
        col = j["criterion"] + (f"_{j['order']}" if j["order"] else "")
        verdicts.setdefault(key, {})[col] = j["verdict"] if j["status"] == "scored" else \
            f"unscored:{j['reason']}"
    cols = ["helpful_ab", "helpful_ba", "harmless", "truthful", "informative"]
    rows = []
    for g in gens.to_pylist():
        v = verdicts.get((g["row_id"], g["sample_index"]), {})
        rows.append({"row_id": g["row_id"], "sample_index": g["sample_index"],
                     "subdomain": sub.get(g["row_id"]), "question": q.get(g["row_id"]),
                     "response": g["response"], **{c: v.get(c) for c in cols}})
    return pa.Table.from_pylist(rows)


def per_subdomain_table(metrics: dict[str, Any]) -> pa.Table:
    rows = []
    for name, vals in (metrics.get("by_subdomain") or {}).items():
        rows.append({"subdomain": name, **{k: (v if not isinstance(v, dict) else v.get("value"))
                                            for k, v in vals.items()}})
    return pa.Table.from_pylist(rows)
