"""Expansion: new prompts for the target subdomains below the floor.

One round = plan (how many to ask for per subdomain) -> one request per new prompt (few-shot
from same-subdomain prompts already kept, with a country, register and intent varied
deterministically per request) -> parse the reply into a question or a rejection reason. The
pipeline then dedups the new questions, re-classifies them and keeps one only when its target
label passes delta, up to the floor; the remaining shortfall starts the next round.
"""

from __future__ import annotations

import math
import random
from typing import Any

from aligncultura.builder import templates
from aligncultura.builder.calls import stable_seed
from aligncultura.data import taxonomy


def targets(subdomains: list[int] | None) -> list[int]:
    """The target subdomain ids; null = all 41 (None is never a target)."""
    if subdomains is None:
        return [s.id for s in taxonomy.SUBDOMAINS if s.id != taxonomy.NONE_ID]
    out = []
    for value in subdomains:
        if not taxonomy.is_valid_id(int(value)) or int(value) == taxonomy.NONE_ID:
            raise taxonomy.TaxonomyError(
                f"expand.subdomains: {value} is not a subdomain id (0-{taxonomy.NONE_ID - 1})")
        if int(value) not in out:
            out.append(int(value))
    return out


def plan(counts: dict[int, int], target_ids: list[int], floor: int,
         oversample: float) -> dict[int, int]:
    """{subdomain: prompts to request} for every target below the floor."""
    need = {t: floor - counts.get(t, 0) for t in target_ids if counts.get(t, 0) < floor}
    return {t: max(1, math.ceil(n * oversample)) for t, n in need.items()}


def variation(seed: int, target: int, rnd: int, index: int) -> templates.Variation:
    rng = random.Random(f"{seed}:{target}:{rnd}:{index}")
    return templates.Variation(rng.choice(templates.COUNTRIES), rng.choice(templates.REGISTERS), rng.choice(templates.INTENTS))


def prompt_id(target: int, rnd: int, index: int) -> str:
    return f"gen-r{rnd}-s{target:02d}-{index:04d}"


def requests(to_ask: dict[int, int], examples: dict[int, list[tuple[str, str]]], cfg: Any,
             rnd: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(request dicts, {prompt_id: generation metadata}) for one round.

    `examples[t]` = [(prompt id, question), ...] of kept prompts labelled t; request i takes
    `few_shot` of them starting at i, so consecutive requests see different examples.
    """
    reqs, meta = [], {}
    for target in sorted(to_ask):
        pool = examples.get(target, [])
        for i in range(to_ask[target]):
            pid = prompt_id(target, rnd, i)
            shots = [pool[(i + j) % len(pool)] for j in range(min(cfg.few_shot, len(pool)))]
            var = variation(cfg.seed, target, rnd, i)
            meta[pid] = {"target_id": target, "round": rnd, "country": var.country,
                         "register": var.register, "intent": var.intent,
                         "few_shot_ids": [s[0] for s in shots]}
            sampling = {"temperature": float(cfg.temperature), "top_p": float(cfg.top_p),
                        "max_tokens": int(cfg.max_tokens), "seed": stable_seed(cfg.seed, pid)}
            if cfg.structured:
                sampling["structured"] = {"regex": templates.QUESTION_REGEX}
            reqs.append({"request_id": f"{pid}::expand", "row_id": pid, "task": "expand",
                         "messages": templates.expand_messages(target, [s[1] for s in shots], var),
                         "sampling": sampling})
    return reqs, meta


def parse(rows: dict[str, dict[str, Any]], meta: dict[str, dict[str, Any]]
          ) -> list[dict[str, Any]]:
    """One candidate per requested prompt: {prompt_id, question or None, reason, generation}."""
    out = []
    for pid, gen in meta.items():
        row = rows.get(f"{pid}::expand") or {}
        if row.get("status") != "ok":
            question, reason = None, f"generation failed: {(row.get('error') or 'no completion')[:200]}"
        else:
            question, reason = templates.parse_generated_question(row.get("text"), row.get("finish_reason"))
        out.append({"prompt_id": pid, "question": question, "reason": reason, "generation": gen,
                    "raw": row.get("text")})
    return out
