"""Stage I end to end: `build(cfg)` reads top to bottom, one step per module.

    seeds -> dedup (pool + references) -> reclassify -> expand rounds (generate -> dedup ->
    reclassify -> keep if the target passes) -> respond (rejection sampling) -> split + leakage
    -> dataset, pool audit, row states, summary.json, dataset card, W&B

Every model call goes through `calls.Role` (runner + row cache): a rerun of the same command
recomputes nothing that finished, and starts no engine when everything is cached.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from aligncultura.builder import classify, dedup, expand, respond, split
from aligncultura.builder.calls import Role, StageStats
from aligncultura.builder.output import write_outputs
from aligncultura.config import command_line_keys
from aligncultura.data import taxonomy
from aligncultura.data.reader import content_hash, load_prompts, quarantine_table
from aligncultura.engine.cache import row_cache
from aligncultura.engine.models import resolve_model
from aligncultura.engine.runner import same_engine
from aligncultura.errors import JobError
from aligncultura.rundir import guard_signals, start_run

ROLES = ("classifier", "generator", "critic")


def validate(cfg: Any) -> list[int]:
    """Static checks of the step settings (one-line errors naming the key); the target ids."""
    if not 0.0 < float(cfg.classify.delta) <= 1.0:
        raise JobError(f"classify.delta={cfg.classify.delta}: must be in (0, 1]")
    if cfg.classify.method not in classify.METHODS:
        raise JobError(f"classify.method={cfg.classify.method}: use {' or '.join(classify.METHODS)}")
    if not 0.0 <= float(cfg.classify.min_yes_no_mass) <= 1.0:
        raise JobError(f"classify.min_yes_no_mass={cfg.classify.min_yes_no_mass}: must be in "
                       "[0, 1]")
    if not 1 <= int(cfg.classify.top_logprobs) <= 20:
        raise JobError("classify.top_logprobs must be in 1..20 (vLLM's max_logprobs)")
    if int(cfg.expand.min_per_subdomain) < 0 or int(cfg.expand.max_rounds) < 0:
        raise JobError("expand.min_per_subdomain and expand.max_rounds must be >= 0")
    if float(cfg.expand.oversample) < 1.0:
        raise JobError(f"expand.oversample={cfg.expand.oversample}: must be >= 1")
    if int(cfg.respond.k) < 1 or int(cfg.respond.max_feedback_rounds) < 0:
        raise JobError("respond.k must be >= 1 and respond.max_feedback_rounds >= 0")
    fr = list(cfg.split.fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise JobError(f"split.fractions={fr}: give 3 values >= 0 (train, val, test) summing to 1")
    if not 0 <= int(cfg.dedup.max_distance) < 64:
        raise JobError(f"dedup.max_distance={cfg.dedup.max_distance}: must be in 0..63")
    return expand.targets(None if cfg.expand.subdomains is None else list(cfg.expand.subdomains))


def _prompts_in(requests: list[dict]) -> int:
    """Distinct prompts in a batch of requests."""
    return len({r["row_id"] for r in requests})


def _record(pid: str, origin: str, question: str | None, **extra: Any) -> dict[str, Any]:
    return {"prompt_id": pid, "origin": origin, "question": question,
            "content_hash": content_hash(question) if question else None, "simhash": None,
            "seed_class_id": None, "generation": None, "scores": None, "labels": None,
            "primary_id": None, "state": None, "reason": None, "duplicate_of": None,
            "duplicate_in": None, "duplicate_hamming": None, **extra}


def _dedup(new: list[dict], alive: list[dict], refs: dedup.References, d: int) -> None:
    """Fingerprint `new` records and mark those that duplicate a reference row, a live pool
    row or an earlier new row (greedy, see dedup.py)."""
    fps, ok = dedup.fingerprints([r["question"] for r in new], d)
    fresh = []
    for k, (rec, m) in enumerate(zip(new, refs.match([r["question"] for r in new]), strict=True)):
        rec["simhash"], rec["_dedupable"] = int(fps[k]), bool(ok[k])
        if m is not None:
            rec.update(state="duplicate", reason=f"near_duplicate: of reference row {m.ref_id}",
                       duplicate_of=m.ref_id, duplicate_in=m.corpus, duplicate_hamming=m.hamming)
        else:
            fresh.append(rec)
    rows = alive + fresh
    all_fps = np.array([r["simhash"] for r in rows], dtype=np.uint64)
    all_ok = np.array([r["_dedupable"] for r in rows], dtype=bool)
    for rec, found in zip(fresh, dedup.greedy_duplicates(all_fps, all_ok, len(alive), d), strict=True):
        if found is not None:
            of = rows[found[0]]["prompt_id"]
            rec.update(state="duplicate", reason=f"near_duplicate: of pool row {of}",
                       duplicate_of=of, duplicate_in="pool", duplicate_hamming=found[1])


def _label_before_dedup(rec: dict) -> int:
    """The stratum of a row dedup removed (it was never classified): its seed label or its
    expansion target."""
    label = rec.get("seed_class_id") if rec["origin"] == "seed" else \
        (rec.get("generation") or {}).get("target_id")
    return taxonomy.NONE_ID if label is None else int(label)


def _classify(recs: list[dict], role: Role, cfg: Any, must: str) -> None:
    prompts = [{"prompt_id": r["prompt_id"], "question": r["question"],
                "must": [r["seed_class_id"] if must == "seed" else r["generation"]["target_id"]]}
               for r in recs]
    results = classify.classify(prompts, lambda st, q, n: role(st, q, n), cfg.classify)
    for rec in recs:
        res = results[rec["prompt_id"]]
        rec.update(scores=res["scores"], labels=res["labels"], primary_id=res["primary_id"])
        if res["error"]:
            rec.update(state="rejected", reason=f"classification_failed: {res['error']}")


def _examples(alive: list[dict], target: int) -> list[tuple[str, str]]:
    first = [r for r in alive if r["primary_id"] == target]
    more = [r for r in alive if r not in first and (classify.label_passes(r, target)
                                                    or r["seed_class_id"] == target)]
    return [(r["prompt_id"], r["question"]) for r in first + more]


def _expand(cfg: Any, pool: list[dict], targets: list[int], gen: Role, cls: Role,
            refs: dedup.References, stats: StageStats) -> tuple[int, list[dict]]:
    floor, d = int(cfg.expand.min_per_subdomain), int(cfg.dedup.max_distance)
    requested, rounds = 0, []
    for rnd in range(int(cfg.expand.max_rounds)):
        alive = [r for r in pool if r["state"] is None]
        counts = Counter(r["primary_id"] for r in alive)
        to_ask = expand.plan(counts, targets, floor, float(cfg.expand.oversample))
        if not to_ask:
            break
        reqs, meta = expand.requests(to_ask, {t: _examples(alive, t) for t in to_ask}, cfg.expand, rnd)
        requested += len(reqs)
        new = []
        for c in expand.parse(gen("expand.generate", reqs), meta):
            rec = _record(c["prompt_id"], "generated", c["question"], generation=c["generation"],
                          raw_generation=c["raw"])
            if c["question"] is None:
                rec.update(state="rejected", reason=f"{c['reason']}: unusable generation")
            pool.append(rec)
            new.append(rec)
        t0 = time.perf_counter()
        _dedup([r for r in new if r["state"] is None], alive, refs, d)
        stats.record_cpu("dedup", len(new), time.perf_counter() - t0)
        _classify([r for r in new if r["state"] is None], cls, cfg, "generated")
        for rec in new:
            if rec["state"] is not None:
                continue
            target = rec["generation"]["target_id"]
            p = next((s["p"] for s in rec["scores"] if s["id"] == target), None)
            if not classify.label_passes(rec, target):
                shown = "none" if p is None else f"{p:.3f}"
                rec.update(state="rejected", reason=f"off_target: p({target})={shown} < "
                           f"classify.delta={cfg.classify.delta}")
            elif rec["primary_id"] != target:  # the classifier's own label stands: a prompt
                # that is more about another subdomain does not count toward the target's floor
                top = rec["labels"][0]["p"]
                rec.update(state="rejected", reason=f"off_target: primary label "
                           f"{rec['primary_id']} (p={top:.3f}) is not the target {target} "
                           f"(p={p:.3f})")
            elif counts[target] >= floor:
                rec.update(state="rejected", reason=f"surplus: subdomain {target} reached the "
                           f"floor {floor}")
            else:
                counts[target] += 1
        rounds.append({"round": rnd, "requested": len(reqs), "asked": dict(sorted(to_ask.items())),
                       **Counter(r["state"] or "kept" for r in new)})
    return requested, rounds


def build(cfg: Any) -> dict[str, Any]:
    t_job = time.perf_counter()
    targets = validate(cfg)
    seeds = load_prompts(cfg.seeds, "seeds", command_line_keys())
    d = int(cfg.dedup.max_distance)
    refs = dedup.References(list(cfg.dedup.references), d)
    models = {r: resolve_model(cfg.roles[r], key=f"roles.{r}",
                               provision=not cfg.dry_run) for r in ROLES}
    if cfg.roles.classifier.reasoning:
        raise JobError("roles.classifier is a reasoning model: its first token must be the "
                       "answer; set roles.classifier.reasoning=false and turn thinking off "
                       "(roles.classifier.chat_template_kwargs.enable_thinking=false)")
    shared = same_engine((models["generator"], cfg.roles.generator),
                         (models["critic"], cfg.roles.critic), cfg.engine)
    print(f"plan: {seeds.table.num_rows} seed prompts (read {seeds.read}, quarantined "
          f"{len(seeds.quarantine)}); floor {cfg.expand.min_per_subdomain} over {len(targets)} "
          f"target subdomain(s); classify {cfg.classify.method} (delta {cfg.classify.delta}); "
          f"K={cfg.respond.k}, <= {cfg.respond.max_feedback_rounds} feedback rounds, max_tokens "
          f"{cfg.respond.max_tokens}; roles: " + ", ".join(f"{r} {models[r].name}" for r in ROLES)
          + f"; engine {cfg.engine.name} ({cfg.engine.executor})", flush=True)
    if shared:
        print(f"warning: generator and critic are the same model ({models['critic'].name}): the "
              "paper separates the roles to avoid circular bias; acceptable for a CPU demo, not "
              "for a release", flush=True)
    if cfg.engine.executor == "ray":
        print("note: on Ray every stage call (classify, expand, each respond round) starts its "
              "own engine replicas; engine=local keeps one engine per model for the whole job",
              flush=True)
    if cfg.dry_run:
        return {"dry_run": True, "seeds": seeds.counts, "targets": targets}

    rd = start_run(cfg, "build_dataset", [*seeds.files, *refs.files])
    if seeds.quarantine:
        rd.write_parquet("quarantine.parquet", quarantine_table(seeds.quarantine))
    stats = StageStats()
    roles = {r: Role(r, models[r], cfg.roles[r], cfg.engine, row_cache(cfg, models[r], cfg.roles[r]),
                     stats, cfg.progress) for r in ROLES}
    pool = [_record(rid, "seed", q, seed_class_id=cid) for rid, q, cid in zip(
        seeds.table.column("row_id").to_pylist(), seeds.table.column("question").to_pylist(),
        seeds.table.column("class_id").to_pylist(), strict=True)]
    with guard_signals(rd):
        t0 = time.perf_counter()
        _dedup(pool, [], refs, d)
        stats.record_cpu("dedup", len(pool), time.perf_counter() - t0)
        _classify([r for r in pool if r["state"] is None], roles["classifier"], cfg, "seed")
        requested, expand_rounds = _expand(cfg, pool, targets, roles["generator"],
                                           roles["classifier"], refs, stats)
        alive = [r for r in pool if r["state"] is None]
        outcomes, candidates, respond_rounds = respond.rejection_sample(
            [{"prompt_id": r["prompt_id"], "question": r["question"], "primary_id": r["primary_id"]}
             for r in alive],
            lambda q: roles["generator"]("respond.generate", q, _prompts_in(q)),
            lambda q: roles["critic"]("respond.critic", q, _prompts_in(q)), cfg.respond)
    for rec in alive:
        out = outcomes[rec["prompt_id"]]
        rec["outcome"] = out
        if out["passed"]:
            rec["state"] = "kept"
        else:
            rec.update(state="rejected", reason="no_passing_response: " + respond.rejection_reason(
                out, int(cfg.respond.max_feedback_rounds)))
    kept = [r for r in pool if r["state"] == "kept"]
    t0 = time.perf_counter()
    splits = split.split([r["content_hash"] for r in kept], [r["primary_id"] for r in kept],
                     list(cfg.split.fractions), int(cfg.split.seed))
    for rec, s in zip(kept, splits, strict=True):
        rec["split"] = s
    leak = split.leakage([r["question"] for r in kept], [r["prompt_id"] for r in kept], splits, d,
                     float(cfg.split.leakage_target))
    dropped = [r for r in pool if r["state"] == "duplicate" and r.get("duplicate_in") == "pool"]
    leak["by_pair"] = split.pair_leakage(
        [(r["question"], r["content_hash"], r["primary_id"]) for r in kept], splits,
        [(r["question"], r["content_hash"], _label_before_dedup(r)) for r in dropped],
        [(name, t.column("question").to_pylist()) for name, t in refs.corpora], d,
        list(cfg.split.fractions), int(cfg.split.seed), float(cfg.split.leakage_target))
    stats.record_cpu("split_leakage", len(kept), time.perf_counter() - t0)
    return write_outputs(cfg, rd, seeds, refs, pool, candidates, models, targets, stats, leak,
                         {"expand_rounds": expand_rounds, "respond_rounds": respond_rounds,
                          "generated_requested": requested, "wall_s": time.perf_counter() - t_job})
