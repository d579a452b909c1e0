"""Unit tests of the engine's pure helpers and the embedded model's provisioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligncultura.engine import models
from aligncultura.engine.requests import build_messages, request_table, split_reasoning
from aligncultura.engine.vllm_stage import sampling_params


def test_split_reasoning_keeps_traces_out_of_the_response():
    assert split_reasoning("<think>plan</think>Answer.") == ("plan", "Answer.")
    # templates that open <think> themselves (DeepSeek-R1 distills)
    assert split_reasoning("plan a\nplan b</think>\n\nAnswer.") == ("plan a\nplan b", "Answer.")
    # a trace cut off by the token budget: nothing leaks into the response
    assert split_reasoning("<think>never closed") == ("never closed", "")
    assert split_reasoning("plain answer") == ("", "plain answer")


def test_system_prompt_semantics():
    assert build_messages(None, "q") == [{"role": "user", "content": "q"}]
    assert build_messages("", "q")[0] == {"role": "system", "content": ""}
    assert build_messages("Be brief.", "q")[0]["content"] == "Be brief."


def test_sampling_params_structured_kinds():
    sp = sampling_params({"temperature": 0.0, "max_tokens": 8, "structured": {"choice": ["a", "b"]}})
    assert sp.structured_outputs.choice == ["a", "b"]
    sp = sampling_params({"max_tokens": 8, "structured": {"json": {"type": "object"}}, "seed": None})
    assert sp.structured_outputs.json == {"type": "object"} and sp.seed is None
    assert sampling_params({"max_tokens": 8, "structured": {"regex": "[ab]"}}).structured_outputs.regex
    with pytest.raises(ValueError, match="unknown"):
        sampling_params({"structured": {"xml": "x"}})


def test_request_table_keys_depend_on_content():
    rows = [{"request_id": "a", "messages": build_messages(None, "q"), "sampling": {"seed": 1}},
            {"request_id": "b", "messages": build_messages(None, "q"), "sampling": {"seed": 2}},
            {"request_id": "c", "messages": build_messages(None, "q"), "sampling": {"seed": 1}}]
    t = request_table(rows, key_salt="model-x")
    keys = t.column("key").to_pylist()
    assert keys[0] == keys[2] != keys[1]
    assert request_table(rows, key_salt="model-y").column("key")[0].as_py() != keys[0]
    assert json.loads(t.column("sampling")[0].as_py()) == {"seed": 1}
    assert request_table(rows).column("key").null_count == 3


def test_provisioning_is_atomic(tmp_path, monkeypatch):
    """A crash mid-conversion leaves no folder that a later run trusts."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    monkeypatch.setattr(models, "embedded_gguf", lambda: gguf)

    def crash(src, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(models, "convert_gguf", crash)
    with pytest.raises(RuntimeError):
        models.provision_embedded("m", tmp_path / "cache")
    assert not any((tmp_path / "cache" / "models").glob("m-*")), "half folder left behind"

    # a half folder from an old crash (no .complete marker) is replaced, not trusted
    digest = models._sha256(gguf)
    half = tmp_path / "cache" / "models" / f"m-{digest[:16]}"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")

    def ok(src, out):
        (out / "config.json").write_text('{"ok": true}')

    monkeypatch.setattr(models, "convert_gguf", ok)
    path, got = models.provision_embedded("m", tmp_path / "cache")
    assert got == digest and (Path(path) / ".complete").exists()
    assert json.loads((Path(path) / "config.json").read_text()) == {"ok": True}
    # and a second call reuses it without converting
    monkeypatch.setattr(models, "convert_gguf", crash)
    assert models.provision_embedded("m", tmp_path / "cache")[0] == path


def test_model_errors_are_one_line(tmp_path):
    from omegaconf import OmegaConf

    from aligncultura.config import ModelConfig

    cfg = OmegaConf.structured(ModelConfig(name="x", source="local", path=str(tmp_path / "nope")))
    with pytest.raises(models.ModelError, match="no such directory"):
        models.resolve_model(cfg)
    cfg.path = str(tmp_path)
    with pytest.raises(models.ModelError, match="config.json"):
        models.resolve_model(cfg)
    cfg.lora_path = str(tmp_path / "adapter")
    with pytest.raises(models.ModelError, match="lora_path"):
        models.resolve_model(cfg)


# ---- the request contract: identity is columns, carried through every path ----------------

def _gen_request(row_id: str, k: int, n: int) -> dict:
    return {"request_id": f"{row_id}::gen{k}", "row_id": row_id, "task": "generate",
            "seed_index": k, "sample_index": k * n,
            "messages": build_messages(None, f"question {row_id}"),
            "sampling": {"seed": k, "max_tokens": 4, "n": n}}


def test_request_table_keeps_identity_columns_and_nulls_the_rest():
    t = request_table([_gen_request("a", 1, 2),
                       {"request_id": "x", "messages": [], "sampling": {}}], key_salt="s")
    rows = t.to_pylist()
    assert rows[0]["row_id"] == "a" and rows[0]["seed_index"] == 1 and rows[0]["sample_index"] == 2
    assert rows[0]["criterion"] is None and rows[1]["row_id"] is None
    assert rows[0]["key"] and rows[0]["key"] != rows[1]["key"]


def test_cache_hits_and_failures_carry_the_requests_identity(tmp_path):
    from aligncultura.engine.cache import RowCache
    from aligncultura.engine.requests import failed_completions
    from aligncultura.engine.runner import complete

    cache = RowCache(tmp_path, "salt")
    reqs = request_table([_gen_request("a", 0, 2), _gen_request("b", 1, 2)], cache.salt)
    keys = reqs.column("key").to_pylist()
    cache.put([{"key": keys[0], "output_index": i, "text": f"t{i}", "status": "ok",
                "request_id": "stale", "row_id": "stale"} for i in range(2)])
    cache.put([{"key": keys[1], "output_index": 0, "text": "u", "status": "ok"}])
    stats: dict = {}
    got = [r for b in complete(reqs, None, None, None, cache=RowCache(tmp_path, "salt"),
                               stats=stats) for r in b.to_pylist()]
    assert stats == {"cached": 2, "computed": 0}  # no engine was needed (model is None)
    assert [(r["row_id"], r["seed_index"], r["sample_index"], r["output_index"], r["cached"])
            for r in got] == [("a", 0, 0, 0, True), ("a", 0, 0, 1, True), ("b", 1, 2, 0, True)]
    failed = failed_completions(reqs, "engine died").to_pylist()
    assert [(r["request_id"], r["row_id"], r["status"], r["error"]) for r in failed] == [
        ("a::gen0", "a", "failed", "engine died"), ("b::gen1", "b", "failed", "engine died")]


def test_cache_parts_written_before_identity_columns_are_still_served(tmp_path):
    """Older parts stored the whole completion, with the output index as `sample_index`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aligncultura.engine.cache import RowCache

    cache = RowCache(tmp_path, "salt")
    cache.dir.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["r::gen0"] * 2, "sample_index": [0, 1],
                             "text": ["x", "y"], "status": ["ok", "ok"], "key": ["k", "k"]}),
                   cache.dir / "part-old.parquet")
    got = RowCache(tmp_path, "salt").get("k")
    assert [(r["output_index"], r["text"]) for r in got] == [(0, "x"), (1, "y")]
    assert "request_id" not in got[0] and "sample_index" not in got[0]


def test_generation_sample_index_is_seed_times_n_plus_output():
    from aligncultura.benchmark.generation import generation_rows
    from aligncultura.engine.requests import COMPLETION_SCHEMA

    comps = [{"request_id": f"a::gen{k}", "row_id": "a", "task": "generate", "seed_index": k,
              "sample_index": k * 2, "output_index": i, "text": f"{k}.{i}", "status": "ok"}
             for k in range(2) for i in range(2)]
    rows = generation_rows(pa_table(comps, COMPLETION_SCHEMA), {"a": "q"}, "m").to_pylist()
    assert [(r["sample_index"], r["response"], r["prompt"]) for r in rows] == [
        (0, "0.0", "q"), (1, "0.1", "q"), (2, "1.0", "q"), (3, "1.1", "q")]


def pa_table(rows, schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


def test_an_output_that_ends_inside_its_reasoning_is_truncated_not_an_answer():
    from aligncultura.engine.requests import read_output

    # a template that opens <think> itself: the output starts inside the trace
    assert read_output("step 1, step 2</think>Answer.", opens_think=True) == {
        "text": "Answer.", "reasoning": "step 1, step 2", "status": "ok", "error": None}
    cut = read_output("step 1, step 2, and then", opens_think=True)
    assert (cut["status"], cut["text"], cut["reasoning"]) == (
        "truncated_reasoning", None, "step 1, step 2, and then")
    assert "reasoning_max_tokens" in cut["error"]
    # an opened <think> never closed is cut too, whatever the template
    assert read_output("<think>never closed")["status"] == "truncated_reasoning"
    assert read_output("<think>a</think>b <think>c")["status"] == "truncated_reasoning"
    # a model that does not reason: plain text is the answer
    assert read_output("plain answer") == {"text": "plain answer", "reasoning": "",
                                           "status": "ok", "error": None}
