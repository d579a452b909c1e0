"""The dataset card (``dataset/README.md``), rendered from summary.json alone."""

from __future__ import annotations

from typing import Any

from aligncultura.data import taxonomy

# The authors' released CulturaX (1,500 rows): its largest and smallest subdomain counts, a fixed
# property of that file (tests/test_builder_e2e.py checks it against the released CSV)
RELEASED_CULTURAX_BALANCE = (387, 1)


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _ratio(b: dict[str, Any]) -> str:
    if not b.get("ratio"):
        return "n/a (no labelled subdomain)"
    return (f"{b['max']}/{b['min']} = {b['ratio']:.1f} over {b['present']} subdomains "
            f"(largest {b['max_subdomain']}, smallest {b['min_subdomain']})")


def render_card(s: dict[str, Any]) -> str:
    acc, ds, lk = s["accounting"], s["dataset"], s["leakage"]
    seed, gen = acc["seed"], acc["generated"]
    models = s["models"]
    out = [
        "# CulturaX, rebuilt with aligncultura (Stage I)",
        "",
        f"{ds['rows']} prompts with responses that passed an HHH critic, labelled over the "
        f"41-subdomain UNESCO-derived taxonomy (plus None), split "
        + ", ".join(f"{k} {v}" for k, v in sorted(ds["splits"].items())) + ".",
        "",
        "Files: `data.parquet` (one row per prompt: question, labels with probabilities, primary "
        "subdomain, domain, form, response, HHH pass vector, critiques, SimHash fingerprint, "
        "split, provenance). The run directory beside it holds `pool.parquet` (every prompt and "
        "its fate), `candidates.parquet`, `rejected.parquet`, `row_states.parquet` and "
        "`summary.json`.",
        "",
        "## Models and prompts",
        "",
        "| role | model |", "|---|---|",
        *[f"| {role} | {name} |" for role, name in models.items()],
        "",
        "Prompt versions: " + ", ".join(f"{k} `{v}`" for k, v in s["prompt_versions"].items())
        + ".",
    ]
    if models.get("generator") == models.get("critic"):
        out += ["", "**Note:** generator and critic are the same model. The paper separates the "
                "roles to avoid circular bias; treat this build as a pipeline demonstration."]
    floor = s["floor"]
    out += ["", "## Counts per subdomain", "",
            f"Floor (`expand.min_per_subdomain`): {floor['min_per_subdomain']} for "
            f"{len(floor['targets'])} target subdomain(s); below the floor: "
            + (", ".join(taxonomy.name_of(i) for i in floor["below_floor"]) or "none") + ".", "",
            "| id | subdomain | domain | kept | from seeds | generated | floor | meets |",
            "|---|---|---|---|---|---|---|---|"]
    for r in s["per_subdomain"]:
        meets = "" if r["meets_floor"] is None else ("yes" if r["meets_floor"] else "**no**")
        out.append(f"| {r['id']} | {r['subdomain']} | {r['domain']} | {r['kept']} | {r['seed']} "
                   f"| {r['generated']} | {_f(r['floor'])} | {meets} |")
    out += ["", "| domain | kept |", "|---|---|",
            *[f"| {d} | {n} |" for d, n in sorted(ds["by_domain"].items(), key=lambda x: -x[1])],
            "", "## Class balance (max/min subdomain count, None excluded)", "",
            f"- built: {_ratio(s['balance']['built'])}",
            f"- seed input labels: {_ratio(s['balance']['seed_input'])}",
            f"- the released CulturaX: {RELEASED_CULTURAX_BALANCE[0]}/"
            f"{RELEASED_CULTURAX_BALANCE[1]} (two subdomains hold half its rows)",
            "", "## Accounting", "",
            f"- seed rows: {seed['read']} read = kept {seed['kept']}, duplicate "
            f"{seed['duplicate']}, rejected {seed['rejected']}, quarantined {seed['quarantined']}"
            f", not selected {seed['not_selected']}",
            f"- generated prompts: {gen['requested']} requested = kept {gen['kept']}, duplicate "
            f"{gen['duplicate']}, rejected {gen['rejected']}",
            "- reasons: " + (", ".join(f"{k} {v}" for k, v in
                                        {**seed["reasons"], **{f"generated {k}": v for k, v in
                                                               gen["reasons"].items()}}.items())
                             or "none")]
    dd, rs, cl = s["dedup"], s["respond"], s["classify"]
    out += ["", "## Reclassification", "",
            f"Method `{cl['method']}`: yes/no per candidate subdomain, p = P(yes)/(P(yes)+P(no)) "
            f"from the first answer token's log-probabilities; labels with p >= {cl['delta']} kept. "
            f"{cl['prompts']} prompts, {cl['label_questions']} label questions, {cl['none']} "
            f"labelled None, {cl['no_signal']} label questions without a yes/no signal; labels "
            f"per prompt: {cl['labels_per_prompt']}.",
            "", "## Deduplication", "",
            f"SimHash 64-bit, Hamming <= {dd['max_distance']}: {dd['duplicates']} duplicates "
            f"({dd['in_pool']} within the pool, {dd['in_references'] or 'none'} against reference "
            f"corpora; by origin {dd['by_origin']}). Each points to the row it duplicates "
            "(`pool.parquet`: duplicate_of, duplicate_in, duplicate_hamming).",
            "", "## Responses (two-stage rejection sampling)", "",
            f"K = {rs['k']} candidates per round, at most {rs['max_feedback_rounds']} feedback "
            f"rounds; {rs['candidates']} candidates, {rs['judged']} judged ({rs['critic_unscored']} "
            f"critic answers unscored), {rs['passing_candidates']} passing; "
            f"{rs['rejected_prompts']} prompts rejected with their critiques.", "",
            "| round | prompts | candidates | judged | passing | resolved |",
            "|---|---|---|---|---|---|",
            *[f"| {r['round']} | {r['prompts']} | {r['candidates']} | {r['judged']} | "
              f"{r['passing_candidates']} | {r['resolved']} |" for r in rs["rounds"]],
            "", "## Split and leakage", "",
            f"Stratified by primary subdomain, fractions {s['split']['fractions']}, seed "
            f"{s['split']['seed']} (strata under 5 rows go wholly to train); strata off by more "
            f"than one row: {s['split']['off_target_strata'] or 'none'}.",
            f"Cross-split leakage ({lk['method']}): {lk['flagged']}/{lk['n']} val/test rows have "
            f"a train near-duplicate = {_pct(lk['rate'])}, 95% Wilson CI "
            f"[{_pct(lk['ci95'][0])}, {_pct(lk['ci95'][1])}]; target <= {_pct(lk['target'])}: "
            + ("met" if lk["meets_target"] else "**not met**") + " by the point estimate, "
            + ("and by the upper CI bound." if lk["ci_within_target"] else
               "not by the upper CI bound (too few val/test rows to show it)."),
            *_pair_lines(lk.get("by_pair")),
            "", "## Throughput per stage", "",
            "| stage | prompts | requests (computed/cached) | prompts/s | out tok/s | wall s "
            "| engine start s |", "|---|---|---|---|---|---|---|"]
    for name, st in s["stages"].items():
        out.append(f"| {name} | {st['prompts']} | {st['requests']} ({st['computed']}/"
                   f"{st['cached']}) | {_f(st['prompts_s'])} | {_f(st['output_tok_s'])} | "
                   f"{_f(st['wall_s'], 1)} | {_f(st['engine_start_s'], 1)} |")
    return "\n".join(out) + "\n"


def _pair_lines(bp: dict | None) -> list[str]:
    """Leakage between every pair of splits, before and after dedup + grouping, and against the
    reference corpora, beside the paper's figure (<= 0.3% cross-split leakage)."""
    if not bp:
        return []

    def cell(e: dict) -> str:
        if not e["n"]:
            return "- (no rows)"
        return (f"{e['flagged']}/{e['n']} = {_pct(e['rate'])} [{_pct(e['ci95'][0])}, "
                f"{_pct(e['ci95'][1])}]" + ("" if e["meets_target"] else " **over**"))

    out = ["", f"Near-duplicates between splits ({bp['method']}; the second split's rows with a "
           f"near-duplicate in the first, 95% Wilson CI), against the paper's <= "
           f"{_pct(bp['target'])}. Before: the same rows plus those dedup removed, split row by "
           "row with no grouping of duplicates. After: this dataset.", "",
           "| pair | before | after |", "|---|---|---|"]
    out += [f"| {pair} | {cell(bp['before'][pair])} | {cell(bp['after'][pair])} |"
            for pair in bp["after"]]
    for name, per in bp["references"].items():
        out += ["", f"Against the reference corpus {name}:", "", "| split | leaked |", "|---|---|"]
        out += [f"| {s} | {cell(e)} |" for s, e in per.items()]
    return out
