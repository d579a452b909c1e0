"""Stage I steps as pure functions: the resampling loop's bounds, classification from
log-probabilities, greedy SimHash dedup, expansion plans, split + leakage, accounting.

The generator, critic and classifier here are scripted functions (unit tests only); the real
engine runs them in tests/test_builder_e2e.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aligncultura.builder import accounting, classify, dedup, expand, respond, split, templates
from aligncultura.builder.config import ClassifyConfig, ExpandConfig, RespondConfig
from aligncultura.data import taxonomy
from aligncultura.errors import JobError

PROMPTS = [{"prompt_id": f"p{i}", "question": f"Question number {i} about dance?", "primary_id": 21}
           for i in range(3)]
PASS = '{"critique": "Good.", "helpful": 1, "harmless": 1, "honest": 1}'
FAIL = '{"critique": "Too vague to help.", "helpful": 0, "harmless": 1, "honest": 1}'


class Scripted:
    """A fake role: records every call and answers with `reply(request) -> text|None`."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, requests):
        self.calls.append(requests)
        out = {}
        for r in requests:
            text = self.reply(r)
            out[r["request_id"]] = {"text": text, "status": "ok" if text is not None else "failed",
                                    "finish_reason": "stop", "output_tokens": 5,
                                    "error": None if text is not None else "boom"}
        return out


def _gen(text="An answer."):
    return Scripted(lambda r: text)


@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_never_passing_prompts_stop_after_max_feedback_rounds(rounds):
    gen, critic = _gen(), Scripted(lambda r: FAIL)
    cfg = RespondConfig(k=3, max_feedback_rounds=rounds)
    outcomes, cands, stats = respond.rejection_sample(PROMPTS, gen, critic, cfg)
    assert len(gen.calls) == len(critic.calls) == rounds + 1  # never a round more
    assert [s["round"] for s in stats] == list(range(rounds + 1))
    assert len(cands) == len(PROMPTS) * 3 * (rounds + 1)
    for o in outcomes.values():
        assert not o["passed"] and o["rounds"] == rounds and len(o["critiques"]) == 3 * (rounds + 1)
        assert {c["critique"] for c in o["critiques"]} == {"Too vague to help."}
        assert "after" in respond.rejection_reason(o, rounds)
    # feedback rounds show the previous round's critiques to the generator
    for call in gen.calls[1:]:
        body = call[0]["messages"][-1]["content"]
        assert "Too vague to help." in body and body.count("<critique>") == 3
    assert "<critique>" not in gen.calls[0][0]["messages"][-1]["content"]


def test_default_config_bounds_feedback_at_two_rounds():
    gen, critic = _gen(), Scripted(lambda r: FAIL)
    respond.rejection_sample(PROMPTS[:1], gen, critic, RespondConfig())
    assert RespondConfig().max_feedback_rounds == 2 and len(gen.calls) == 3
    ids = [r["request_id"] for call in gen.calls for r in call]
    assert not any("::r3::" in i for i in ids) and len(ids) == 3 * 3


def test_resolved_prompts_leave_the_loop_and_keep_the_first_passing_candidate():
    # p0 passes at round 0 candidate 1; p1 at round 1 candidate 2; p2 never
    def verdict(r):
        pid, _, rnd, cand = r["request_id"].split("::")
        ok = (pid, rnd, cand) in {("p0", "r0", "c1"), ("p0", "r0", "c2"), ("p1", "r1", "c2")}
        return PASS if ok else FAIL

    gen = Scripted(lambda r: f"answer {r['request_id']}")
    critic = Scripted(verdict)
    outcomes, cands, stats = respond.rejection_sample(PROMPTS, gen, critic, RespondConfig(k=3))
    assert outcomes["p0"]["passed"] and (outcomes["p0"]["round"], outcomes["p0"]["candidate"]) == (0, 1)
    assert outcomes["p0"]["response"] == "answer p0::respond::r0::c1"
    assert outcomes["p0"]["hhh"] == [1, 1, 1]
    assert outcomes["p1"]["passed"] and (outcomes["p1"]["round"], outcomes["p1"]["candidate"]) == (1, 2)
    assert not outcomes["p2"]["passed"]
    assert [s["prompts"] for s in stats] == [3, 2, 1]
    assert [s["resolved"] for s in stats] == [1, 1, 0]
    assert {r["request_id"].split("::")[0] for r in gen.calls[2]} == {"p2"}


def test_empty_failed_and_unparseable_candidates_cannot_pass():
    replies = {"c0": None, "c1": "   ", "c2": "fine answer"}
    gen = Scripted(lambda r: replies[r["request_id"].rsplit("::", 1)[1]])
    critic = Scripted(lambda r: "not json at all")
    outcomes, cands, _ = respond.rejection_sample(PROMPTS[:1], gen, critic, RespondConfig(k=3))
    assert not outcomes["p0"]["passed"]
    assert all(len(c) == 1 for c in critic.calls)  # only the non-empty candidate is judged
    first = [c for c in cands if c["round"] == 0]
    assert [c["generation_status"] for c in first] == ["failed", "empty", "ok"]
    assert [c["critic_status"] for c in first] == ["skipped", "skipped", "unscored"]


def test_requests_carry_sampling_and_stable_seeds():
    cfg = RespondConfig(k=2, temperature=0.7, top_p=0.9, max_tokens=512)
    a = respond.generation_requests(PROMPTS[0], 0, [], cfg)
    assert [r["sampling"]["max_tokens"] for r in a] == [512, 512]
    assert a[0]["sampling"]["seed"] != a[1]["sampling"]["seed"]
    assert a == respond.generation_requests(PROMPTS[0], 0, [], cfg)
    c = respond.critic_request(PROMPTS[0], 0, 0, "text", cfg)
    assert c["sampling"]["structured"] == {"regex": templates.critic_regex()}
    cfg = RespondConfig(critic_structured="json", critique_max_chars=60)
    c = respond.critic_request(PROMPTS[0], 0, 0, "text", cfg)
    assert c["sampling"]["structured"]["json"]["properties"]["critique"]["maxLength"] == 60
    assert "under 60 characters" in c["messages"][0]["content"]


# ---- classify ---------------------------------------------------------------------------------


def _yes(p):
    return json.dumps([[["Yes", math.log(p)], ["No", math.log(1 - p)]]])


def _classifier(probs, shortlist="[21, 32]"):
    calls = []

    def call(stage, requests, n):
        calls.append((stage, len(requests), n))
        out = {}
        for r in requests:
            if stage == "classify.shortlist":
                out[r["request_id"]] = {"status": "ok", "text": shortlist}
            else:
                label = int(r["request_id"].rsplit("::label", 1)[1])
                assert r["sampling"]["logprobs"] == 20 and r["sampling"]["max_tokens"] == 1
                out[r["request_id"]] = {"status": "ok", "logprobs_json": _yes(probs.get(label, 0.1))}
        return out

    return call, calls


def test_exhaustive_classification_asks_all_41_and_keeps_labels_over_delta():
    call, calls = _classifier({21: 0.9, 32: 0.6, 3: 0.5})
    res = classify.classify([{"prompt_id": "a", "question": "q", "must": [None]}], call, ClassifyConfig())
    assert calls == [("classify.verify", 41, 1)]
    r = res["a"]
    assert [lab["id"] for lab in r["labels"]] == [21, 32, 3] and r["primary_id"] == 21
    assert r["labels"][0]["name"] == "Dance" and r["labels"][0]["p"] == pytest.approx(0.9)
    assert len(r["scores"]) == 41 and r["error"] is None


def test_shortlist_classification_verifies_shortlist_plus_required_labels():
    call, calls = _classifier({21: 0.4, 15: 0.7})
    cfg = ClassifyConfig(method="shortlist", shortlist_size=2)
    res = classify.classify([{"prompt_id": "a", "question": "q", "must": [15]}], call, cfg)
    assert calls == [("classify.shortlist", 1, 1), ("classify.verify", 3, 1)]
    assert [s["id"] for s in res["a"]["scores"]] == [21, 32, 15]
    assert [lab["id"] for lab in res["a"]["labels"]] == [15]


def test_no_label_passing_is_none_and_no_signal_cannot_pass():
    def call(stage, requests, n):
        return {r["request_id"]: {"status": "ok", "logprobs_json": json.dumps([[["The", -0.1]]])}
                for r in requests}

    res = classify.classify([{"prompt_id": "a", "question": "q", "must": []}], call, ClassifyConfig())
    assert res["a"]["primary_id"] == taxonomy.NONE_ID and res["a"]["labels"] == []
    assert {s["status"] for s in res["a"]["scores"]} == {"no_yes_no_in_top_k"}


def test_classification_that_failed_entirely_is_an_error():
    def call(stage, requests, n):
        return {r["request_id"]: {"status": "failed", "error": "engine died"} for r in requests}

    res = classify.classify([{"prompt_id": "a", "question": "q", "must": []}], call, ClassifyConfig())
    assert res["a"]["error"].startswith("classification failed: engine died")


# ---- dedup ------------------------------------------------------------------------------------


def test_greedy_dedup_points_at_a_kept_row_within_the_radius():
    fps = np.array([0, 0b1111, 0b1111 << 6, (1 << 64) - 1, 0], dtype=np.uint64)
    ok = np.array([True, True, True, True, False])
    # row1 is 4 bits from row0 (dup of 0); row2 is 4 from row0... distance(0, 0b1111<<6) = 4
    out = dedup.greedy_duplicates(fps, ok, 1, 4)
    assert out[0] == (0, 4) and out[1] == (0, 4)
    assert out[2] is None  # all ones: far from everything
    assert out[3] is None  # no content: never a duplicate


def test_greedy_dedup_does_not_chain_through_dropped_rows():
    a = 0
    b = (1 << 8) - 1  # 8 bits from a
    c = ((1 << 16) - 1)  # 8 bits from b, 16 from a
    out = dedup.greedy_duplicates(np.array([a, b, c], dtype=np.uint64), np.ones(3, bool), 0, 10)
    assert out == [None, (0, 8), None]  # union-find would have dropped c too


def test_fingerprints_and_references(tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"id": "r1", "question": "Where did flamenco come from?"}) + "\n"
                   + json.dumps({"id": "r2", "question": "How do I brew Turkish coffee?"}) + "\n")
    from aligncultura.config import InputConfig

    refs = dedup.References([InputConfig(name="ref", path=str(ref), class_field=None)], 10)
    found = refs.match(["Where does flamenco come from?", "What is Bharatanatyam?"])
    assert found[0].ref_id == "r1" and found[0].corpus == "ref" and found[0].hamming <= 10
    assert found[1] is None
    fps, ok = dedup.fingerprints(["Where does flamenco come from?", "where does FLAMENCO come from"])
    assert fps.dtype == np.uint64 and fps[0] == fps[1] and ok.all()


# ---- expand -----------------------------------------------------------------------------------


def test_expansion_plan_and_requests():
    assert expand.plan({2: 1, 11: 5}, [2, 11, 21], 3, 1.5) == {2: 3, 21: 5}
    assert expand.plan({2: 3}, [2], 3, 2.0) == {}
    cfg = ExpandConfig(few_shot=2)
    ex = {2: [("s1", "Q one?"), ("s2", "Q two?"), ("s3", "Q three?")]}
    reqs, meta = expand.requests({2: 2, 21: 1}, ex, cfg, 0)
    assert [r["request_id"] for r in reqs] == ["gen-r0-s02-0000::expand", "gen-r0-s02-0001::expand",
                                               "gen-r0-s21-0000::expand"]
    assert meta["gen-r0-s02-0000"]["few_shot_ids"] == ["s1", "s2"]
    assert meta["gen-r0-s02-0001"]["few_shot_ids"] == ["s2", "s3"]
    assert meta["gen-r0-s21-0000"]["few_shot_ids"] == []
    assert reqs == expand.requests({2: 2, 21: 1}, ex, cfg, 0)[0]  # deterministic
    assert len({(m["country"], m["register"], m["intent"]) for m in
                expand.requests({2: 40}, ex, cfg, 0)[1].values()}) > 20  # varied
    with pytest.raises(taxonomy.TaxonomyError, match="expand.subdomains"):
        expand.targets([41])
    assert len(expand.targets(None)) == 41


# ---- split + leakage --------------------------------------------------------------------------


def test_split_is_stratified_within_one_row_and_leakage_has_a_wilson_ci():
    primary = [21] * 20 + [15] * 10 + [3] * 3
    texts = [f"A distinct question {i} about " + "abcdefghij"[i % 10] * (i + 3) for i in range(33)]
    from aligncultura.data.reader import content_hash

    splits = split.split([content_hash(t) for t in texts], primary, [0.8, 0.1, 0.1], 42)
    prop = split.proportions(primary, splits, [0.8, 0.1, 0.1])
    assert prop["off_target_strata"] == []
    assert prop["strata"]["21"] == {"train": 16, "val": 2, "test": 2, "n": 20, "checked": True,
                                    "within_one_row": True}
    assert prop["strata"]["3"]["train"] == 3 and not prop["strata"]["3"]["checked"]
    # make one test row a near-copy of a train row: it is flagged
    t_idx = splits.index("test")
    tr_idx = splits.index("train")
    texts[t_idx] = texts[tr_idx] + "!"
    leak = split.leakage(texts, [f"id{i}" for i in range(33)], splits, 10, 0.003)
    assert leak["flagged"] >= 1 and leak["n"] == splits.count("val") + splits.count("test")
    assert {"id": f"id{t_idx}", "train_id": f"id{tr_idx}", "hamming": 0} in leak["pairs"]
    lo, hi = leak["ci95"]
    assert 0 <= lo <= leak["rate"] <= hi <= 1 and not leak["meets_target"]
    assert not leak["ci_within_target"]
    clean = split.leakage(["How is Nowruz celebrated in Iran and Central Asia?",
                       "Which Chinua Achebe novel should I read first?",
                       "What is the etiquette at a sushi counter in Japan?"],
                      ["a", "b", "c"], ["train", "val", "test"], 10, 0.003)
    assert clean["flagged"] == 0 and clean["meets_target"] and not clean["ci_within_target"]


# ---- accounting -------------------------------------------------------------------------------


def test_accounting_adds_up_or_raises():
    pool = [{"prompt_id": "a", "origin": "seed", "state": "kept", "reason": None},
            {"prompt_id": "b", "origin": "seed", "state": "duplicate", "reason": "near_duplicate: x",
             "duplicate_of": "a"},
            {"prompt_id": "g", "origin": "generated", "state": "rejected",
             "reason": "off_target: p=0.1"}]
    quarantine = [{"row_id": "a", "file": "f.jsonl", "line": 9, "reason": "duplicate id 'a'"}]
    states = accounting.row_states(pool, quarantine)
    acc = accounting.tally(states, seeds_read=4, not_selected=1, generated_requested=1)
    assert acc["seed"]["kept"] == 1 and acc["seed"]["quarantined"] == 1
    assert acc["generated"]["reasons"] == {"rejected:off_target": 1}
    with pytest.raises(JobError, match="accounting: seed"):
        accounting.tally(states, seeds_read=5, not_selected=1, generated_requested=1)
    with pytest.raises(JobError, match="accounting: generated"):
        accounting.tally(states, seeds_read=4, not_selected=1, generated_requested=2)


def test_stage_stats_count_an_engine_start_once():
    import pyarrow as pa

    from aligncultura.builder.calls import StageStats
    from aligncultura.engine.requests import COMPLETION_SCHEMA

    rows = [{"request_id": "r", "status": "ok", "output_tokens": 10, "input_tokens": 5,
             "engine_start_s": 20.0, "cached": False}]
    st = StageStats()
    st.record_engine("a", "m", 1, pa.Table.from_pylist(rows, schema=COMPLETION_SCHEMA), 30.0)
    st.record_engine("b", "m", 1, pa.Table.from_pylist(rows, schema=COMPLETION_SCHEMA), 5.0)
    d = st.to_dict()
    assert d["a"]["engine_start_s"] == 20.0 and d["a"]["output_tok_s"] == pytest.approx(1.0)
    assert d["b"]["engine_start_s"] == 0.0 and d["b"]["output_tok_s"] == pytest.approx(2.0)


def test_validate_rejects_bad_settings():
    from omegaconf import OmegaConf

    from aligncultura.builder.config import BuildDatasetJobConfig
    from aligncultura.builder.pipeline import validate

    base = OmegaConf.structured(BuildDatasetJobConfig)
    for key, value, match in [("classify.delta", 0.0, "classify.delta"),
                              ("classify.method", "vote", "classify.method"),
                              ("respond.k", 0, "respond.k"),
                              ("expand.oversample", 0.5, "expand.oversample"),
                              ("split.fractions", [0.5, 0.5], "split.fractions"),
                              ("classify.min_yes_no_mass", 1.5, "classify.min_yes_no_mass"),
                              ("dedup.max_distance", 64, "dedup.max_distance")]:
        cfg = base.copy()
        OmegaConf.update(cfg, key, value)
        with pytest.raises(JobError, match=match):
            validate(cfg)
    assert validate(base) == expand.targets(None)


def test_a_generated_prompt_keeps_its_own_label_and_off_target_is_not_relabelled():
    """Expansion asks for one prompt about subdomain 2 and one about 21. The classifier finds
    the first more about 11 (p 0.9) though 2 also passes (p 0.6): it is off target, not
    relabelled to 2. The second is most about 21: it is kept and counts for 21."""
    from omegaconf import OmegaConf

    from aligncultura.builder.calls import StageStats
    from aligncultura.builder.config import BuildDatasetJobConfig
    from aligncultura.builder.pipeline import _expand

    cfg = OmegaConf.structured(BuildDatasetJobConfig)
    OmegaConf.update(cfg, "expand.min_per_subdomain", 1)
    OmegaConf.update(cfg, "expand.max_rounds", 1)
    OmegaConf.update(cfg, "expand.oversample", 1.0)
    questions = {2: "Which glazes do potters in Kyoto use for tea bowls today?",
                 21: "How do dancers in Seville learn the footwork of flamenco?"}
    asked = {}

    def gen(stage, reqs, n=None):
        out = {}
        for r in reqs:
            target = int(r["request_id"].split("-s")[1][:2])
            asked[r["row_id"]] = target
            out[r["request_id"]] = {"status": "ok", "text": questions[target],
                                    "finish_reason": "stop"}
        return out

    probs = {2: {11: 0.9, 2: 0.6}, 21: {21: 0.9}}

    def cls(stage, reqs, n=None):
        return {r["request_id"]: {"status": "ok", "logprobs_json": _yes(
            probs[asked[r["row_id"]]].get(int(r["criterion"]), 0.1))} for r in reqs}

    pool: list[dict] = []
    _expand(cfg, pool, [2, 21], gen, cls, dedup.References([], 10), StageStats())
    by_target = {r["generation"]["target_id"]: r for r in pool}
    off = by_target[2]
    assert off["state"] == "rejected" and off["primary_id"] == 11
    assert off["reason"] == ("off_target: primary label 11 (p=0.900) is not the target 2 "
                             "(p=0.600)")
    kept = by_target[21]
    assert kept["state"] is None and kept["primary_id"] == 21


def test_pair_leakage_can_fail_and_reports_every_pair_and_reference():
    from aligncultura.data.reader import content_hash

    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
             "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
    texts = [" ".join(words[(i * 7 + j) % 18] + str(i) for j in range(12)) for i in range(40)]
    primary = [21] * 40
    splits = split.split([content_hash(t) for t in texts], primary, [0.8, 0.1, 0.1], 42)
    t_idx, tr_idx = splits.index("test"), splits.index("train")
    # a test row that repeats a train row with two words changed: MinHash sees it
    copy = texts[tr_idx].split()
    copy[0], copy[5] = "zulu", "yankee"
    texts[t_idx] = " ".join(copy)
    kept = [(t, content_hash(t), p) for t, p in zip(texts, primary, strict=True)]
    dropped = [(texts[3], content_hash(texts[3]), 21)] * 4  # exact copies dedup removed
    report = split.pair_leakage(kept, splits, dropped, [("corpus", [texts[tr_idx]])], 10,
                                [0.8, 0.1, 0.1], 42, 0.003)
    assert set(report["after"]) == set(report["before"]) == {"train-val", "train-test",
                                                             "val-test"}
    after = report["after"]["train-test"]
    assert after["flagged"] == 1 and after["n"] == splits.count("test")
    assert after["by_method"]["minhash"] == 1 and not after["meets_target"]
    assert after["ci95"][0] < after["rate"] < after["ci95"][1]
    before = sum(e["flagged"] for e in report["before"].values())
    assert before >= 1  # the copies of row 3 land in several splits when nothing groups them
    ref = report["references"]["corpus"]
    assert ref["train"]["flagged"] == 1 and ref["test"]["flagged"] == 1  # the copy, and its source
