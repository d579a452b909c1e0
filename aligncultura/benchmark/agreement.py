"""Judge reliability: agreement between two judges, position-flip rate of pairwise judging."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from aligncultura.data import taxonomy


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items (None when undefined)."""
    if len(a) != len(b):
        raise ValueError("cohen_kappa: the two label lists differ in length")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else None
    return (po - pe) / (1 - pe)


def _key(r: dict[str, Any]) -> tuple:
    return (r["row_id"], r["sample_index"], r["criterion"], r["order"])


def _rows(t) -> list[dict]:
    return t.to_pylist() if hasattr(t, "to_pylist") else list(t)


def judge_agreement(j1, j2, row_meta: dict[str, int] | None = None) -> dict[str, Any]:
    """Kappa per criterion overall and per UNESCO domain, on judgments both judges scored."""
    one = {_key(r): r for r in _rows(j1) if r["status"] == "scored"}
    two = {_key(r): r for r in _rows(j2) if r["status"] == "scored"}
    pairs: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for k in one.keys() & two.keys():
        domain = taxonomy.domain_of(row_meta[k[0]]) if row_meta and k[0] in row_meta else "?"
        pairs[k[2]].append((one[k]["verdict"], two[k]["verdict"], domain))
    out: dict[str, Any] = {}
    for criterion, items in sorted(pairs.items()):
        by_domain: dict[str, Any] = {}
        for d in sorted({x[2] for x in items}):
            sel = [x for x in items if x[2] == d]
            by_domain[d] = {"kappa": cohen_kappa([x[0] for x in sel], [x[1] for x in sel]),
                            "n": len(sel)}
        out[criterion] = {
            "kappa": cohen_kappa([x[0] for x in items], [x[1] for x in items]),
            "agreement": sum(x[0] == x[1] for x in items) / len(items),
            "n": len(items),
            "by_domain": by_domain,
        }
    return out


def position_flip_rate(judgments) -> dict[str, Any]:
    """Share of pairwise (helpful) judgments whose winner flips with the order of A and B.

    Consistent: the model wins (or loses, or ties) in both orders. A flip: the judge prefers
    the same *position* in both orders, i.e. its verdict follows the position, not the text.
    """
    by = defaultdict(dict)
    for r in _rows(judgments):
        if r["criterion"] == "helpful" and r["status"] == "scored":
            by[(r["row_id"], r["sample_index"])][r["order"]] = r["verdict"]
    both = [v for v in by.values() if "ab" in v and "ba" in v]
    flips = sum(1 for v in both if v["ab"] == v["ba"] and v["ab"] != "tie")
    return {"flip_rate": flips / len(both) if both else None, "pairs": len(both), "flips": flips}


def _chance(a: list[str], b: list[str]) -> tuple[float, float]:
    """(observed agreement, chance agreement from the two raters' marginals)."""
    n = len(a)
    ca, cb = Counter(a), Counter(b)
    return (sum(x == y for x, y in zip(a, b, strict=True)) / n,
            sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n))


def pooled_agreement(j1, j2, row_meta: dict[str, int] | None = None) -> dict[str, Any]:
    """One kappa over all criteria, overall and per UNESCO domain, on judgments both scored.

    Pooled kappa (de Vries et al. 2008): (po - pe) / (1 - pe), with po and pe the observed and
    chance agreement of each criterion averaged with weights n_c (chance agreement is computed
    within a criterion: both judges know which criterion they answer). None when undefined.
    """
    one = {_key(r): r for r in _rows(j1) if r["status"] == "scored"}
    two = {_key(r): r for r in _rows(j2) if r["status"] == "scored"}
    items = []
    for k in sorted(one.keys() & two.keys()):
        domain = taxonomy.domain_of(row_meta[k[0]]) if row_meta and k[0] in row_meta else "?"
        items.append((k[2], one[k]["verdict"], two[k]["verdict"], domain))

    def pooled(sel: list[tuple[str, str, str, str]]) -> dict[str, Any]:
        if not sel:
            return {"kappa": None, "agreement": None, "n": 0}
        po = pe = 0.0
        for c in sorted({x[0] for x in sel}):
            mine = [x for x in sel if x[0] == c]
            o, e = _chance([x[1] for x in mine], [x[2] for x in mine])
            po += o * len(mine) / len(sel)
            pe += e * len(mine) / len(sel)
        kappa = (1.0 if po == 1.0 else None) if pe >= 1.0 else (po - pe) / (1 - pe)
        return {"kappa": kappa, "agreement": po, "n": len(sel)}

    out = pooled(items)
    out["by_domain"] = {d: pooled([x for x in items if x[3] == d])
                        for d in sorted({x[3] for x in items})}
    return out


def determinism_changes(gens, gens_again, judgments, judgments_again) -> dict[str, Any]:
    """What changed when a sample was generated (and judged) again: the share of responses whose
    text differs, and the share of verdicts (status + verdict per criterion and order) that
    differ, overall and among the responses that came out the same (the judge's own noise)."""
    first = {(g["row_id"], g["sample_index"]): g["response"] for g in _rows(gens)
             if g["status"] == "ok"}
    again = {(g["row_id"], g["sample_index"]): g["response"] for g in _rows(gens_again)
             if g["status"] == "ok"}
    both = sorted(first.keys() & again.keys())
    changed = {k for k in both if first[k] != again[k]}

    def verdicts(t) -> dict[tuple, tuple]:
        return {_key(r): (r["status"], r["verdict"]) for r in _rows(t)}

    v1, v2 = verdicts(judgments), verdicts(judgments_again)
    keys = sorted(k for k in v1.keys() & v2.keys() if (k[0], k[1]) in both)
    flips = [k for k in keys if v1[k] != v2[k]]
    same = [k for k in keys if (k[0], k[1]) not in changed]
    same_flips = [k for k in same if v1[k] != v2[k]]
    return {
        "responses": len(both),
        "responses_changed": len(changed),
        "responses_changed_share": len(changed) / len(both) if both else None,
        "verdicts": len(keys),
        "verdicts_changed": len(flips),
        "verdicts_changed_share": len(flips) / len(keys) if keys else None,
        "verdicts_same_response": len(same),
        "verdicts_changed_same_response": len(same_flips),
    }
