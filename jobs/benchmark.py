"""Stage II: benchmark a model on HHH with an LLM judge.

    python -m jobs.benchmark model=<preset> judge=<preset> dataset.limit=N run_dir=PATH

Generates with the model under test (the generation stage), judges every response with the
judge role, and writes `generations.parquet`, `judgments.parquet`, `metrics.json`,
`summary.json` and a W&B run into the run dir, then prints a compact results table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pyarrow as pa
from omegaconf import OmegaConf

from aligncultura import config as schemas
from aligncultura.agreement import position_flip_rate
from aligncultura.data import GENERATION_SCHEMA, load_prompts, quarantine_table
from aligncultura.generation import generation_requests, generation_rows
from aligncultura.jobkit import (
    JobError,
    Progress,
    cache_dir,
    cli,
    efficiency,
    precheck,
    start_run,
)
from aligncultura.judges import JUDGMENT_SCHEMA
from aligncultura.judging import JudgeFollowup, judgment_rows, requests_for
from aligncultura.metrics import compute_metrics
from aligncultura.models import resolve_model
from aligncultura.report import results_table
from aligncultura.runner import complete, request_table, same_engine

CONF = Path(__file__).resolve().parent.parent / "conf"


def load_judge_preset(name: str) -> Any:
    """`judge2=<name>`: a preset of conf/judge/, merged over the JudgeConfig schema."""
    path = CONF / "judge" / f"{name}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in (CONF / "judge").glob("*.yaml")))
        raise JobError(f"judge2={name}: no such judge preset; available: {available}")
    return OmegaConf.merge(OmegaConf.structured(schemas.JudgeConfig), OmegaConf.load(path))


def _meta(prompts: pa.Table) -> dict[str, dict[str, Any]]:
    cols = ("question", "subdomain", "class_id", "helpful_ref", "honest_ref")
    data = {c: prompts.column(c).to_pylist() for c in cols}
    return {rid: {c: data[c][i] for c in cols}
            for i, rid in enumerate(prompts.column("row_id").to_pylist())}


def _judge(gens: pa.Table, meta: dict, judge_cfg: Any, judge_model, engine_cfg,
           criteria: tuple[str, ...], model_name: str, progress: bool) -> tuple[pa.Table, pa.Table, float]:
    reqs = [r for g in gens.to_pylist() for r in requests_for(g, meta[g["row_id"]], judge_cfg, criteria)]
    t0 = time.perf_counter()
    bar = Progress(f"judge {judge_model.name}", len(reqs), enabled=progress)
    comps = []
    for batch in complete(request_table(reqs), judge_model, judge_cfg.model, engine_cfg):
        comps.append(batch)
        bar.update(batch.num_rows, sum(batch.column("output_tokens").to_pylist()))
    wall = time.perf_counter() - t0
    completions = pa.concat_tables(comps) if comps else None
    rows = judgment_rows(completions, model_name, judge_model.name) if comps else \
        JUDGMENT_SCHEMA.empty_table()
    return rows, completions, wall


def unscored_failures(metrics: dict, judgments: pa.Table, judge: str, limit: float) -> list[str]:
    """Criteria whose unscored share is above `judge.max_unscored_rate`."""
    bad = []
    rows = judgments.to_pylist()
    for criterion in sorted({r["criterion"] for r in rows}):
        mine = [r for r in rows if r["criterion"] == criterion]
        uns = [r for r in mine if r["status"] != "scored"]
        if mine and len(uns) / len(mine) > limit:
            reasons: dict[str, int] = {}
            for r in uns:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
            why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda x: -x[1]))
            bad.append(f"judge {judge} unscored {len(uns)}/{len(mine)} {criterion} "
                       f"judgments ({why}) > judge.max_unscored_rate={limit}")
    return bad


def run(cfg: Any) -> dict[str, Any]:
    t_job = time.perf_counter()
    prompts = load_prompts(cfg.dataset)
    provision = not cfg.dry_run
    model = resolve_model(cfg.model, cache_dir(cfg), provision=provision)
    judge = resolve_model(cfg.judge.model, cache_dir(cfg), key="judge.model", provision=provision)
    judge2_cfg = load_judge_preset(cfg.judge2) if cfg.judge2 else None
    judge2 = resolve_model(judge2_cfg.model, cache_dir(cfg), key="judge2.model",
                           provision=provision) if judge2_cfg else None
    seeds = list(cfg.bench.seeds)
    criteria = tuple(cfg.bench.criteria)
    n = int(cfg.generation.n)
    has_refs = any(v for v in prompts.table.column("helpful_ref").to_pylist())
    print(f"plan: {prompts.table.num_rows} prompts (read {prompts.read}, quarantined "
          f"{len(prompts.quarantine)}) x {len(seeds)} seed(s) x n={n}; model {model.name}, "
          f"judge {judge.name}{', judge2 ' + judge2.name if judge2 else ''}; engine "
          f"{cfg.engine.name} ({cfg.engine.executor}); max_tokens {cfg.generation.max_tokens}, "
          f"judge max_tokens {cfg.judge.max_tokens}", flush=True)
    if not has_refs and "helpful" in criteria:
        print("note: the dataset has no reference helpful answers: win rate (and the joint "
              "score) are skipped; harmlessness and honesty are still judged", flush=True)
    if cfg.dry_run:
        return {"dry_run": True}

    rd = start_run(cfg, "benchmark", prompts.files)
    if prompts.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(prompts.quarantine))
    meta = _meta(prompts.table)

    # generation (+ judging in the same replica when model and judge are one engine)
    shared = same_engine((model, cfg.model), (judge, cfg.judge.model), cfg.engine)
    followup = JudgeFollowup(meta, OmegaConf.to_container(cfg.judge, resolve=True), n, criteria) \
        if shared else None
    reqs = generation_requests(prompts.table, cfg.model, cfg.generation, seeds)
    by_id = {r["request_id"]: r for r in reqs}
    bar = Progress(f"generate {model.name}" + (" + judge" if shared else ""), len(reqs),
                   enabled=cfg.progress)
    t0 = time.perf_counter()
    gen_parts, gen_comps, judge_comps = [], [], []
    for batch in complete(request_table(reqs), model, cfg.model, cfg.engine, followup):
        is_gen = [("::gen" in r) for r in batch.column("request_id").to_pylist()]
        g = batch.filter(pa.array(is_gen))
        j = batch.filter(pa.array([not x for x in is_gen]))
        gen_comps.append(g)
        gen_parts.append(generation_rows(g, by_id, model.name, n))
        if j.num_rows:
            judge_comps.append(j)
        bar.update(len(set(g.column("request_id").to_pylist())),
                   sum(g.column("output_tokens").to_pylist()))
    gen_wall = time.perf_counter() - t0
    gens = pa.concat_tables(gen_parts).sort_by([("row_id", "ascending"), ("sample_index", "ascending")]) \
        if gen_parts else GENERATION_SCHEMA.empty_table()
    rd.write_parquet("generations.parquet", gens)
    expected = prompts.table.num_rows * len(seeds) * n
    if gens.num_rows != expected:
        raise JobError(f"accounting: {gens.num_rows} generations written, {expected} expected "
                       f"(see {rd.path})")

    # judging
    if shared:
        judge_completions = pa.concat_tables(judge_comps) if judge_comps else None
        judgments = judgment_rows(judge_completions, model.name, judge.name) \
            if judge_completions is not None else JUDGMENT_SCHEMA.empty_table()
        judge_wall = None
    else:
        judgments, judge_completions, judge_wall = _judge(
            gens, meta, cfg.judge, judge, cfg.engine, criteria, model.name, cfg.progress)
    rd.write_parquet("judgments.parquet", judgments)
    judgments2 = None
    if judge2:
        judgments2, _, _ = _judge(gens, meta, judge2_cfg, judge2, cfg.engine, criteria,
                                  model.name, cfg.progress)
        rd.write_parquet("judgments_judge2.parquet", judgments2)

    # metrics
    row_meta = {rid: m["class_id"] if m["class_id"] is not None else 41 for rid, m in meta.items()}
    if judgments.num_rows == 0:
        raise JobError(f"no judgments: every generation failed (see {rd.path / 'generations.parquet'})")
    metrics = compute_metrics(judgments, row_meta, n_resamples=cfg.bench.n_resamples,
                              seed=cfg.bench.ci_seed)
    metrics["position_flip"] = position_flip_rate(judgments)
    gen_eff = efficiency(pa.concat_tables(gen_comps), gen_wall, cfg.engine.num_gpus_per_replica,
                         cfg.engine.replicas)
    if shared:  # one engine served both: the stage's throughput covers both kinds of request
        both = pa.concat_tables([*gen_comps, *judge_comps])
        gen_eff = efficiency(both, gen_wall, cfg.engine.num_gpus_per_replica, cfg.engine.replicas)
        gen_eff["note"] = ("model and judge shared one engine in one pass: throughput and "
                           "latency cover generation and judge requests together")
        judge_eff = efficiency(judge_completions, gen_wall, cfg.engine.num_gpus_per_replica,
                               cfg.engine.replicas) if judge_completions is not None else {}
        judge_eff["note"] = "wall time shared with generation (one engine, one pass)"
    else:
        judge_eff = efficiency(judge_completions, judge_wall, cfg.engine.num_gpus_per_replica,
                               cfg.engine.replicas) if judge_completions is not None else {}
    metrics["model"] = model.name
    metrics["judge"] = judge.name
    metrics["judge_demo_only"] = bool(cfg.judge.demo_only)
    metrics["efficiency"] = {"generation": gen_eff, "judging": judge_eff,
                             "wall_s": time.perf_counter() - t_job}
    if judgments2 is not None:
        from aligncultura.agreement import judge_agreement

        metrics["judge2"] = {"judge": judge2.name,
                             "agreement": judge_agreement(judgments, judgments2, row_meta)}
    rd.write_json("metrics.json", metrics)
    failures = unscored_failures(metrics, judgments, judge.name, cfg.judge.max_unscored_rate)
    summary = {
        "job": "benchmark",
        "model": model.name,
        "judge": judge.name,
        "rows": prompts.counts,
        "generations": {"expected": expected, "written": gens.num_rows,
                        "failed": sum(s != "ok" for s in gens.column("status").to_pylist())},
        "judgments": {"written": judgments.num_rows,
                      "unscored": sum(s != "scored" for s in judgments.column("status").to_pylist())},
        "status": "failed" if failures else "ok",
        "errors": failures,
    }
    rd.write_json("summary.json", summary)
    wb = _log_wandb(cfg, rd, metrics, judgments, gens, prompts.table)
    print(results_table([metrics], judge_demo=cfg.judge.demo_only))
    if wb.get("status") == "ok" and wb.get("mode") == "offline":
        print(f"W&B (offline): {wb.get('dir')}  (upload later: wandb sync {wb.get('dir')})")
    print(f"run dir: {rd.path}", flush=True)
    if failures:
        raise JobError(failures[0] + f"; all results kept in {rd.path}")
    return {"run_dir": str(rd.path), "metrics": metrics, "summary": summary}


def _log_wandb(cfg, rd, metrics, judgments, gens, prompts) -> dict:
    if cfg.wandb.mode == "disabled":
        return {"status": "disabled"}
    from aligncultura.report import per_sample_table, per_subdomain_table
    from aligncultura.tracking import log_run

    group = cfg.wandb.group or rd.path.parent.name
    return log_run(rd.path, cfg.wandb, name=f"{metrics['model']}", job_type="benchmark",
                   group=group, config={**OmegaConf.to_container(cfg, resolve=True)},
                   summary={k: v for k, v in metrics.items() if k not in ("by_subdomain",)},
                   tables={"per_sample": per_sample_table(judgments, gens, prompts),
                           "per_subdomain": per_subdomain_table(metrics)})


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "benchmark", ("model", "judge", "dataset", "engine", "experiment"))
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
