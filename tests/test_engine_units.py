"""Unit tests of the engine's pure helpers and the embedded model's provisioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligncultura import models
from aligncultura.engine import build_messages, request_table, sampling_params, split_reasoning


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
