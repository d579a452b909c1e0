"""Generate responses for a dataset with one model: `python -m jobs.generate [overrides]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra

from aligncultura.benchmark.accounting import write_row_states
from aligncultura.benchmark.generation import generation_requests, generation_rows
from aligncultura.config import command_line_keys  # (importing it registers the schemas)
from aligncultura.data.reader import load_prompts, quarantine_table
from aligncultura.engine.cache import row_cache
from aligncultura.engine.models import resolve_model
from aligncultura.engine.progress import efficiency
from aligncultura.engine.runner import run_requests
from aligncultura.errors import JobError
from aligncultura.jobkit import cli, launch, precheck
from aligncultura.rundir import guard_signals, start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def plan(cfg: Any) -> dict[str, Any]:
    """Validate config, inputs and model paths without starting an engine."""
    prompts = load_prompts(cfg.dataset, "dataset", command_line_keys())
    model = resolve_model(cfg.model, provision=not cfg.dry_run)
    return {"prompts": prompts, "model": model}


def run(cfg: Any) -> dict[str, Any]:
    p = plan(cfg)
    prompts, model = p["prompts"], p["model"]
    n = int(cfg.generation.n)
    expected = prompts.table.num_rows * n
    line = (f"plan: {prompts.table.num_rows} prompts (read {prompts.read}, quarantined "
            f"{len(prompts.quarantine)}) x n={n} with model {model.name} ({model.source}: "
            f"{model.path}) on engine {cfg.engine.name} ({cfg.engine.executor}, "
            f"{cfg.engine.replicas or 'auto'} replica(s)), max_tokens {cfg.generation.max_tokens}")
    print(line, flush=True)
    if cfg.dry_run:
        return {"dry_run": True, "plan": line}
    rd = start_run(cfg, "generate", prompts.files)
    if prompts.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(prompts.quarantine))
    reqs = generation_requests(prompts.table, cfg.model, cfg.generation)
    cache = row_cache(cfg, model, cfg.model)
    with guard_signals(rd):
        done = run_requests(reqs, model, cfg.model, cfg.engine, label="generate", cache=cache,
                            progress=cfg.progress)
    if done.computed == 0:
        print(f"all {done.cached} rows cached: no engine started", flush=True)
    prompt_of = dict(zip(prompts.table.column("row_id").to_pylist(),
                         prompts.table.column("question").to_pylist(), strict=True))
    gens = generation_rows(done.completions, prompt_of, model.name).sort_by(
        [("row_id", "ascending"), ("sample_index", "ascending")])
    rd.write_parquet("generations.parquet", gens)
    stats = {"cached": done.cached, "computed": done.computed}
    failed = sum(1 for s in gens.column("status").to_pylist() if s != "ok")
    states = write_row_states(rd, prompts, gens, None)
    summary = {
        "job": "generate",
        "model": model.name,
        "rows": {**prompts.counts, "states": states},
        "generations": {"expected": expected, "written": gens.num_rows, "ok": gens.num_rows - failed,
                        "failed": failed, **stats},
        "efficiency": efficiency(done.completions, done.wall_s, cfg.engine.num_gpus_per_replica,
                                 cfg.engine.replicas),
    }
    if gens.num_rows != expected:
        rd.write_json("summary.json", summary)
        raise JobError(f"accounting: {gens.num_rows} generations written, {expected} expected")
    if done.error:
        summary["error"] = done.error
    rd.write_json("summary.json", summary)
    if done.error:  # no engine could serve every row: what was done is written, exit 2
        raise JobError(f"{done.error}; {failed} rows marked failed, the rest written to "
                       f"{rd.path}; rerun the same command once the cluster can place a "
                       "replica (finished rows are cached)")
    eff = summary["efficiency"]
    rate = f"{eff['output_tok_s']:.1f}" if eff["output_tok_s"] is not None else "n/a"
    print(f"generate: {gens.num_rows} generations ({failed} failed), "
          f"{rate} out tok/s, engine start {eff['engine_start_s']:.0f}s, "
          f"wall {done.wall_s:.0f}s -> {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary}


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "generate", ("model", "dataset", "engine", "experiment"))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
