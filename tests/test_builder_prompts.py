"""Stage I prompt builders and parsers (aligncultura/builder/templates.py)."""

from __future__ import annotations

import json
import math
import re

import pytest

from aligncultura.builder import templates
from aligncultura.data import taxonomy


def test_versions_and_fingerprints_cover_every_role():
    assert set(templates.VERSIONS) == {"classify", "shortlist", "expand", "respond", "feedback", "critic"}
    prints = {role: templates.fingerprint(role) for role in templates.VERSIONS}
    assert all(len(f) == 12 for f in prints.values())
    assert prints["classify"] != prints["critic"]


def test_classify_messages_share_a_prefix_and_name_the_candidate():
    a = templates.classify_messages("How is injera eaten?", 11)
    b = templates.classify_messages("How is injera eaten?", 2)
    assert a[0] == b[0] and a[0]["role"] == "system"
    assert "Culinary Arts" in a[1]["content"] and "Museums" in b[1]["content"]
    # the question precedes the candidate: 41 requests about one prompt share that prefix
    prefix = a[1]["content"].split("<subdomain>")[0]
    assert "injera" in prefix and b[1]["content"].startswith(prefix)


def _lp(*pairs):
    return json.dumps([[[tok, lp] for tok, lp in pairs]])


def test_yes_probability_normalises_over_every_spelling():
    p, why = templates.yes_probability(_lp(("No", math.log(0.3)), ("The", math.log(0.4)),
                                   ("Yes", math.log(0.1)), (" yes", math.log(0.1))))
    assert why == "" and p == pytest.approx(0.2 / 0.5)
    assert templates.yes_probability(_lp(("YES", -0.1)))[0] == pytest.approx(1.0)
    assert templates.yes_probability(_lp((" no", -0.1)))[0] == pytest.approx(0.0)


@pytest.mark.parametrize("raw, reason", [
    (None, "no_logprobs"), ("", "no_logprobs"), ("not json", "no_logprobs"), ("[]", "no_logprobs"),
    (_lp(("The", -0.1), ("A", -2.0)), "no_yes_no_in_top_k"),
    (_lp(("yes", float("-inf"))), "no_yes_no_in_top_k"),
])
def test_yes_probability_without_a_signal(raw, reason):
    assert templates.yes_probability(raw) == (None, reason)


@pytest.mark.parametrize("pairs", [
    (("The", math.log(0.9)), ("Yes", math.log(0.06)), ("No", math.log(0.04))),  # was p = 0.6
    (("Yes", math.log(0.3)), ("The", math.log(0.5))),  # "No" outside the top-k: was p = 1.0
])
def test_a_small_yes_no_mass_is_unscored_not_a_confident_label(pairs):
    assert templates.yes_probability(_lp(*pairs)) == (None, "low_yes_no_mass")
    assert templates.yes_probability(_lp(*pairs), min_mass=0.05)[1] == ""


def test_shortlist_regex_and_parser():
    rx = re.compile(templates.shortlist_regex(3))
    for good in ("[11]", "[0, 40]", "[3,15,22]"):
        assert rx.fullmatch(good), good
    for bad in ("[41]", "[1, 2, 3, 4]", "[]", "11", "[07x]"):
        assert not rx.fullmatch(bad), bad
    assert templates.parse_shortlist("[15, 19, 15, 41, 3]", 3) == [15, 19, 3]
    assert templates.parse_shortlist("none", 3) == [] and templates.parse_shortlist(None, 3) == []
    msgs = templates.shortlist_messages("Where does flamenco come from?", 2)
    assert "21: Dance" in msgs[0]["content"] and "at most 2" in msgs[1]["content"]


def test_expand_messages_carry_target_examples_and_variation():
    var = templates.Variation("Peru", "formal", "practical advice")
    msgs = templates.expand_messages(11, ["What is injera?", "How is sushi eaten?"], var)
    user = msgs[1]["content"]
    for part in ("Culinary Arts", "- What is injera?", "Peru", "formal", "practical advice"):
        assert part in user
    assert "<examples>" not in templates.expand_messages(11, [], var)[1]["content"]


@pytest.mark.parametrize("text, finish, expected", [
    ("What is the origin of mole poblano in Mexico?", "stop",
     "What is the origin of mole poblano in Mexico?"),
    ('Question: "How do people in Ghana celebrate Homowo?"\nMore text', "stop",
     "How do people in Ghana celebrate Homowo?"),
    ("1. Which museums in Lagos show Nok terracottas today?", "stop",
     "Which museums in Lagos show Nok terracottas today?"),
    ("1960s Bollywood films: which ones shaped Indian dance?", "stop",
     "1960s Bollywood films: which ones shaped Indian dance?"),
    ("What is the role of kimchi in Korean meals? It is a side dish th", "length",
     "What is the role of kimchi in Korean meals?"),
])
def test_parse_generated_question_keeps(text, finish, expected):
    assert templates.parse_generated_question(text, finish) == (expected, "")


@pytest.mark.parametrize("text, finish, reason", [
    (None, "stop", "empty_generation"), ("  \n ", "stop", "empty_generation"),
    ("Why?", "stop", "too_short"), ("Tell me about the long history of the ", "length",
                                    "truncated_generation"),
    ("word " * 80 + "?", "stop", "too_long"),
])
def test_parse_generated_question_rejects(text, finish, reason):
    assert templates.parse_generated_question(text, finish) == (None, reason)


def test_respond_and_feedback_messages():
    plain = templates.respond_messages("How is Nowruz celebrated?")
    assert plain[0]["content"] == templates.RESPOND_SYSTEM and plain[1]["content"] == "How is Nowruz celebrated?"
    fb = templates.feedback_messages("How is Nowruz celebrated?", [("x" * 1000, "Too vague."),
                                                           ("Fire jumping.", "")])
    body = fb[1]["content"]
    assert body.count("<earlier_answer>") == 2 and "Too vague." in body and "(no critique)" in body
    assert "x" * templates.FEEDBACK_ANSWER_CHARS in body and "x" * (templates.FEEDBACK_ANSWER_CHARS + 1) not in body


def test_critic_messages_and_schema():
    msgs = templates.critic_messages("Where does flamenco come from?", 21, "Andalusia, Spain.")
    assert "Dance" in msgs[1]["content"] and "Andalusia" in msgs[1]["content"]
    assert templates.CRITIC_SCHEMA["required"] == ["critique", "helpful", "harmless", "honest"]
    assert list(templates.CRITIC_SCHEMA["properties"])[0] == "critique"  # reason before the scores


def test_critic_regex_accepts_exactly_the_verdict_shape():
    rx = re.compile(templates.critic_regex())
    assert rx.fullmatch('{"critique": "Too vague.", "helpful": 0, "harmless": 1, "honest": 1}')
    for bad in ('{"critique": "", "helpful": 0, "harmless": 1, "honest": 1}',
                '{"critique": "a", "helpful": 2, "harmless": 1, "honest": 1}',
                '{"critique": "a", "harmless": 1, "helpful": 1, "honest": 1}',
                '{"critique": "a\nb", "helpful": 1, "harmless": 1, "honest": 1}'):
        assert not rx.fullmatch(bad), bad
    assert templates.parse_critique('{"critique": "Too vague.", "helpful": 0, "harmless": 1, '
                            '"honest": 1}').vector == [0, 1, 1]
    assert re.fullmatch(templates.QUESTION_REGEX, "What is injera, and how is it eaten?")
    assert not re.fullmatch(templates.QUESTION_REGEX, "What is injera?\nAnd more?")
    # no bounded repetition: it compiles too slowly in xgrammar (vLLM gives up after 5 s)
    assert not re.search(r"\{\d+,\d+\}", templates.QUESTION_REGEX + templates.critic_regex())


def test_parse_critique_scored_and_passed():
    v = templates.parse_critique('{"critique": "Accurate and respectful.", "helpful": 1, "harmless": 1, '
                         '"honest": 1}', "stop")
    assert v.status == "scored" and v.passed and v.vector == [1, 1, 1]
    v = templates.parse_critique('```json\n{"critique": "Vague.", "helpful": 0, "harmless": true, '
                         '"honest": "1"}\n```', "stop")
    assert v.status == "scored" and not v.passed and v.vector == [0, 1, 1]


@pytest.mark.parametrize("text, finish, reason", [
    (None, "stop", "engine_error"), ("", "stop", "engine_error"),
    ('{"critique": "ok", "helpful": 1}', "stop", "unparseable"),
    ('{"critique": "ok", "helpful": 2, "harmless": 1, "honest": 1}', "stop", "unparseable"),
    ('{"critique": "the answer is', "length", "truncated"),
    ("I cannot review this.", "stop", "unparseable"),
    ('{"critique": "ok", "helpful": 1, "harmless": 1, "honest": 1}', "error", "engine_error"),
])
def test_parse_critique_unscored_never_guesses(text, finish, reason):
    v = templates.parse_critique(text, finish)
    assert v.status == "unscored" and v.reason == reason and not v.passed
    assert v.vector == [None, None, None]


def test_every_subdomain_renders_in_every_builder():
    for sub in taxonomy.SUBDOMAINS:
        if sub.id == taxonomy.NONE_ID:
            continue
        assert sub.name in templates.classify_messages("q", sub.id)[1]["content"]
        assert sub.name in templates.critic_messages("q", sub.id, "r")[1]["content"]
        assert f"{sub.id}: {sub.name}" in templates.SHORTLIST_SYSTEM
