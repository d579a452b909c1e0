"""Near-duplicate removal with the leakage engine's 64-bit SimHash (Hamming <= max_distance).

Fingerprints, candidate pairs and the reference scan all come from `aligncultura.leakage`
(char 4-gram SimHash, permuted-block candidates verified exactly); this module only decides
who is dropped. Within the pool the rule is greedy in pool order: a row is a duplicate when it
lies within the radius of a row already kept, and it points to the nearest such row (ties: the
earlier one). So no two kept rows are within the radius and every dropped row names a kept row
it actually duplicates. (Union-find clusters would also drop rows that are only chained to a
kept row through another dropped row, farther than the radius from every kept row.) Rows
already in the pool always stay; new rows (a round of generated prompts) are checked against
them and against each other. Reference corpora (`dedup.references`, data-contract inputs) are
scanned batch by batch against the new rows with the leakage engine's eval-vs-reference scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from aligncultura.data.reader import read_input
from aligncultura.leakage import LeakageConfig, SimHashConfig, build_index, scan_batches
from aligncultura.leakage.normalization import NormalizeConfig
from aligncultura.leakage.shingles import TextBatch, shingles
from aligncultura.leakage.simhash import near_pairs, simhash


def simhash_config(max_distance: int) -> SimHashConfig:
    return SimHashConfig(max_distance=max_distance, num_blocks=max(12, max_distance + 2))


def fingerprints(texts: list[str], max_distance: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 SimHash per text, mask of texts that have any content after normalisation)."""
    tb = TextBatch(pa.array(texts, pa.string()), NormalizeConfig())
    return simhash(shingles(tb, simhash_config(max_distance).shingles)), tb.ok


def greedy_duplicates(fps: np.ndarray, ok: np.ndarray, n_fixed: int,
                      max_distance: int) -> list[tuple[int, int] | None]:
    """For rows n_fixed.. of `fps`: None (kept) or (index of the kept row it duplicates, distance).

    Rows 0..n_fixed-1 are the pool, always kept; rows after it are decided in order.
    """
    n = len(fps)
    rows = np.flatnonzero(ok)
    best: dict[int, list[tuple[int, int]]] = {}
    if len(rows) > 1:
        cfg = simhash_config(max_distance)
        i, j, d = near_pairs(fps[rows], cfg.max_distance, cfg.num_blocks)
        for a, b, dist in zip(rows[i].tolist(), rows[j].tolist(), d.tolist(), strict=True):
            if b >= n_fixed:  # i < j always: the later row is the one that may be dropped
                best.setdefault(b, []).append((dist, a))
    kept = np.zeros(n, dtype=bool)
    kept[:n_fixed] = True
    out: list[tuple[int, int] | None] = []
    for row in range(n_fixed, n):
        near = sorted(c for c in best.get(row, []) if kept[c[1]])
        if near:
            out.append((near[0][1], near[0][0]))
        else:
            kept[row] = True
            out.append(None)
    return out


@dataclass
class ReferenceMatch:
    corpus: str
    ref_id: str
    hamming: int


class References:
    """The reference corpora, read once through the data contract; quarantined rows are
    counted and skipped."""

    def __init__(self, cfgs: list[Any], max_distance: int = 10):
        self.max_distance = max_distance
        self.corpora: list[tuple[str, pa.Table]] = []
        self.stats: dict[str, dict[str, int]] = {}
        self.files: list[str] = []
        for cfg in cfgs:
            read = read_input(cfg, "dedup.references")
            self.corpora.append((cfg.name, read.table.select(["question", "row_id"])))
            self.stats[cfg.name] = {"read": read.read, "used": read.used,
                                    "quarantined": len(read.quarantine)}
            self.files += read.files

    def match(self, texts: list[str]) -> list[ReferenceMatch | None]:
        """The nearest reference row within the radius for each text (ties: first corpus)."""
        out: list[ReferenceMatch | None] = [None] * len(texts)
        if not texts or not self.corpora:
            return out
        cfg = LeakageConfig(methods=["simhash"], flag_methods=["simhash"],
                            simhash=simhash_config(self.max_distance),
                            text_column="question", id_column="row_id")
        index = build_index(pa.array(texts, pa.string()), None, cfg)
        for name, table in self.corpora:
            result = scan_batches(index, table.to_batches(max_chunksize=cfg.batch_size))
            refs = result.column("simhash_ref_id").to_pylist()
            dists = result.column("simhash_hamming").to_pylist()
            for k, (ref, dist) in enumerate(zip(refs, dists, strict=True)):
                if ref is not None and (out[k] is None or dist < out[k].hamming):
                    out[k] = ReferenceMatch(name, ref, int(dist))
        return out
