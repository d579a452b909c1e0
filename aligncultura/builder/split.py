"""The 80/10/10 split (stratified by primary subdomain, seeded) and cross-split leakage.

The split is the data layer's `assign_splits` (the same rule every job uses): strata are
primary labels, exact duplicates stay together, a stratum of fewer than 5 distinct questions
goes wholly to train. Leakage is the share of val/test rows with a train row within the SimHash
radius (the leakage engine's eval-vs-reference scan, train as the reference), with a 95% Wilson
interval. After dedup that is 0 by construction at the same radius, so `pair_leakage` adds a
check that can fail: every pair of splits (train-val, train-test, val-test) scanned with SimHash
*and* MinHash (Jaccard over word shingles, which dedup did not use), before and after dedup and
the grouping that keeps duplicates in one split, and each split against the reference corpora.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.builder.dedup import simhash_config
from aligncultura.data.split import assign_splits
from aligncultura.leakage import LeakageConfig, build_index, scan_batches
from aligncultura.stats import wilson_ci

SPLITS = ("train", "val", "test")


def split(hashes: list[str], primary: list[int], fractions: list[float], seed: int) -> list[str]:
    table = pa.table({"content_hash": pa.array(hashes, pa.string()),
                      "class_id": pa.array(primary, pa.int32()),
                      "split": pa.nulls(len(hashes), pa.string())})
    return assign_splits(table, tuple(fractions), seed).column("split").to_pylist()


def proportions(primary: list[int], splits: list[str], fractions: list[float]) -> dict[str, Any]:
    """Per stratum: counts per split, and whether each is within one row of n * fraction
    (checked for strata of 5+ rows; smaller ones go wholly to train by design)."""
    strata: dict[int, dict[str, int]] = {}
    for label, s in zip(primary, splits, strict=True):
        strata.setdefault(label, {k: 0 for k in SPLITS})[s] += 1
    out, bad = {}, []
    for label, counts in sorted(strata.items()):
        n = sum(counts.values())
        checked = n >= 5
        within = all(abs(counts[s] - n * f) <= 1 for s, f in zip(SPLITS, fractions, strict=True))
        if checked and not within:
            bad.append(label)
        out[str(label)] = {**counts, "n": n, "checked": checked, "within_one_row": within}
    return {"strata": out, "off_target_strata": bad}


def leakage(texts: list[str], ids: list[str], splits: list[str], max_distance: int,
            target: float) -> dict[str, Any]:
    """Share of val/test rows with a train near-duplicate (Hamming <= max_distance)."""
    ev = [i for i, s in enumerate(splits) if s != "train"]
    tr = [i for i, s in enumerate(splits) if s == "train"]
    pairs: list[dict[str, Any]] = []
    if ev and tr:
        cfg = LeakageConfig(methods=["simhash"], flag_methods=["simhash"],
                            simhash=simhash_config(max_distance))
        index = build_index(pa.array([texts[i] for i in ev], pa.string()), [ids[i] for i in ev], cfg)
        ref = pa.table({"text": [texts[i] for i in tr], "id": [ids[i] for i in tr]})
        result = scan_batches(index, ref.to_batches(max_chunksize=cfg.batch_size))
        for eid, rid, dist in zip(result.column("eval_id").to_pylist(),
                                  result.column("simhash_ref_id").to_pylist(),
                                  result.column("simhash_hamming").to_pylist(), strict=True):
            if rid is not None:
                pairs.append({"id": eid, "train_id": rid, "hamming": int(dist)})
    k, n = len(pairs), len(ev)
    lo, hi = wilson_ci(k, n) if n else (None, None)
    rate = k / n if n else None
    return {"method": f"simhash 64-bit, Hamming <= {max_distance}", "flagged": k, "n": n,
            "rate": rate, "ci95": [lo, hi], "target": target,
            "meets_target": rate is not None and rate <= target,  # point estimate
            "ci_within_target": hi is not None and hi <= target,  # enough rows to show it
            "pairs": pairs[:50]}


PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))


def _near_duplicates(eval_texts: list[str], ref_texts: list[str], max_distance: int
                     ) -> tuple[int, dict[str, int]]:
    """How many eval texts have a near-duplicate among ref_texts (SimHash within the radius or
    MinHash at the leakage engine's Jaccard threshold), and how many per method."""
    if not eval_texts or not ref_texts:
        return 0, {"simhash": 0, "minhash": 0}
    cfg = LeakageConfig(methods=["simhash", "minhash"], flag_methods=["simhash", "minhash"],
                        simhash=simhash_config(max_distance))
    index = build_index(pa.array(eval_texts, pa.string()), None, cfg)
    ref = pa.table({"text": ref_texts, "id": [str(i) for i in range(len(ref_texts))]})
    result = scan_batches(index, ref.to_batches(max_chunksize=cfg.batch_size))
    by = {m: sum(x is not None for x in result.column(f"{m}_ref_id").to_pylist())
          for m in ("simhash", "minhash")}
    return int(sum(result.column("flagged").to_pylist())), by


def _rate(k: int, n: int, target: float, by_method: dict[str, int]) -> dict[str, Any]:
    lo, hi = wilson_ci(k, n) if n else (None, None)
    rate = k / n if n else None
    return {"flagged": k, "n": n, "rate": rate, "ci95": [lo, hi], "by_method": by_method,
            "meets_target": rate is not None and rate <= target}


def pairs_report(texts: list[str], splits: list[str], max_distance: int,
                 target: float) -> dict[str, dict[str, Any]]:
    """Per pair of splits (a, b): the share of b's rows with a near-duplicate in a."""
    out = {}
    for a, b in PAIRS:
        ev = [t for t, s in zip(texts, splits, strict=True) if s == b]
        k, by = _near_duplicates(ev, [t for t, s in zip(texts, splits, strict=True) if s == a],
                                 max_distance)
        out[f"{a}-{b}"] = _rate(k, len(ev), target, by)
    return out


def pair_leakage(kept: list[tuple[str, str, int]], splits: list[str],
                 dropped: list[tuple[str, str, int]], references: list[tuple[str, list[str]]],
                 max_distance: int, fractions: list[float], seed: int,
                 target: float) -> dict[str, Any]:
    """Stage I leakage that can fail. `kept`: the dataset's (text, content hash, primary id)
    with their `splits`; `dropped`: the rows dedup removed as near-duplicates; `references`:
    (corpus name, texts). Before: the kept and dropped rows split row by row (no dedup, no
    grouping of duplicates), the same fractions and seed. After: the dataset as built."""
    rows = kept + dropped
    ungrouped = split([f"row{i}" for i in range(len(rows))], [r[2] for r in rows], fractions, seed)
    texts = [r[0] for r in kept]
    return {
        "method": f"simhash 64-bit Hamming <= {max_distance} or minhash Jaccard (word shingles)",
        "target": target,
        "after": pairs_report(texts, splits, max_distance, target),
        "before": pairs_report([r[0] for r in rows], ungrouped, max_distance, target),
        "references": {name: _against(texts, splits, ref, max_distance, target)
                       for name, ref in references},
    }


def _against(texts: list[str], splits: list[str], ref: list[str], max_distance: int,
             target: float) -> dict[str, dict[str, Any]]:
    """Per split: the share of its rows with a near-duplicate in one reference corpus."""
    out = {}
    for name in SPLITS:
        mine = [t for t, s in zip(texts, splits, strict=True) if s == name]
        k, by = _near_duplicates(mine, ref, max_distance)
        out[name] = _rate(k, len(mine), target, by)
    return out
