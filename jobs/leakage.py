"""Eval-vs-reference leakage: `python -m jobs.leakage eval.path=... reference.paths=[...]`.

Reads the eval set through the data contract (quarantine, split, limit), indexes it, streams
the reference corpus past it (in this process, or on Ray Data with `executor=ray`) and writes
leakage.parquet (one row per usable eval row, its own id unchanged), summary.json (flagged
rates with Wilson 95% CIs overall, per method and per subdomain; row accounting of both sides),
quarantine.parquet when rows were set aside, and the resolved config + manifest.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import hydra

from aligncultura.data.reader import quarantine_table
from aligncultura.errors import JobError
from aligncultura.jobkit import cli, launch, precheck
from aligncultura.leakage import build_index
from aligncultura.leakage.config import core_config, read_side
from aligncultura.leakage.ray import TaskNodes
from aligncultura.leakage.references import reference_files, scan_references
from aligncultura.leakage.summary import leakage_summary
from aligncultura.rundir import start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: Any) -> dict[str, Any]:
    if cfg.executor not in ("local", "ray"):
        raise JobError(f"executor={cfg.executor!r}: use local or ray")
    lcfg = core_config(cfg.leakage, "leakage")
    # the reference's own columns (the data contract) name what the scan reads
    lcfg.text_column, lcfg.id_column = cfg.reference.text_field, cfg.reference.id_field or "id"
    reference_files(cfg.reference)  # a bad reference path fails before any work
    prompts = read_side(cfg.eval, "eval")
    t = prompts.table
    print(f"plan: {t.num_rows} eval rows (read {prompts.read}, quarantined "
          f"{len(prompts.quarantine)}) vs reference {list(cfg.reference.paths)} "
          f"({cfg.executor}), methods {lcfg.methods}, flag on {lcfg.flag_methods}", flush=True)
    rd = start_run(cfg, "leakage", prompts.files)
    t0 = time.perf_counter()
    index = build_index(t["question"], t["row_id"], lcfg)
    nodes = TaskNodes() if cfg.executor == "ray" else None
    result, ref_counts = scan_references(index, cfg.reference, cfg.executor, cfg.num_workers,
                                         lcfg.batch_size, lcfg.piece_bytes, nodes,
                                         progress=cfg.progress)
    wall = time.perf_counter() - t0
    ref_quarantine = ref_counts.pop("quarantine")
    out = result.rename_columns(["row_id", *result.column_names[1:]])
    for name in ("subdomain", "split"):
        out = out.append_column(name, t[name])
    rd.write_parquet("leakage.parquet", out)
    if prompts.quarantine or ref_quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(prompts.quarantine + ref_quarantine))
    summary = {
        "job": "leakage",
        "rows": {"eval": prompts.counts, "reference": ref_counts},
        "leakage": leakage_summary(out),
        "settings": {"executor": cfg.executor, "methods": list(lcfg.methods),
                     "flag_methods": list(lcfg.flag_methods)},
        "wall_s": wall,
    }
    if nodes is not None:  # Ray tasks (one per Parquet/JSONL piece) per node, seen by the tasks
        summary["ray"] = nodes.report()
        print(nodes.line(), flush=True)
    ev = prompts.counts
    if ev["read"] != ev["used"] + ev["quarantined"] or out.num_rows != ev["selected"]:
        rd.write_json("summary.json", summary)
        raise JobError(f"accounting: eval {ev} but {out.num_rows} rows written")
    rd.write_json("summary.json", summary)
    o = summary["leakage"]["overall"]
    ci = o["ci95"] or [float("nan")] * 2
    print(f"leakage: {o['flagged']}/{o['scored']} eval rows flagged "
          f"({100 * (o['rate'] or 0):.2f}%, 95% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%) against "
          f"{ref_counts['scanned']} reference rows (read {ref_counts['read']}, quarantined "
          f"{ref_counts['quarantined']}, not selected {ref_counts.get('not_selected', 0)}) in "
          f"{wall:.1f}s -> {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary, "table": out}


@hydra.main(version_base="1.3", config_path="../conf", config_name="leakage")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "leakage", ("eval", "reference"))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
