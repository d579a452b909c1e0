"""Row accounting: every seed row and every generated prompt ends in exactly one state.

States: kept | duplicate (of a kept pool row or a reference row) | rejected (with a reason
code) | quarantined (unusable input row). Seed rows outside ``seeds.split``/``seeds.limit`` are
``not_selected``: they never entered the pool. The totals are checked against what was read
and what was requested before anything is reported, and printed as one line per origin.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from aligncultura.builder.schema import STATE_SCHEMA, STATES
from aligncultura.errors import JobError


def reason_code(reason: str | None) -> str:
    """Reasons are "code: detail"; the code is what summaries count."""
    return (reason or "").split(":", 1)[0].strip() or "unknown"


def row_states(pool: list[dict[str, Any]], quarantine: list[dict[str, Any]]) -> pa.Table:
    # a quarantined row may share its id with a used row (duplicate ids): file:line is unique
    rows = [{"row_id": f"{q['row_id']} ({q['file']}:{q['line']})" if q["row_id"]
             else f"{q['file']}:{q['line']}", "origin": "seed",
             "state": "quarantined", "reason": q["reason"], "duplicate_of": None}
            for q in quarantine]
    for p in pool:
        rows.append({"row_id": p["prompt_id"], "origin": p["origin"], "state": p["state"],
                     "reason": p["reason"], "duplicate_of": p.get("duplicate_of")})
    return pa.Table.from_pylist(rows, schema=STATE_SCHEMA)


def tally(states: pa.Table, seeds_read: int, not_selected: int,
          generated_requested: int) -> dict[str, Any]:
    """Counts per origin and state, with reason codes; raises JobError when they do not add up."""
    out: dict[str, Any] = {}
    rows = states.to_pylist()
    for origin, expected in (("seed", seeds_read - not_selected), ("generated", generated_requested)):
        mine = [r for r in rows if r["origin"] == origin]
        bad = sorted({r["state"] for r in mine} - set(STATES))
        if bad:
            raise JobError(f"accounting: {origin} rows in unknown state(s) {bad}")
        counts = {s: sum(r["state"] == s for r in mine) for s in STATES}
        reasons = Counter(f"{r['state']}:{reason_code(r['reason'])}" for r in mine
                          if r["state"] in ("rejected", "quarantined"))
        total = sum(counts.values())
        if total != expected or len({r["row_id"] for r in mine}) != len(mine):
            raise JobError(f"accounting: {origin} states add up to {total} ({counts}), expected "
                           f"{expected}; or a row has two states")
        out[origin] = {"total": total, **counts, "reasons": dict(sorted(reasons.items()))}
    out["seed"]["read"] = seeds_read
    out["seed"]["not_selected"] = not_selected
    out["generated"]["requested"] = generated_requested
    return out


def print_totals(acc: dict[str, Any]) -> None:
    s, g = acc["seed"], acc["generated"]
    line = ", ".join(f"{k} {s[k]}" for k in STATES)
    print(f"seed rows: {s['read']} read = {line}, not_selected {s['not_selected']}", flush=True)
    line = ", ".join(f"{k} {g[k]}" for k in STATES if k != "quarantined")
    print(f"generated prompts: {g['requested']} requested = {line}", flush=True)
