"""The run directory: redaction, atomic writes, the manifest."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from aligncultura import rundir
from aligncultura.rundir import (
    RunDir,
    atomic_write_bytes,
    file_sha256,
    redact,
    write_json,
    write_parquet,
)

REPO = Path(__file__).resolve().parents[1]
OPENAI_KEY = "sk-proj-AbCdEf0123456789xyz"
HF_KEY = "hf_AbCdEfGhIjKlMnOpQrStUv"


# ---- redact -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "apikey", "apiKey", "api-key",
                                 "OPENAI_API_KEY", "token", "hf_token", "HF_TOKEN", "authToken",
                                 "access_token", "password", "db_password", "passwd", "secret",
                                 "client_secret", "credentials", "wandb_api_key"])
def test_secret_keys_are_masked(key):
    assert redact({key: "hunter2"}) == {key: "***"}


@pytest.mark.parametrize("key", ["api_key_env", "token_env", "HF_TOKEN_ENV", "max_tokens",
                                 "reasoning_max_tokens", "tokenizer", "input_tokens",
                                 "output_tokens", "num_tokens", "name", "keywords"])
def test_non_secret_keys_are_kept(key):
    assert redact({key: "value"}) == {key: "value"}
    assert redact({key: 512}) == {key: 512}


def test_empty_secret_values_stay_visible():
    # an unset key is worth seeing in the config: it is not a secret
    assert redact({"api_key": None, "token": ""}) == {"api_key": None, "token": ""}


def test_secret_values_are_masked_anywhere():
    cfg = {
        "model": {"name": "qwen3_8b", "api": {"base_url": "http://x", "api_key_env": "OPENAI",
                                              "headers": [f"Bearer {OPENAI_KEY}"]}},
        "note": f"login with {HF_KEY} please",
        "argv": ["jobs.generate", f"model.api.key={OPENAI_KEY}"],
        "tuple": (HF_KEY, 3),
    }
    out = redact(cfg)
    text = json.dumps(out)
    assert OPENAI_KEY not in text and HF_KEY not in text
    assert out["model"]["api"]["api_key_env"] == "OPENAI"
    assert out["model"]["api"]["headers"] == ["Bearer ***"]
    assert out["note"] == "login with *** please"
    assert out["argv"] == ["jobs.generate", "model.api.key=***"]
    assert out["tuple"] == ["***", 3]
    assert cfg["note"].startswith("login with hf_")  # the input is not modified


def test_values_that_only_contain_sk_or_hf_inside_a_word_are_kept():
    for value in ("task-classification-v2", "mask-generation-abc", "pdf_parser_v2_long"):
        assert redact({"name": value}) == {"name": value}


def test_revision_pins_are_kept_but_bare_40_hex_strings_are_masked():
    sha = "0123456789abcdef0123456789abcdef01234567"
    out = redact({"model": {"revision": sha}, "git_commit": sha, "note": f"key {sha}"})
    assert out["model"]["revision"] == sha and out["git_commit"] == sha
    assert out["note"] == "key ***"  # e.g. a W&B API key


def test_generation_settings_survive_redaction():
    cfg = {"generation": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512},
           "model": {"reasoning_max_tokens": 2048, "tokenizer": None}}
    assert redact(cfg) == cfg


# ---- atomic writes ------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_atomic_writes_leave_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_json(tmp_path / "s.json", {"x": 1, "p": Path("/tmp")})
    t = pa.table({"a": [1, 2]})
    write_parquet(tmp_path / "deep" / "t.parquet", t)
    write_parquet(tmp_path / "deep" / "t.parquet", t)  # overwrite
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 1, "p": "/tmp"}
    assert pq.read_table(tmp_path / "deep" / "t.parquet").equals(t)
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []

    table_path = tmp_path / "t.parquet"
    write_parquet(table_path, pa.table({"a": [1]}))
    with pytest.raises(Exception):  # noqa: B017 - any pyarrow error will do
        write_parquet(table_path, {"not": "a table"})  # type: ignore[arg-type]
    assert pq.read_table(table_path).column("a").to_pylist() == [1]
    assert leftovers(tmp_path) == []


def test_file_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


# ---- RunDir -------------------------------------------------------------------------------------


def test_write_config_redacts(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.write_config({"model": {"api": {"api_key": "hunter2", "api_key_env": "OPENAI"}},
                     "generation": {"max_tokens": 64}})
    cfg = yaml.safe_load((rd / "config.yaml").read_text())
    assert cfg == {"model": {"api": {"api_key": "***", "api_key_env": "OPENAI"}},
                   "generation": {"max_tokens": 64}}
    assert leftovers(rd.path) == []


def test_manifest_has_code_version_packages_and_input_hashes(tmp_path, monkeypatch):
    data = tmp_path / "in.csv"
    data.write_text("question\nQ?\n")
    monkeypatch.setattr("sys.argv", ["jobs.generate", f"model.api.key={OPENAI_KEY}"])
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    rd = RunDir(tmp_path / "run")
    m = rd.write_manifest("generate", [str(data)], extra={"seed": 42})
    assert rd.read_json("manifest.json") == json.loads(json.dumps(m, default=str))
    assert m["job"] == "generate" and m["seed"] == 42
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert m["git_commit"] == head
        assert isinstance(m["git_dirty"], bool)
    else:
        assert m["git_commit"] is None
    assert set(rundir.PACKAGES) <= set(m["packages"])
    assert m["packages"]["pyarrow"] == pa.__version__
    assert m["packages"]["aligncultura"]
    assert m["inputs"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    assert m["slurm"]["SLURM_JOB_ID"] == "1234"
    assert OPENAI_KEY not in json.dumps(m)
    assert m["argv"] == ["jobs.generate", "model.api.key=***"]
    assert leftovers(rd.path) == []


def test_rundir_json_and_parquet_round_trip(tmp_path):
    rd = RunDir(tmp_path / "r")
    assert rd.read_json("summary.json") is None
    rd.write_json("summary.json", {"rows": 3})
    assert rd.read_json("summary.json") == {"rows": 3}
    rd.write_parquet("out/part-0.parquet", pa.table({"x": ["a"]}))
    assert pq.read_table(rd / "out/part-0.parquet").column("x").to_pylist() == ["a"]


def test_progress_line_counts_cached_rows_apart_and_rates_only_computed_tokens(capsys):
    from aligncultura.engine.progress import Progress

    bar = Progress("judge x", 4)
    batch = pa.table({"cached": [True, True, False, None], "output_tokens": [50, 50, 7, 3]})
    bar.update(4, batch=batch, tokens=5)
    bar.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("[judge x] 4/4 rows (100%), 2 cached, ") and "out tok/s" in line
    assert bar.tokens == 15  # 7 + 3 computed here, plus 5 passed in; the 100 cached not counted
