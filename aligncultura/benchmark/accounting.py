"""Row accounting of a benchmark or generation run: one terminal state per input row."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.errors import JobError
from aligncultura.rundir import RunDir


def write_row_states(rd: RunDir, prompts: Any, gens: pa.Table, judgments: pa.Table | None) -> dict:
    """Give every input row exactly one terminal state with a reason; check they add up.

    ok | unscored (a judge could not score one of its judgments) | failed (generation failed
    after retries) | quarantined (unusable input) | not_selected (outside the split or limit).
    """
    states: list[dict[str, Any]] = []
    for q in prompts.quarantine:
        states.append({"row_id": q["row_id"] or f"{q['file']}:{q['line']}", "state": "quarantined",
                       "reason": q["reason"]})
    selected = set(prompts.table.column("row_id").to_pylist())
    failed: dict[str, str] = {}
    for g in gens.to_pylist():  # a policy refusal is an answer (scored by rule), not a failure
        if g["status"] not in ("ok", "refused"):
            failed[g["row_id"]] = f"{g['status']}: {g['error'] or 'generation failed'}"
    uns: dict[str, set[str]] = {}
    for j in (judgments.to_pylist() if judgments is not None else []):
        if j["status"] != "scored":
            uns.setdefault(j["row_id"], set()).add(f"{j['criterion']}:{j['reason']}")
    for rid in prompts.table.column("row_id").to_pylist():
        if rid in failed:
            states.append({"row_id": rid, "state": "failed", "reason": failed[rid][:300]})
        elif rid in uns:
            states.append({"row_id": rid, "state": "unscored", "reason": ", ".join(sorted(uns[rid]))})
        else:
            states.append({"row_id": rid, "state": "ok", "reason": ""})
    not_selected = prompts.used - len(selected)
    counts: dict[str, int] = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    counts["not_selected"] = not_selected
    total = sum(counts.values())
    rd.write_parquet("row_states.parquet", pa.Table.from_pylist(
        states, schema=pa.schema([("row_id", pa.string()), ("state", pa.string()),
                                  ("reason", pa.string())])))
    line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if total != prompts.read:
        raise JobError(f"accounting: {line} = {total} rows, but {prompts.read} were read")
    print(f"rows: {prompts.read} read = {line}", flush=True)
    return counts
