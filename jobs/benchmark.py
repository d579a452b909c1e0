"""Stage II: benchmark a model on HHH with an LLM judge.

    python -m jobs.benchmark model=<preset> judge=<preset> dataset.limit=N run_dir=PATH

A. generate with the model under test (the generation stage); when model and judge are one
   preset, one engine serves both: each batch is judged in the same replica right after it is
   generated;
B. judge every response not judged yet with the judge role (and `judge2=<preset>`);
C. metrics with bootstrap CIs, efficiency, row states; W&B; a printed results table.
With `bench.determinism_sample=0.05` a seeded 5% of the prompts is generated and judged again
with another batch composition and no cache: `metrics.json["determinism"]` says what changed.
Every request goes through the row cache: a rerun recomputes only what is missing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import OmegaConf

from aligncultura.benchmark.accounting import write_row_states
from aligncultura.benchmark.agreement import (
    determinism_changes,
    judge_agreement,
    position_flip_rate,
)
from aligncultura.benchmark.generation import TASK as GENERATE
from aligncultura.benchmark.generation import generation_requests, generation_rows
from aligncultura.benchmark.judging import (
    JudgeFollowup,
    failed_share_error,
    generation_outcomes,
    judge_responses,
    judgment_rows,
)
from aligncultura.benchmark.metrics import compute_metrics
from aligncultura.benchmark.report import results_table
from aligncultura.benchmark.scorers import check_scorer
from aligncultura.compare.html import benchmark_report
from aligncultura.config import command_line_keys  # (importing it registers the schemas)
from aligncultura.data.reader import load_prompts, quarantine_table
from aligncultura.engine.cache import row_cache
from aligncultura.engine.models import architectures, resolve_model
from aligncultura.engine.progress import efficiency
from aligncultura.engine.runner import run_requests, same_engine
from aligncultura.errors import JobError
from aligncultura.jobkit import launch, precheck
from aligncultura.rundir import guard_signals, start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def _meta(prompts: pa.Table) -> dict[str, dict[str, Any]]:
    cols = ("question", "subdomain", "class_id", "helpful_ref", "honest_ref")
    data = {c: prompts.column(c).to_pylist() for c in cols}
    return {rid: {c: data[c][i] for c in cols}
            for i, rid in enumerate(prompts.column("row_id").to_pylist())}


def _generate(cfg, prompts, meta, model, judge, seeds, criteria, stats):
    """Phase A. Returns (generations, generation completions, judge side rows, wall, shared)."""
    cache = row_cache(cfg, model, cfg.model)
    shared = same_engine((model, cfg.model), (judge, cfg.judge.model), cfg.engine)
    followup = JudgeFollowup(meta, OmegaConf.to_container(cfg.judge, resolve=True), criteria,
                             key_salt=cache.salt if cache else None) if shared else None
    done = run_requests(generation_requests(prompts, cfg.model, cfg.generation, seeds), model,
                        cfg.model, cfg.engine, cache=cache, followup=followup,
                        label=f"generate {model.name}" + (" + judge" if shared else ""),
                        progress=cfg.progress)
    stats.update(cached=done.cached, computed=done.computed)
    if done.error:  # rows failed because no engine could serve them: the job exits non-zero
        stats["fatal"] = done.error
    comps = done.completions
    is_gen = pc.equal(comps.column("task"), GENERATE)
    gen, side = comps.filter(is_gen), comps.filter(pc.invert(is_gen))
    prompt_of = {rid: m["question"] for rid, m in meta.items()}
    gens = generation_rows(gen, prompt_of, model.name).sort_by(
        [("row_id", "ascending"), ("sample_index", "ascending")])
    return gens, gen, side, done.wall_s, shared


def _determinism_probe(cfg, prompts, meta, model, judge, seeds, criteria, gens, judgments):
    """`bench.determinism_sample`: generate a seeded sample of the prompts again with another
    batch composition (reverse order, a smaller engine batch size, the row cache bypassed),
    judge it again (no cache either) and report the share of responses and verdicts that
    changed (`agreement.determinism_changes`). Costs one more engine pass."""
    share = float(cfg.bench.determinism_sample)
    total = prompts.num_rows
    k = min(total, max(1, round(share * total)))
    rng = np.random.default_rng(int(cfg.generation.seed))
    picked = sorted(rng.choice(total, size=k, replace=False).tolist(), reverse=True)
    batch_size = max(1, min(int(cfg.engine.batch_size) // 2, -(-k // 2)))
    probe = OmegaConf.merge(cfg, {"cache_dir": "off", "engine": {"batch_size": batch_size}})
    print(f"determinism probe: {k} prompt(s) again in reverse order, engine batch size "
          f"{batch_size}, no cache", flush=True)
    gens2, _, side, _, shared = _generate(probe, prompts.take(pa.array(picked)), meta, model,
                                          judge, seeds, criteria, {})
    if shared:
        judged2 = judgment_rows(side, model.name, judge.name)
    else:
        judged2, _, _ = judge_responses(probe, gens2, meta, probe.judge, judge, criteria, model.name, {})
    return {"sample_share": share, "sample_prompts": k, "order": "reverse",
            "batch_size": batch_size, "seed": int(cfg.generation.seed),
            **determinism_changes(gens, gens2, judgments, judged2)}


def _scorers(cfg, criteria, provision):
    """The scorer judges (`scorer.<criterion>`) of the criteria this run judges, checked:
    {criterion: (judge config, resolved model)}."""
    out = {}
    for key, jc in (("judge", cfg.judge), ("judge2", cfg.judge2)):
        if jc is not None and jc.kind != "rubric":
            raise JobError(f"{key}.kind={jc.kind}: {key} is a rubric judge of every criterion; "
                           f"give a scorer per criterion instead (scorer/<criterion>=<preset>)")
    for criterion in ("harmless", "truthful", "informative"):
        jc = cfg.scorer.get(criterion)
        if jc is None or criterion not in criteria:
            continue
        key = f"scorer.{criterion}"
        problem = check_scorer(jc, key, criterion)
        if problem is None and jc.kind != "rubric" and jc.model.source == "api":
            problem = f"{key}.model.source=api: scorer judges need an in-process vLLM engine"
        if problem:
            raise JobError(problem)
        resolved = resolve_model(jc.model, key=f"{key}.model", provision=provision)
        arch = architectures(resolved) if jc.kind == "classifier" else None
        if arch is not None and not any(a.endswith("ForSequenceClassification") for a in arch):
            raise JobError(f"{key} ({jc.model.name}): {resolved.path} is a {'/'.join(arch) or '?'} "
                           "checkpoint, not a sequence-classification model; a classifier judge "
                           "needs a *ForSequenceClassification checkpoint (or use kind=rubric)")
        out[criterion] = (jc, resolved)
    return out


SPREAD_METRICS = ("win_rate", "safety_score", "truthful_informative", "joint_hhh",
                  "cultural_failure_rate")


def seed_spread(judgments: pa.Table, row_meta: dict, seeds: list[int], n: int,
                bench: Any) -> dict[str, Any]:
    """Each generation seed's headline metrics and their spread across seeds (the paper
    averages three seeds and reports how far they are apart)."""
    position = pc.divide(pc.cast(judgments["sample_index"], pa.int64()), n)
    per_seed = []
    for k, seed in enumerate(seeds):
        mine = judgments.filter(pc.equal(position, k))
        if not mine.num_rows:
            continue
        m = compute_metrics(mine, row_meta, n_resamples=bench.n_resamples, seed=bench.ci_seed)
        per_seed.append({"seed": seed, **{name: m[name]["value"] for name in SPREAD_METRICS
                                          if isinstance(m.get(name), dict)}})
    spread = {}
    for name in SPREAD_METRICS:
        values = [s[name] for s in per_seed if s.get(name) is not None]
        if values:
            spread[name] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))
                            if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}
    return {"per_seed": per_seed, "spread": spread}


def unscored_failures(judgments: pa.Table, judge: str, limit: float) -> list[str]:
    """One message per criterion whose unscored share is above `judge.max_unscored_rate`."""
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
    prompts = load_prompts(cfg.dataset, "dataset", command_line_keys())
    provision = not cfg.dry_run
    model = resolve_model(cfg.model, provision=provision)
    judge = resolve_model(cfg.judge.model, key="judge.model", provision=provision)
    judge2_cfg = cfg.judge2
    judge2 = resolve_model(judge2_cfg.model, key="judge2.model",
                           provision=provision) if judge2_cfg else None
    seeds = list(cfg.bench.seeds) if cfg.bench.seeds else \
        ([0, 1, 2] if cfg.engine.num_gpus_per_replica else [0])
    criteria, n = tuple(cfg.bench.criteria), int(cfg.generation.n)
    scorers = _scorers(cfg, criteria, provision)
    criteria = tuple(c for c in criteria if c not in scorers)  # the rubric judge's
    if not 0 <= cfg.bench.max_failed_rate <= 1:
        raise JobError(f"bench.max_failed_rate={cfg.bench.max_failed_rate}: give a share of the "
                       "generations in [0, 1]")
    if not 0 <= cfg.bench.determinism_sample <= 1:
        raise JobError(f"bench.determinism_sample={cfg.bench.determinism_sample}: give a share "
                       "of the prompts in [0, 1] (0 = no determinism probe)")
    if cfg.bench.leakage_report and not Path(cfg.bench.leakage_report).expanduser().exists():
        raise JobError(f"bench.leakage_report={cfg.bench.leakage_report}: no such file; give the "
                       "leakage.parquet written by jobs.leakage, or null")
    print(f"plan: {prompts.table.num_rows} prompts (read {prompts.read}, quarantined "
          f"{len(prompts.quarantine)}) x {len(seeds)} seed(s) x n={n}; model {model.name}, "
          f"judge {judge.name}{', judge2 ' + judge2.name if judge2 else ''}"
          + "".join(f", {c} by {m.name} ({jc.kind})" for c, (jc, m) in scorers.items())
          + "; engine "
          f"{cfg.engine.name} ({cfg.engine.executor}); max_tokens {cfg.generation.max_tokens}, "
          f"judge max_tokens {cfg.judge.max_tokens}", flush=True)
    if "helpful" in criteria and not any(prompts.table.column("helpful_ref").to_pylist()):
        print("note: the dataset has no reference helpful answers: win rate (and the joint "
              "score) are skipped; harmlessness and honesty are still judged", flush=True)
    if cfg.dry_run:
        return {"dry_run": True}

    rd = start_run(cfg, "benchmark", prompts.files)
    if prompts.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(prompts.quarantine))
    meta = _meta(prompts.table)
    gen_stats: dict = {}
    judge_stats: dict = {}
    with guard_signals(rd):
        gens, gen_comps, side, gen_wall, shared = _generate(
            cfg, prompts.table, meta, model, judge, seeds, criteria, gen_stats)
        rd.write_parquet("generations.parquet", gens)
        expected = prompts.table.num_rows * len(seeds) * n
        if gens.num_rows != expected:
            raise JobError(f"accounting: {gens.num_rows} generations written, {expected} "
                           f"expected (see {rd.path})")
        judgments, judge_comps, judge_wall = judge_responses(
            cfg, gens, meta, cfg.judge, judge, criteria, model.name, judge_stats,
            done_already=side if shared else None)
        scorer_eff = {}
        for criterion, (jc, smodel) in scorers.items():
            s_stats: dict = {}
            scored, s_comps, s_wall = judge_responses(cfg, gens, meta, jc, smodel, (criterion,),
                                             model.name, s_stats)
            judgments = pa.concat_tables([judgments, scored])
            scorer_eff[criterion] = {"judge": smodel.name, "kind": jc.kind,
                                     "threshold": float(jc.threshold),
                                     **efficiency(s_comps, s_wall, cfg.engine.num_gpus_per_replica,
                                                  cfg.engine.replicas), **s_stats}
            for k in ("cached", "computed"):
                judge_stats[k] += s_stats[k]
            if s_stats.get("fatal"):
                judge_stats.setdefault("fatal", s_stats["fatal"])
        rd.write_parquet("judgments.parquet", judgments)
        judgments2 = None
        if judge2:
            judgments2, _, _ = judge_responses(cfg, gens, meta, judge2_cfg, judge2, criteria, model.name, {})
            rd.write_parquet("judgments_judge2.parquet", judgments2)
        determinism = _determinism_probe(cfg, prompts.table, meta, model, judge, seeds, criteria,
                                         gens, judgments) if cfg.bench.determinism_sample else None
    if gen_stats["computed"] + judge_stats["computed"] == 0:
        print(f"all {gen_stats['cached'] + judge_stats['cached']} rows cached: no engine started"
              + (" (but for the determinism probe)" if determinism else ""))

    row_meta = {rid: m["class_id"] if m["class_id"] is not None else 41 for rid, m in meta.items()}
    states = write_row_states(rd, prompts, gens, judgments)
    if judgments.num_rows == 0:
        why = ", ".join(f"{k} {v}" for k, v in generation_outcomes(gens)["by_reason"].items() if v)
        raise JobError(f"no judgments: every generation was left out of the metrics ({why}); "
                       f"see {rd / 'generations.parquet'}")
    metrics = compute_metrics(judgments, row_meta, n_resamples=cfg.bench.n_resamples,
                              seed=cfg.bench.ci_seed)
    metrics["position_flip"] = position_flip_rate(judgments)
    metrics["generation_failed"] = generation_outcomes(gens)
    if cfg.bench.leakage_report:
        from aligncultura.leakage.summary import without_leaked

        metrics["without_leaked"] = without_leaked(judgments, row_meta, cfg.bench.leakage_report,
                                                   n_resamples=cfg.bench.n_resamples,
                                                   seed=cfg.bench.ci_seed)
    num_gpus, replicas = cfg.engine.num_gpus_per_replica, cfg.engine.replicas
    gen_eff = efficiency(pa.concat_tables([gen_comps, side]), gen_wall, num_gpus, replicas)
    judge_eff = efficiency(judge_comps, judge_wall, num_gpus, replicas)
    if shared:
        gen_eff["note"] = ("model and judge shared one engine in one pass: throughput and "
                           "latency cover generation and judge requests together")
        if side.num_rows:
            judge_eff = efficiency(side, gen_wall, num_gpus, replicas)
            judge_eff["note"] = "judged in the generation pass (one engine); wall time shared"
    gen_eff.update(cached_requests=gen_stats["cached"], computed_requests=gen_stats["computed"])
    judge_eff.update(cached_requests=judge_stats["cached"],
                     computed_requests=judge_stats["computed"])
    metrics.update(model=model.name, judge=judge.name, judge_demo_only=bool(cfg.judge.demo_only),
                   rows=states,
                   efficiency={"generation": gen_eff, "judging": judge_eff,
                               "wall_s": time.perf_counter() - t_job})
    if scorer_eff:
        metrics["scorers"] = scorer_eff
    if len(seeds) > 1:
        metrics["seeds"] = seed_spread(judgments, row_meta, seeds, n, cfg.bench)
    if judgments2 is not None:
        metrics["judge2"] = {"judge": judge2.name,
                             "agreement": judge_agreement(judgments, judgments2, row_meta)}
    if determinism is not None:
        metrics["determinism"] = determinism
    rd.write_json("metrics.json", metrics)
    mine = judgments.filter(pc.is_in(judgments["criterion"], pa.array(list(criteria), pa.string())))
    failures = unscored_failures(mine, judge.name, cfg.judge.max_unscored_rate)
    for criterion, (jc, smodel) in scorers.items():
        failures += unscored_failures(
            judgments.filter(pc.equal(judgments["criterion"], criterion)), smodel.name,
            jc.max_unscored_rate)
    if judgments2 is not None:
        failures += unscored_failures(judgments2, judge2.name, judge2_cfg.max_unscored_rate)
    too_many = failed_share_error(metrics["generation_failed"], cfg.bench.max_failed_rate)
    if too_many:
        failures.append(too_many)
    # no engine left to serve some rows: said first, with how to resume
    failures[:0] = [f"{s['fatal']}; rerun the same command once the cluster can place a replica "
                    "(finished rows are cached)" for s in (gen_stats, judge_stats) if s.get("fatal")]
    summary = {
        "job": "benchmark", "model": model.name, "judge": judge.name,
        "rows": {**prompts.counts, "states": states},
        "generations": {"expected": expected, "written": gens.num_rows,
                        "failed": sum(s != "ok" for s in gens.column("status").to_pylist()),
                        "by_status": {s: gens.column("status").to_pylist().count(s)
                                      for s in sorted(set(gens.column("status").to_pylist()))},
                        **gen_stats},
        "judgments": {"written": judgments.num_rows,
                      "unscored": sum(s != "scored" for s in judgments.column("status").to_pylist()),
                      **judge_stats},
        "status": "failed" if failures else "ok",
        "errors": failures,
    }
    rd.write_json("summary.json", summary)
    report = benchmark_report(rd.path, metrics, judgments, gens, row_meta, judgments2)
    wb = _log_wandb(cfg, rd, metrics, judgments, gens, prompts.table, report["plots"])
    print(results_table([metrics], judge_demo=cfg.judge.demo_only))
    if wb.get("status") == "ok" and wb.get("mode") == "offline":
        print(f"W&B (offline): {wb.get('dir')}  (upload later: wandb sync {wb.get('dir')})")
    print(f"report: {report['html']}")
    print(f"run dir: {rd.path}", flush=True)
    if failures:
        raise JobError(failures[0] + f"; all results kept in {rd.path}")
    return {"run_dir": str(rd.path), "metrics": metrics, "summary": summary}


def _log_wandb(cfg, rd, metrics, judgments, gens, prompts, plots=None) -> dict:
    if cfg.wandb.mode == "disabled":
        return {"status": "disabled"}
    from aligncultura.benchmark.report import per_sample_table, per_subdomain_table
    from aligncultura.tracking import log_run

    return log_run(rd.path, cfg.wandb, name=metrics["model"], job_type="benchmark",
                   group=cfg.wandb.group or rd.path.parent.name,
                   config=OmegaConf.to_container(cfg, resolve=True),
                   summary={k: v for k, v in metrics.items() if k != "by_subdomain"},
                   tables={"per_sample": per_sample_table(judgments, gens, prompts),
                           "per_subdomain": per_subdomain_table(metrics)},
                   images={f"plots/{name}": path for name, path in (plots or {}).items()})


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def _hydra_main(cfg: Any) -> None:
    from aligncultura.jobkit import cli

    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "benchmark", ("model", "judge", "judge2", "dataset", "engine", "experiment"))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
