"""Everything the build writes: dataset, audit tables, row states, summary.json, card, W&B.

Run dir layout:
    dataset/data.parquet    the built dataset (DATASET_SCHEMA), all splits, a `split` column
    dataset/README.md       the dataset card
    pool.parquet            every prompt the build saw, its labels, fingerprint and state
    candidates.parquet      every response candidate with the critic's verdict
    rejected.parquet        rejected prompts with their reason and critiques
    row_states.parquet      one terminal state per seed row and generated prompt
    quarantine.parquet      unusable seed rows (when there are any)
    summary.json            accounting, per-step and per-stage statistics, leakage, balance
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from aligncultura.builder import accounting, split, templates
from aligncultura.builder.card import render_card
from aligncultura.builder.schema import CANDIDATE_SCHEMA, DATASET_SCHEMA, POOL_SCHEMA
from aligncultura.data import taxonomy


def balance(counts: dict[int, int]) -> dict[str, Any]:
    """max/min count over the subdomains present (None excluded)."""
    real = {k: v for k, v in counts.items() if k is not None and k != taxonomy.NONE_ID and v}
    if not real:
        return {"max": 0, "min": 0, "ratio": None, "present": 0}
    hi, lo = max(real.values()), min(real.values())
    return {"max": hi, "min": lo, "ratio": hi / lo, "present": len(real),
            "max_subdomain": taxonomy.name_of(max(real, key=lambda k: (real[k], -k))),
            "min_subdomain": taxonomy.name_of(min(real, key=lambda k: (real[k], k)))}


def _dataset_rows(kept: list[dict], models: dict, versions: dict) -> list[dict]:
    rows = []
    for rec in kept:
        out, sub = rec["outcome"], taxonomy.subdomain(rec["primary_id"])
        rows.append({
            "id": rec["prompt_id"], "question": rec["question"], "labels": rec["labels"],
            "primary_id": sub.id, "subdomain": sub.name, "domain": sub.domain, "form": sub.form,
            "response": out["response"], "hhh_pass": out["hhh"], "critiques": out["critiques"],
            "response_round": out["round"], "response_candidate": out["candidate"],
            "simhash": rec["simhash"], "split": rec["split"], "origin": rec["origin"],
            "seed_row_id": rec["prompt_id"] if rec["origin"] == "seed" else None,
            "seed_class_id": rec["seed_class_id"], "generation": rec["generation"],
            "models": models, "prompt_versions": versions})
    return rows


def per_subdomain(pool: list[dict], targets: list[int], floor: int) -> list[dict[str, Any]]:
    kept = [r for r in pool if r["state"] == "kept"]
    rows = []
    for sub in taxonomy.SUBDOMAINS:
        mine = [r for r in kept if r["primary_id"] == sub.id]
        target = sub.id in targets
        n = len(mine)
        if not n and not target:
            continue
        rows.append({"id": sub.id, "subdomain": sub.name, "domain": sub.domain, "kept": n,
                     "seed": sum(r["origin"] == "seed" for r in mine),
                     "generated": sum(r["origin"] == "generated" for r in mine),
                     "floor": floor if target else None,
                     "meets_floor": (n >= floor) if target else None})
    return rows


def write_outputs(cfg: Any, rd: Any, seeds: Any, refs: Any, pool: list[dict],
                  candidates: list[dict], models: dict, targets: list[int], stats: Any,
                  leak: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    names = {r: m.name for r, m in models.items()}
    versions = {k: templates.VERSIONS[k] for k in ("classify", "shortlist", "expand", "respond",
                                          "feedback", "critic")}
    kept = [r for r in pool if r["state"] == "kept"]
    rd.write_parquet("dataset/data.parquet",
                     pa.Table.from_pylist(_dataset_rows(kept, names, versions), schema=DATASET_SCHEMA))
    rd.write_parquet("pool.parquet", pa.Table.from_pylist(
        [{k: r.get(k) for k in POOL_SCHEMA.names} for r in pool], schema=POOL_SCHEMA))
    rd.write_parquet("candidates.parquet", pa.Table.from_pylist(
        [{k: c.get(k) for k in CANDIDATE_SCHEMA.names} for c in candidates],
        schema=CANDIDATE_SCHEMA))
    rejected = [{"prompt_id": r["prompt_id"], "origin": r["origin"], "question": r["question"],
                 "reason": r["reason"], "critiques": (r.get("outcome") or {}).get("critiques")}
                for r in pool if r["state"] == "rejected"]
    rd.write_parquet("rejected.parquet", pa.Table.from_pylist(rejected, schema=pa.schema([
        ("prompt_id", pa.string()), ("origin", pa.string()), ("question", pa.string()),
        ("reason", pa.string()), ("critiques", DATASET_SCHEMA.field("critiques").type)])))
    states = accounting.row_states(pool, seeds.quarantine)
    rd.write_parquet("row_states.parquet", states)
    acc = accounting.tally(states, seeds.read, seeds.used - seeds.table.num_rows,
                  extra["generated_requested"])
    floor = int(cfg.expand.min_per_subdomain)
    subs = per_subdomain(pool, targets, floor)
    dups = [r for r in pool if r["state"] == "duplicate"]
    judged = [c for c in candidates if c["critic_status"] != "skipped"]
    labelled = [r for r in pool if r["labels"] is not None]
    summary = {
        "job": "build_dataset", "status": "ok", "accounting": acc,
        "dataset": {"rows": len(kept), "splits": dict(Counter(r["split"] for r in kept)),
                    "by_origin": dict(Counter(r["origin"] for r in kept)),
                    "by_domain": dict(Counter(taxonomy.domain_of(r["primary_id"]) for r in kept))},
        "per_subdomain": subs,
        "floor": {"min_per_subdomain": floor, "targets": targets,
                  "below_floor": [s["id"] for s in subs if s["meets_floor"] is False]},
        "balance": {"built": balance(Counter(r["primary_id"] for r in kept)),
                    "seed_input": balance(Counter(seeds.table.column("class_id").to_pylist()))},
        "classify": {"method": cfg.classify.method, "delta": float(cfg.classify.delta),
                     "prompts": len(labelled),
                     "none": sum(r["primary_id"] == taxonomy.NONE_ID for r in labelled),
                     "labels_per_prompt": dict(Counter(len(r["labels"]) for r in labelled)),
                     "label_questions": sum(len(r["scores"] or []) for r in labelled),
                     "no_signal": sum(s["status"] not in ("ok",) for r in labelled
                                      for s in r["scores"] or [])},
        "expand": {"rounds": extra["expand_rounds"], "requested": extra["generated_requested"]},
        "dedup": {"max_distance": int(cfg.dedup.max_distance), "duplicates": len(dups),
                  "in_pool": sum(r["duplicate_in"] == "pool" for r in dups),
                  "in_references": dict(Counter(r["duplicate_in"] for r in dups
                                                if r["duplicate_in"] != "pool")),
                  "by_origin": dict(Counter(r["origin"] for r in dups)),
                  "references": refs.stats},
        "respond": {"k": int(cfg.respond.k), "max_feedback_rounds":
                    int(cfg.respond.max_feedback_rounds), "rounds": extra["respond_rounds"],
                    "candidates": len(candidates), "judged": len(judged),
                    "critic_unscored": sum(c["critic_status"] == "unscored" for c in judged),
                    "passing_candidates": sum(bool(c["passed"]) for c in candidates),
                    "rejected_prompts": sum(accounting.reason_code(r["reason"]) == "no_passing_response"
                                            for r in pool if r["state"] == "rejected")},
        "split": {"fractions": list(cfg.split.fractions), "seed": int(cfg.split.seed),
                  **split.proportions([r["primary_id"] for r in kept], [r["split"] for r in kept],
                                  list(cfg.split.fractions))},
        "leakage": leak,
        "models": names, "prompt_versions": versions,
        "prompt_fingerprints": {k: templates.fingerprint(k) for k in versions},
        "engine": {"name": cfg.engine.name, "executor": cfg.engine.executor},
        "stages": stats.to_dict(), "wall_s": extra["wall_s"],
    }
    rd.write_json("summary.json", summary)
    (rd / "dataset" / "README.md").write_text(render_card(summary))
    accounting.print_totals(acc)
    summary["wandb"] = _log_wandb(cfg, rd, summary, subs)
    rd.write_json("summary.json", summary)
    print(f"dataset: {len(kept)} rows ({summary['dataset']['splits']}), leakage "
          f"{leak['flagged']}/{leak['n']}; run dir: {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary}


def _log_wandb(cfg: Any, rd: Any, summary: dict, subs: list[dict]) -> dict:
    if cfg.wandb.mode == "disabled":
        return {"status": "disabled"}
    from omegaconf import OmegaConf

    from aligncultura.tracking import log_run

    flat = {k: v for k, v in summary.items() if k not in ("per_subdomain", "leakage")}
    flat["leakage"] = {k: v for k, v in summary["leakage"].items() if k != "pairs"}
    return log_run(rd.path, cfg.wandb, name="build_dataset", job_type="build_dataset",
                   group=cfg.wandb.group or rd.path.parent.name,
                   config=OmegaConf.to_container(cfg, resolve=True), summary=flat,
                   tables={"per_subdomain": pa.Table.from_pylist(subs)} if subs else None,
                   artifacts={"culturax_built": rd / "dataset"})
