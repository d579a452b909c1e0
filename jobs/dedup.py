"""Within-set dedup: `python -m jobs.dedup input.path=... run_dir=PATH`.

`executor=ray` computes the fingerprints on Ray Data (blocks of `batch_size` rows, at most
`num_workers` at once); candidate pairs, exact verification and union-find stay on the driver,
so the clusters are identical to the in-process run.

Reads one input through the data contract (quarantine, split, limit), groups exact duplicates
(identical normalised text) and near-duplicates (`dedup.method`: MinHash LSH verified by exact
Jaccard, or SimHash verified by Hamming distance; union-find; the earliest row represents its
cluster) and writes clusters.parquet (one row per usable row: its own id unchanged, near-dup
cluster id, representative, similarity to it, and the exact-duplicate group), summary.json
(group counts, duplicates dropped, row accounting), quarantine.parquet when rows were set aside.
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
from aligncultura.leakage import exact_clusters, near_duplicate_clusters
from aligncultura.leakage.clusters import duplicate_groups
from aligncultura.leakage.config import core_config, read_side
from aligncultura.leakage.ray import ray_fingerprints
from aligncultura.leakage.textbatch import TextBatch
from aligncultura.rundir import start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: Any) -> dict[str, Any]:
    dcfg = core_config(cfg.dedup, "dedup")
    if dcfg.method not in ("minhash", "simhash"):
        raise JobError(f"dedup.method={dcfg.method!r}: use minhash or simhash")
    if cfg.executor not in ("local", "ray"):
        raise JobError(f"executor={cfg.executor!r}: use local or ray")
    if int(cfg.batch_size) < 1:
        raise JobError(f"batch_size={cfg.batch_size}: must be >= 1")
    prompts = read_side(cfg.input, "input")
    t = prompts.table
    print(f"plan: {t.num_rows} rows (read {prompts.read}, quarantined {len(prompts.quarantine)}), "
          f"exact + near-duplicates by {dcfg.method} ({cfg.executor})", flush=True)
    rd = start_run(cfg, "dedup", prompts.files)
    t0 = time.perf_counter()
    batch = TextBatch(t["question"], dcfg.normalize)  # normalised once, for both passes
    exact = exact_clusters(t["question"], t["row_id"], dcfg.normalize, batch=batch)
    fps = ray_fingerprints(t["question"], dcfg, cfg.num_workers, int(cfg.batch_size)) \
        if cfg.executor == "ray" else None
    near = near_duplicate_clusters(t["question"], t["row_id"], dcfg, fingerprints=fps,
                                   batch=batch)
    del batch
    wall = time.perf_counter() - t0
    out = near.rename_columns(["row_id", *near.column_names[1:]])
    out = out.append_column("exact_cluster_id", exact["cluster_id"])
    out = out.append_column("exact_representative", exact["representative"])
    for name in ("subdomain", "split"):
        out = out.append_column(name, t[name])
    rd.write_parquet("clusters.parquet", out)
    if prompts.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(prompts.quarantine))
    rep = out["is_representative"].to_pylist()
    size = out["cluster_size"].to_pylist()
    status = out["status"].to_pylist()
    kept = sum(1 for r in rep if r)
    in_groups = sum(1 for s in size if s and s > 1)
    exact_rep = exact["is_representative"].to_pylist()
    summary = {
        "job": "dedup",
        "rows": prompts.counts,
        "exact": {"groups": duplicate_groups(exact),
                  "rows_in_groups": sum(1 for s in exact["cluster_size"].to_pylist() if s and s > 1),
                  "duplicates_dropped": sum(1 for s, r in zip(status, exact_rep, strict=True)
                                            if s == "ok" and not r)},
        "near": {"method": dcfg.method, "groups": duplicate_groups(near), "rows_in_groups": in_groups,
                 "duplicates_dropped": sum(1 for s, r in zip(status, rep, strict=True)
                                           if s == "ok" and not r),
                 "kept": kept},
        "unclustered": {s: status.count(s) for s in set(status) if s != "ok"},
        "settings": {"executor": cfg.executor, "method": dcfg.method},
        "wall_s": wall,
    }
    c = prompts.counts
    if c["read"] != c["used"] + c["quarantined"] or out.num_rows != c["selected"]:
        rd.write_json("summary.json", summary)
        raise JobError(f"accounting: {c} but {out.num_rows} rows written")
    rd.write_json("summary.json", summary)
    print(f"dedup: {summary['exact']['groups']} exact-duplicate groups, "
          f"{summary['near']['groups']} near-duplicate groups ({dcfg.method}); "
          f"{summary['near']['duplicates_dropped']} duplicates dropped, {kept} kept of "
          f"{t.num_rows} in {wall:.1f}s -> {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary, "table": out}


@hydra.main(version_base="1.3", config_path="../conf", config_name="dedup")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "dedup", ("input",))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
