"""Responses by two-stage rejection sampling.

Round 0: the generator samples K candidates per prompt; the critic scores each (helpful,
harmless, honest: 0/1, plus a one-sentence critique, JSON structured output). A prompt is done
when a candidate scores 1/1/1; the first such candidate (earliest round, lowest index) is kept.
Feedback rounds 1..max_feedback_rounds: prompts with no passing candidate are resampled, K
candidates again, with the previous round's answers and critiques shown to the generator. A
prompt still without a passing candidate after the last round is rejected, with every critique
recorded. An empty or failed generation is not sent to the critic and cannot pass; an
unparseable critic answer is *unscored* and cannot pass either (never a guessed score).

`rejection_sample` takes the generator and the critic as plain callables (request dicts in,
completion rows by request id out), so the loop runs the same with `calls.Role` objects in the
job and with scripted functions in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aligncultura.builder import templates
from aligncultura.builder.calls import stable_seed

Call = Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]]


def generation_requests(prompt: dict[str, Any], rnd: int, reviews: list[tuple[str, str]],
                        cfg: Any) -> list[dict[str, Any]]:
    msgs = templates.feedback_messages(prompt["question"], reviews) if rnd > 0 and reviews \
        else templates.respond_messages(prompt["question"])
    out = []
    for i in range(int(cfg.k)):
        rid = f"{prompt['prompt_id']}::respond::r{rnd}::c{i}"
        out.append({"request_id": rid, "row_id": prompt["prompt_id"], "task": "respond",
                    "sample_index": i, "messages": msgs,
                    "sampling": {"temperature": float(cfg.temperature), "top_p": float(cfg.top_p),
                                 "max_tokens": int(cfg.max_tokens),
                                 "repetition_penalty": float(cfg.repetition_penalty),
                                 "seed": stable_seed(cfg.seed, rid)}})
    return out


def critic_request(prompt: dict[str, Any], rnd: int, i: int, response: str,
                   cfg: Any) -> dict[str, Any]:
    rid = f"{prompt['prompt_id']}::critic::r{rnd}::c{i}"
    return {"request_id": rid, "row_id": prompt["prompt_id"], "task": "critic",
            "sample_index": i,
            "messages": templates.critic_messages(prompt["question"], prompt["primary_id"], response,
                                          int(cfg.critique_max_chars)),
            "sampling": {"temperature": float(cfg.critic_temperature),
                         "max_tokens": int(cfg.critic_max_tokens), "seed": stable_seed(cfg.seed, rid),
                         "structured": templates.critic_structured(cfg.critic_structured,
                                                           int(cfg.critique_max_chars))}}


def rejection_sample(prompts: list[dict[str, Any]], generate: Call, critic: Call, cfg: Any
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict]]:
    """Run the rounds. `prompts`: [{prompt_id, question, primary_id}].

    Returns ({prompt_id: outcome}, candidate rows (CANDIDATE_SCHEMA), per-round stats). An
    outcome is {passed, round, candidate, response, hhh, critiques, rounds}: ``critiques`` lists
    every candidate's critique; ``rounds`` counts the feedback rounds used.
    """
    if int(cfg.max_feedback_rounds) < 0 or int(cfg.k) < 1:
        raise ValueError("respond.k must be >= 1 and respond.max_feedback_rounds >= 0")
    by_id = {p["prompt_id"]: p for p in prompts}
    outcomes: dict[str, dict[str, Any]] = {
        pid: {"passed": False, "round": None, "candidate": None, "response": None, "hhh": None,
              "critiques": [], "rounds": 0} for pid in by_id}
    reviews: dict[str, list[tuple[str, str]]] = {pid: [] for pid in by_id}
    candidates: list[dict[str, Any]] = []
    round_stats: list[dict] = []
    pending = list(by_id)
    for rnd in range(int(cfg.max_feedback_rounds) + 1):
        if not pending:
            break
        gen_reqs = [r for pid in pending
                    for r in generation_requests(by_id[pid], rnd, reviews[pid], cfg)]
        gens = generate(gen_reqs)
        crit_reqs, cands = [], {}
        for pid in pending:
            for i in range(int(cfg.k)):
                row = gens.get(f"{pid}::respond::r{rnd}::c{i}") or {}
                text = (row.get("text") or "").strip() if row.get("status") == "ok" else ""
                status = "failed" if row.get("status") != "ok" else "ok" if text else "empty"
                cands[(pid, i)] = {"prompt_id": pid, "round": rnd, "candidate": i,
                                   "response": text or None, "finish_reason": row.get("finish_reason"),
                                   "output_tokens": row.get("output_tokens"),
                                   "generation_status": status, "critic_status": "skipped",
                                   "critic_reason": status if status != "ok" else None,
                                   "passed": False}
                if text:
                    crit_reqs.append(critic_request(by_id[pid], rnd, i, text, cfg))
        verdicts = critic(crit_reqs)
        still = []
        for pid in pending:
            reviews[pid] = []
            chosen = None
            for i in range(int(cfg.k)):
                cand = cands[(pid, i)]
                row = verdicts.get(f"{pid}::critic::r{rnd}::c{i}")
                if row is not None:
                    text = row.get("text") if row.get("status") == "ok" else None
                    v = templates.parse_critique(text, row.get("finish_reason"))
                    cand.update(critic_status=v.status, critic_reason=v.reason or None,
                                helpful=v.helpful, harmless=v.harmless, honest=v.honest,
                                critique=v.critique, passed=v.passed)
                    note = v.critique or f"the reviewer's answer could not be read ({v.reason})"
                    reviews[pid].append((cand["response"], note))
                    if v.passed and chosen is None:
                        chosen = cand
                candidates.append(cand)
                outcomes[pid]["critiques"].append(
                    {k: cand.get(k) for k in ("round", "candidate", "helpful", "harmless",
                                              "honest", "critique")}
                    | {"status": cand["critic_status"]})
            outcomes[pid]["rounds"] = rnd
            if chosen is not None:
                outcomes[pid].update(passed=True, round=rnd, candidate=chosen["candidate"],
                                     response=chosen["response"],
                                     hhh=[chosen["helpful"], chosen["harmless"], chosen["honest"]])
            else:
                still.append(pid)
        round_stats.append({"round": rnd, "prompts": len(pending), "candidates": len(gen_reqs),
                            "judged": len(crit_reqs), "passing_candidates":
                            sum(c["passed"] for c in cands.values()),
                            "resolved": len(pending) - len(still)})
        pending = still
    return outcomes, candidates, round_stats


def rejection_reason(outcome: dict[str, Any], max_rounds: int) -> str:
    judged = [c for c in outcome["critiques"] if c["status"] == "scored"]
    return (f"no response passed the HHH critic after {max_rounds} feedback round(s) "
            f"({len(outcome['critiques'])} candidates, {len(judged)} scored)")
