"""Model roles bound to the runner, and per-stage throughput statistics.

A `Role` sends request dicts (``request_id``, ``row_id``, ``task``, ``messages``, ``sampling``)
through `engine.runner.run_requests` with its model's row cache and returns the completion rows by request id.
Every call is recorded under a stage name in `StageStats`: prompts, requests, cached and
computed requests, tokens, wall time, the engine start paid in that stage, and throughput
(prompts/s, requests/s, tokens/s) over the wall time minus that engine start.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from aligncultura.engine.runner import run_requests


def stable_seed(*parts: Any) -> int:
    """A sampling seed derived from the request's identity: reruns draw the same samples."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class StageStats:
    """Accumulates per-stage counters; `to_dict` adds the throughput figures."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._starts_seen: set[tuple[str, float]] = set()
        self._nodes: dict[str, dict[str, int]] = {}  # stage -> engine node -> rows computed

    def _entry(self, stage: str) -> dict[str, float]:
        return self.stages.setdefault(stage, {
            "calls": 0, "prompts": 0, "requests": 0, "cached": 0, "computed": 0, "failed": 0,
            "input_tokens": 0, "output_tokens": 0, "wall_s": 0.0, "engine_start_s": 0.0})

    def record_engine(self, stage: str, model: str, prompts: int, comps: pa.Table,
                      wall: float) -> None:
        e = self._entry(stage)
        rows = comps.to_pylist()
        live = [r for r in rows if not r.get("cached")]
        ok = [r for r in live if r.get("status") == "ok"]
        # an engine start is paid once per engine: the local executor keeps its engine for
        # the job (same start time on every later row), a Ray actor pool starts a new one
        starts = {(model, r["engine_start_s"]) for r in live if r.get("engine_start_s")}
        new = starts - self._starts_seen
        self._starts_seen |= new
        e["calls"] += 1
        e["prompts"] += prompts
        e["requests"] += len(rows)
        e["cached"] += len(rows) - len(live)
        e["computed"] += len(live)
        e["failed"] += sum(r.get("status") != "ok" for r in rows)
        e["input_tokens"] += sum(r.get("input_tokens") or 0 for r in ok)
        e["output_tokens"] += sum(r.get("output_tokens") or 0 for r in ok)
        e["wall_s"] += wall
        e["engine_start_s"] += max((s for _, s in new), default=0.0)
        nodes = self._nodes.setdefault(stage, {})
        for r in live:
            if r.get("replica"):
                node = str(r["replica"]).rsplit("/", 1)[0]
                nodes[node] = nodes.get(node, 0) + 1

    def record_cpu(self, stage: str, prompts: int, wall: float) -> None:
        """A stage without a model (dedup, split, leakage)."""
        e = self._entry(stage)
        e["calls"] += 1
        e["prompts"] += prompts
        e["wall_s"] += wall

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for stage, e in self.stages.items():
            steady = max(e["wall_s"] - e["engine_start_s"], 1e-9)
            d: dict[str, Any] = {k: (int(v) if isinstance(v, int) else round(v, 3))
                                 for k, v in e.items()}
            d["steady_s"] = round(steady, 3)
            d["prompts_s"] = e["prompts"] / steady if e["prompts"] else None
            d["requests_s"] = e["computed"] / steady if e["computed"] else None
            d["output_tok_s"] = e["output_tokens"] / steady if e["computed"] else None
            d["input_tok_s"] = e["input_tokens"] / steady if e["computed"] else None
            if self._nodes.get(stage):
                d["rows_by_node"] = dict(sorted(self._nodes[stage].items()))
            out[stage] = d
        return out


class Role:
    """One model role (classifier, generator or critic) bound to the runner and its cache."""

    def __init__(self, role: str, model: Any, model_cfg: Any, engine_cfg: Any, cache: Any,
                 stats: StageStats, progress: bool = True):
        self.role, self.model, self.model_cfg, self.engine_cfg = role, model, model_cfg, engine_cfg
        self.cache, self.stats, self.progress = cache, stats, progress

    @property
    def name(self) -> str:
        return self.model.name

    def __call__(self, stage: str, requests: list[dict[str, Any]],
                 prompts: int | None = None) -> dict[str, dict[str, Any]]:
        """Complete `requests`; returns {request_id: completion row} (first sample)."""
        if not requests:
            return {}
        budget = int(self.model_cfg.reasoning_max_tokens or 0) if self.model_cfg.reasoning else 0
        if budget:  # a reasoning model's <think> trace gets its own token budget
            requests = [{**r, "sampling": {**r["sampling"],
                                           "max_tokens": r["sampling"]["max_tokens"] + budget}}
                        for r in requests]
        done = run_requests(requests, self.model, self.model_cfg, self.engine_cfg,
                            label=f"{stage} ({self.model.name})", cache=self.cache,
                            progress=self.progress)
        if done.error:  # no engine could serve every row: stop here, the rest is cached
            from aligncultura.errors import JobError

            raise JobError(f"{stage}: {done.error}; rerun the same command once the cluster "
                           "can place a replica (finished rows are cached)")
        comps = done.completions
        self.stats.record_engine(stage, self.model.name,
                                 len(requests) if prompts is None else prompts, comps, done.wall_s)
        out: dict[str, dict[str, Any]] = {}
        for row in comps.to_pylist():
            if (row.get("output_index") or 0) == 0:
                out.setdefault(row["request_id"], row)
        return out
