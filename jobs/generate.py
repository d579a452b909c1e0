"""Generate responses for a dataset with one model: `python -m jobs.generate [overrides]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pyarrow as pa

from aligncultura import config as _config  # noqa: F401  (registers the schemas)
from aligncultura.data import GENERATION_SCHEMA, load_prompts, quarantine_table
from aligncultura.generation import generation_requests, generation_rows
from aligncultura.jobkit import (
    JobError,
    Progress,
    cli,
    efficiency,
    guard_signals,
    precheck,
    row_cache,
    start_run,
    write_row_states,
)
from aligncultura.models import resolve_model
from aligncultura.runner import complete, request_table

CONF = Path(__file__).resolve().parent.parent / "conf"


def plan(cfg: Any) -> dict[str, Any]:
    """Validate config, inputs and model paths without starting an engine."""
    prompts = load_prompts(cfg.dataset)
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
    by_id = {r["request_id"]: r for r in reqs}
    cache = row_cache(cfg, model, cfg.model)
    t0 = time.perf_counter()
    progress = Progress("generate", len(reqs), enabled=cfg.progress)
    parts, comps, stats = [], [], {}
    with guard_signals(rd):
        for batch in complete(request_table(reqs, cache.salt if cache else None), model,
                              cfg.model, cfg.engine, cache=cache, stats=stats):
            comps.append(batch)
            parts.append(generation_rows(batch, by_id, model.name, n))
            progress.update(len(set(batch.column("request_id").to_pylist())), batch=batch)
    wall = time.perf_counter() - t0
    if stats["computed"] == 0:
        print(f"all {stats['cached']} rows cached: no engine started", flush=True)
    gens = pa.concat_tables(parts).sort_by([("row_id", "ascending"), ("sample_index", "ascending")]) \
        if parts else GENERATION_SCHEMA.empty_table()
    rd.write_parquet("generations.parquet", gens)
    completions = pa.concat_tables(comps)
    failed = sum(1 for s in gens.column("status").to_pylist() if s != "ok")
    states = write_row_states(rd, prompts, gens, None)
    summary = {
        "job": "generate",
        "model": model.name,
        "rows": {**prompts.counts, "states": states},
        "generations": {"expected": expected, "written": gens.num_rows, "ok": gens.num_rows - failed,
                        "failed": failed, **stats},
        "efficiency": efficiency(completions, wall, cfg.engine.num_gpus_per_replica,
                                 cfg.engine.replicas),
    }
    if gens.num_rows != expected:
        rd.write_json("summary.json", summary)
        raise JobError(f"accounting: {gens.num_rows} generations written, {expected} expected")
    rd.write_json("summary.json", summary)
    eff = summary["efficiency"]
    rate = f"{eff['output_tok_s']:.1f}" if eff["output_tok_s"] is not None else "n/a"
    print(f"generate: {gens.num_rows} generations ({failed} failed), "
          f"{rate} out tok/s, engine start {eff['engine_start_s']:.0f}s, "
          f"wall {wall:.0f}s -> {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary}


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "generate", ("model", "dataset", "engine", "experiment"))
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
