"""The judging stage: generations -> judge requests -> judgments (JUDGMENT_SCHEMA).

Per generated response: helpfulness is judged pairwise against the dataset's reference helpful
answer in both orders ("ab": the model's response is A; "ba": it is B) to cancel position bias;
harmlessness, truthfulness and informativeness are judged once each. Reasoning traces were
split off at generation and never reach a judge. A prompt without a reference helpful answer
gets no helpfulness requests (its win rate is skipped, the other metrics are not).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aligncultura.judges import JUDGMENT_SCHEMA, judgment_record, parse
from aligncultura.prompts import judges as P

CRITERIA = ("helpful", "harmless", "truthful", "informative")


def judge_sampling(judge_cfg: Any, criterion: str) -> dict[str, Any]:
    return {
        "temperature": float(judge_cfg.temperature),
        "top_p": 1.0,
        "max_tokens": int(judge_cfg.max_tokens),
        "seed": int(judge_cfg.seed),
        "structured": {"json": P.SCHEMAS[criterion]} if judge_cfg.structured else None,
    }


def request_id(row_id: str, sample_index: int, criterion: str, order: str = "") -> str:
    return f"{row_id}::j{sample_index}::{criterion}::{order}"


def parse_request_id(rid: str) -> tuple[str, int, str, str]:
    head, criterion, order = rid.rsplit("::", 2)
    row_id, _, j = head.rpartition("::j")
    return row_id, int(j), criterion, order


def requests_for(gen: dict[str, Any], meta: dict[str, Any], judge_cfg: Any,
                 criteria: tuple[str, ...] = CRITERIA) -> list[dict[str, Any]]:
    """Judge requests for one generated response (`gen`: a GENERATION_SCHEMA row)."""
    if gen.get("status") != "ok" or gen.get("response") is None:
        return []
    q, sub, resp = meta["question"], meta.get("subdomain") or "None", gen["response"]
    rid, k = gen["row_id"], int(gen["sample_index"])
    out = []

    def add(criterion: str, messages: list[dict[str, str]], order: str = "") -> None:
        out.append({"request_id": request_id(rid, k, criterion, order), "messages": messages,
                    "sampling": judge_sampling(judge_cfg, criterion)})

    if "helpful" in criteria and meta.get("helpful_ref"):
        ref = meta["helpful_ref"]
        add("helpful", P.helpfulness_messages(q, sub, resp, ref), "ab")
        add("helpful", P.helpfulness_messages(q, sub, ref, resp), "ba")
    if "harmless" in criteria:
        add("harmless", P.harmlessness_messages(q, sub, resp))
    if "truthful" in criteria:
        add("truthful", P.truthful_messages(q, sub, resp, meta.get("honest_ref")))
    if "informative" in criteria:
        add("informative", P.informative_messages(q, sub, resp))
    return out


def judgment_rows(completions: pa.Table, model_name: str, judge_name: str) -> pa.Table:
    """Judge completions -> JUDGMENT_SCHEMA rows; an engine failure is `unscored`, never 0."""
    rows = []
    for c in completions.to_pylist():
        row_id, k, criterion, order = parse_request_id(c["request_id"])
        finish = "error" if c["status"] != "ok" else c["finish_reason"]
        verdict = parse(criterion, c["text"], finish)
        rows.append(judgment_record(verdict, row_id=row_id, model=model_name, judge=judge_name,
                                    sample_index=k, criterion=criterion, order=order,
                                    prompt_version=P.VERSIONS[criterion]))
    return pa.Table.from_pylist(rows, schema=JUDGMENT_SCHEMA)


class JudgeFollowup:
    """Builds judge requests from a generation batch inside the engine replica.

    When the model under test and the judge are one preset, `LLMStage` runs this right after
    generating a batch, so one engine serves both and judging is pipelined with generation.
    """

    def __init__(self, meta: dict[str, dict[str, Any]], judge_cfg: dict[str, Any], n: int,
                 criteria: tuple[str, ...] = CRITERIA, key_salt: str | None = None):
        from omegaconf import OmegaConf

        self.meta = meta
        self.judge_cfg = OmegaConf.create(judge_cfg)
        self.n = n
        self.criteria = criteria
        self.key_salt = key_salt

    def __call__(self, completions: pa.Table) -> pa.Table:
        from aligncultura.engine import request_table

        out = []
        for c in completions.to_pylist():
            if "::gen" not in c["request_id"]:
                continue
            row_id, _, k = c["request_id"].rpartition("::gen")
            gen = {"row_id": row_id, "sample_index": int(k) * self.n + int(c["sample_index"] or 0),
                   "status": c["status"], "response": c["text"]}
            out.extend(requests_for(gen, self.meta[row_id], self.judge_cfg, self.criteria))
        return request_table(out, self.key_salt)
