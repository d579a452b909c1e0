"""Within-set dedup: `python -m jobs.dedup input.path=... run_dir=PATH`.

Reads one input through the data contract (quarantine, split, limit), groups exact duplicates
(identical normalised text) and near-duplicates (`dedup.method`: MinHash LSH verified by exact
Jaccard, or SimHash verified by Hamming distance; union-find; the earliest row represents its
cluster) and writes clusters.parquet (one row per usable row: its own id unchanged, near-dup
cluster id, representative, similarity to it, and the exact-duplicate group), summary.json
(group counts, duplicates dropped, row accounting), quarantine.parquet when rows were set aside.

It streams (aligncultura/leakage/dedup_stream.py): the input is read piece by piece and each
block of rows is reduced to fixed-size fingerprints (in this process, blocks of at most
LOCAL_BLOCK_ROWS, or one Ray task per block of `batch_size` rows with `executor=ray`, spread
over the nodes), spilled to a temporary directory (TMPDIR: the texts as read plus ~8 x bands
+ 60 bytes a row); candidates, the exact verification (the texts of the rows of candidate
pairs read back and shingled) and union-find run here. Memory grows by a few dozen bytes per
row, not with the text; the clusters are the same either way. CSV files are still read
whole by the data contract (aligncultura/data/sources.py); JSON lines and Parquet stream.
"""

from __future__ import annotations

import os

# Before pyarrow loads: Arrow allocates with malloc here, not its default mimalloc pool, which
# keeps pages freed by its reader threads, so RSS crept up over a long stream of pieces while
# the live data stayed flat (on bench/bench_dedup.py's corpora, 10x / 1x peak 1.14 with
# mimalloc, 1.02-1.07 with malloc, same CPU time). `release_memory` (dedup_stream.py) then
# returns what each piece freed. An ARROW_DEFAULT_MEMORY_POOL set by the user wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np

from aligncultura.config import command_line_keys
from aligncultura.data.reader import quarantine_table
from aligncultura.errors import JobError
from aligncultura.jobkit import cli, launch, precheck
from aligncultura.leakage.config import core_config
from aligncultura.leakage.dedup_output import group_counts, write_clusters
from aligncultura.leakage.dedup_stream import (
    LOCAL_BLOCK_ROWS,
    LocalFingerprints,
    Pass1,
    ReadProgress,
    Spill,
    exact_roots,
    minhash_roots,
    release_memory,
    simhash_roots,
    text_sets,
)
from aligncultura.leakage.stream_input import select_rows, split_codes, stream_prompts
from aligncultura.rundir import start_run

CONF = Path(__file__).resolve().parent.parent / "conf"


def _clusters(dcfg: Any, sp: Spill, sel: np.ndarray, every: bool):
    """(status, near roots, similarity, exact roots, candidate pairs) of the selected rows
    (`sel`, positions among the usable rows; `every`: they are all of them)."""
    some = None if every else sel
    status = sp.load("status", some)
    exact = exact_roots(status, sp.load("exact_hi", some),
                        lambda rows: sp.take("exact_lo", sel[rows]))
    if dcfg.method == "simhash":
        near, sim = simhash_roots(status, sp.load("simhash", some), dcfg)
        return status, near, sim, exact, None
    valid = (status == 0) & sp.load("nonempty", some)

    def band(b: int, rows: np.ndarray) -> np.ndarray:
        return sp.load(f"band{b}", sel[rows])

    def sets_of(rows: np.ndarray):
        return text_sets(sp, sel[rows], dcfg)

    near, sim, pairs = minhash_roots(valid, sp.load("set_key", some), band, sets_of, dcfg)
    return status, near, sim, exact, pairs


def run(cfg: Any) -> dict[str, Any]:
    dcfg = core_config(cfg.dedup, "dedup")
    if dcfg.method not in ("minhash", "simhash"):
        raise JobError(f"dedup.method={dcfg.method!r}: use minhash or simhash")
    if cfg.executor not in ("local", "ray"):
        raise JobError(f"executor={cfg.executor!r}: use local or ray")
    if int(cfg.batch_size) < 1:
        raise JobError(f"batch_size={cfg.batch_size}: must be >= 1")
    explicit = command_line_keys()
    t0 = time.perf_counter()
    nodes = None
    if cfg.executor == "ray":
        from aligncultura.leakage.ray import RayFingerprints, TaskNodes

        nodes = TaskNodes()
        fps: Any = RayFingerprints(dcfg, cfg.num_workers, nodes)
    else:
        fps = LocalFingerprints(dcfg)
    with tempfile.TemporaryDirectory(prefix="aligncultura-dedup-") as tmp:
        sp = Spill(Path(tmp))
        try:
            block = int(cfg.batch_size) if cfg.executor == "ray" else \
                min(int(cfg.batch_size), LOCAL_BLOCK_ROWS)
            sink = Pass1(sp, fps, block)
            progress = ReadProgress(enabled=cfg.progress)
            try:
                got = stream_prompts(cfg.input, "input", explicit, sink, Path(tmp), progress)
                sink.finish()
            except BaseException:
                progress.close(final=False)
                raise
            progress.close()
            inp = cfg.input
            splits = split_codes(sp.load("content_hash"), sp.load("class_id"),
                                 sp.load("class_null"), inp.split_fractions, inp.split_seed,
                                 "input")
            sel = select_rows(splits, lambda rows: sp.load_arrow("row_id", rows).to_pylist(),
                              inp.split, inp.limit, inp.split_seed, "input")
            counts = {"read": got.read, "used": got.used, "quarantined": len(got.quarantine),
                      "selected": len(sel), "not_selected": got.used - len(sel)}
            print(f"plan: {len(sel)} rows (read {got.read}, quarantined {len(got.quarantine)}), "
                  f"exact + near-duplicates by {dcfg.method} ({cfg.executor})", flush=True)
            release_memory()
            status, near, sim, exact, _ = _clusters(dcfg, sp, sel, len(sel) == got.used)
            rd = start_run(cfg, "dedup", got.files)
            some = None if len(sel) == got.used else sel
            write_clusters(rd / "clusters.parquet", sp.load_arrow("row_id", some), status, near,
                           sim, exact, sp.load_arrow("subdomain", some), splits[sel])
        finally:
            sp.close()
    if got.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(got.quarantine))
    wall = time.perf_counter() - t0
    groups = group_counts(status, near, exact, dcfg.method)
    summary = {
        "job": "dedup",
        "rows": counts,
        **groups,
        "settings": {"executor": cfg.executor, "method": dcfg.method},
        "wall_s": wall,
    }
    if nodes is not None:  # Ray tasks (one per block of batch_size rows) per node
        summary["ray"] = nodes.report()
        print(nodes.line(), flush=True)
    if counts["read"] != counts["used"] + counts["quarantined"] or len(status) != len(sel):
        rd.write_json("summary.json", summary)
        raise JobError(f"accounting: {counts} but {len(status)} rows written")
    rd.write_json("summary.json", summary)
    near_s = summary["near"]
    print(f"dedup: {summary['exact']['groups']} exact-duplicate groups, "
          f"{near_s['groups']} near-duplicate groups ({dcfg.method}); "
          f"{near_s['duplicates_dropped']} duplicates dropped, {near_s['kept']} kept of "
          f"{len(sel)} in {wall:.1f}s -> {rd.path}", flush=True)
    return {"run_dir": str(rd.path), "summary": summary}


@hydra.main(version_base="1.3", config_path="../conf", config_name="dedup")
def _hydra_main(cfg: Any) -> None:
    cli(run)(cfg)


def main() -> None:
    precheck(CONF, "dedup", ("input",))
    launch(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
