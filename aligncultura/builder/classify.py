"""Reclassification: multi-label subdomains with a probability per label.

Method. For a prompt and a candidate subdomain the classifier is asked a yes/no question
(`templates.classify_messages`) with ``max_tokens=1``, greedy, and ``logprobs=k``: the
label's probability is P(yes) / (P(yes) + P(no)) at the first answer token, summed over the
spellings of each answer among the top-k tokens (`templates.yes_probability`). This is a
probability per label, independent across labels, so a prompt can hold several; labels with
p >= ``classify.delta`` are kept, most probable first, and the first is the primary label. When
none passes, the prompt is labelled None (41). A label whose answer tokens are missing from the
top-k has no probability (status ``no_signal``) and cannot pass.

Candidates and cost (requests per prompt; prompt tokens are mostly a shared prefix):
- ``exhaustive``: all 41 subdomains -> 41 one-token requests. Prompt = fixed system text +
  question + candidate, so the 41 requests share everything but the last ~15 tokens and
  vLLM's prefix cache prefills the question once.
- ``shortlist``: 1 request in which the classifier names up to ``shortlist_size`` ids (a regex
  constrains the answer to a JSON list of valid ids; the 41-name list is a shared system prefix),
  then the yes/no question for those ids plus the row's own input label and, for a generated
  prompt, its target: ~2 + shortlist_size requests. Cheaper by ~10x, at the price of trusting
  the shortlist to contain every true label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aligncultura.builder import templates
from aligncultura.data import taxonomy

ALL_LABELS = tuple(s.id for s in taxonomy.SUBDOMAINS if s.id != taxonomy.NONE_ID)
METHODS = ("exhaustive", "shortlist")

Call = Callable[[str, list[dict[str, Any]], int], dict[str, dict[str, Any]]]


def shortlist_requests(prompts: list[dict[str, Any]], cfg: Any) -> list[dict[str, Any]]:
    k = int(cfg.shortlist_size)
    return [{"request_id": f"{p['prompt_id']}::shortlist", "row_id": p["prompt_id"],
             "task": "shortlist",
             "messages": templates.shortlist_messages(p["question"], k),
             "sampling": {"temperature": 0.0, "max_tokens": int(cfg.max_tokens_shortlist),
                          "seed": 0, "structured": {"regex": templates.shortlist_regex(k)}}}
            for p in prompts]


def verify_requests(prompts: list[dict[str, Any]], candidates: dict[str, list[int]],
                    cfg: Any) -> list[dict[str, Any]]:
    return [{"request_id": f"{p['prompt_id']}::label{label}", "row_id": p["prompt_id"],
             "task": "classify", "criterion": str(label),
             "messages": templates.classify_messages(p["question"], label),
             "sampling": {"temperature": 0.0, "max_tokens": 1, "seed": 0,
                          "logprobs": int(cfg.top_logprobs)}}
            for p in prompts for label in candidates[p["prompt_id"]]]


def candidate_labels(prompt: dict[str, Any], shortlist: list[int] | None) -> list[int]:
    """The ids to verify: all 41, or the shortlist plus the prompt's required ids."""
    if shortlist is None:
        return list(ALL_LABELS)
    out = list(shortlist)
    for label in prompt.get("must") or []:
        if label is not None and label in ALL_LABELS and label not in out:
            out.append(label)
    return out


def assign(scores: list[dict[str, Any]], delta: float) -> tuple[list[dict[str, Any]], int]:
    """(labels with p >= delta, most probable first (ties: smaller id), primary id)."""
    passing = [s for s in scores if s["p"] is not None and s["p"] >= delta]
    passing.sort(key=lambda s: (-s["p"], s["id"]))
    labels = [{"id": s["id"], "name": taxonomy.name_of(s["id"]), "p": s["p"]} for s in passing]
    return labels, labels[0]["id"] if labels else taxonomy.NONE_ID


def classify(prompts: list[dict[str, Any]], call: Call, cfg: Any) -> dict[str, dict[str, Any]]:
    """{prompt_id: {scores, labels, primary_id, error}} for prompts {prompt_id, question, must}.

    `call(stage, requests, n_prompts)` returns completion rows by request id (a `Role`).
    ``error`` is set when no yes/no answer came back at all (the engine failed every request).
    """
    if cfg.method not in METHODS:
        raise ValueError(f"classify.method={cfg.method!r}: use one of {METHODS}")
    if not prompts:
        return {}
    shortlists: dict[str, list[int] | None] = {p["prompt_id"]: None for p in prompts}
    if cfg.method == "shortlist":
        rows = call("classify.shortlist", shortlist_requests(prompts, cfg), len(prompts))
        for p in prompts:
            row = rows.get(f"{p['prompt_id']}::shortlist") or {}
            ok = row.get("status") == "ok"
            shortlists[p["prompt_id"]] = templates.parse_shortlist(row.get("text"), cfg.shortlist_size) \
                if ok else []
    candidates = {p["prompt_id"]: candidate_labels(p, shortlists[p["prompt_id"]]) for p in prompts}
    rows = call("classify.verify", verify_requests(prompts, candidates, cfg), len(prompts))
    out = {}
    for p in prompts:
        pid = p["prompt_id"]
        scores, errors = [], []
        for label in candidates[pid]:
            row = rows.get(f"{pid}::label{label}") or {}
            if row.get("status") != "ok":
                errors.append(row.get("error") or "no completion")
                scores.append({"id": label, "p": None, "status": "failed"})
                continue
            prob, why = templates.yes_probability(row.get("logprobs_json"),
                                                  float(cfg.min_yes_no_mass))
            scores.append({"id": label, "p": prob, "status": "ok" if prob is not None else why})
        labels, primary = assign(scores, float(cfg.delta))
        failed = bool(candidates[pid]) and len(errors) == len(candidates[pid])
        out[pid] = {"scores": scores, "labels": labels, "primary_id": primary,
                    "shortlist": shortlists[pid],
                    "error": f"classification failed: {errors[0][:200]}" if failed else None}
    return out


def label_passes(result: dict[str, Any], label: int) -> bool:
    return any(lab["id"] == label for lab in result["labels"])
