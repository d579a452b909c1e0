"""W&B mirroring with the real wandb, offline and hermetic: every W&B directory under tmp_path.

An offline run is read back with `wandb leet inspect` (wandb.Api cannot read offline runs).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
import zlib
from pathlib import Path

import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from aligncultura import tracking
from aligncultura.config import WandbConfig
from aligncultura.tracking import log_run, read_offline_summary

SECRET = "sk-test-PLANTED123456"
FAKE_KEY = "FAKEKEY" + "0" * 40  # wandb 0.31 rejects keys shorter than 40 characters up front
WANDB_ENV = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME",
             "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_NAME",
             "WANDB_INIT_TIMEOUT", "WANDB_SILENT")
CONFIG = {
    "model": {"name": "tiny", "api": {"api_key": SECRET, "api_key_env": "OPENAI_API_KEY"}},
    "note": f"launched with key {SECRET} by mistake",
    "seed": 0,
}
SUMMARY = {"win_rate": {"value": 0.625, "ci_low": 0.5, "ci_high": None}, "n_prompts": 8,
           "status": f"ok {SECRET}"}


def _isolate(mp: pytest.MonkeyPatch, root: Path) -> Path:
    """No ambient W&B settings; HOME and the W&B dirs point into `root` (must stay empty)."""
    for key in WANDB_ENV:
        mp.delenv(key, raising=False)
    home = root / "home"
    home.mkdir(parents=True)
    mp.setenv("HOME", str(home))
    for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        mp.setenv(key, str(home / key.lower()))
    return home


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    return _isolate(monkeypatch, tmp_path)


def _png(path: Path, width: int = 4, height: int = 3) -> Path:
    """A tiny RGB PNG written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + b"\xc8\x1e\x1e" * width for _ in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One offline run shared by the read-back tests (each run costs ~1-3 s)."""
    root = tmp_path_factory.mktemp("wb")
    with pytest.MonkeyPatch.context() as mp:
        home = _isolate(mp, root)
        mp.setattr(sys, "argv", ["jobs/benchmark.py", f"model.api.api_key={SECRET}"])
        mp.setattr(tracking, "MAX_TABLE_ROWS", 3)
        env_before = {k: os.environ.get(k) for k in tracking._ENV_DIRS}
        run_dir = root / "run"
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"n_prompts": 8}))
        (run_dir / "outputs").mkdir()
        (run_dir / "outputs" / "part-0.parquet").write_bytes(b"PAR1 not really")
        table = pa.table({"id": [f"p{i}" for i in range(5)], "score": [0.1 * i for i in range(5)],
                          "tags": [["a"], [], ["b", "c"], None, ["d"]]})
        t0 = time.perf_counter()
        result = log_run(run_dir, WandbConfig(mode="offline", project="aligncultura-test"),
                         name="bench-tiny", job_type="benchmark", config=CONFIG,
                         summary=SUMMARY, tables={"responses": table}, group="sweep-1",
                         artifacts={"outputs": run_dir / "outputs",
                                    "summary": run_dir / "summary.json"},
                         images={"plots/demo": _png(run_dir / "demo.png")})
        seconds = time.perf_counter() - t0
        env_after = {k: os.environ.get(k) for k in tracking._ENV_DIRS}
        yield {"result": result, "run_dir": run_dir, "home": home, "seconds": seconds,
               "env": (env_before, env_after), "read": read_offline_summary(Path(result["dir"]))}


def test_offline_run_reads_back(offline_run):
    result, read = offline_run["result"], offline_run["read"]
    assert result["status"] == "ok", result
    assert result["mode"] == "offline"
    assert Path(result["dir"]).is_relative_to(offline_run["run_dir"] / "wandb")
    assert (offline_run["run_dir"] / "wandb_run_id.txt").read_text().strip() == result["run_id"]
    assert read["run_id"] == result["run_id"] and read["state"] == "finished"
    assert read["name"] == "bench-tiny" and read["project"] == "aligncultura-test"
    assert read["run"]["job_type"] == "benchmark" and read["run"]["run_group"] == "sweep-1"
    summary = read["summary"]
    assert summary["win_rate/value"] == 0.625 and summary["win_rate/ci_low"] == 0.5
    assert "win_rate/ci_high" not in summary  # None values are skipped
    assert summary["n_prompts"] == 8 and summary["status"] == "ok ***"
    assert {a["name"] for a in read["artifacts"]} >= {"outputs", "summary"}


def test_config_is_redacted(offline_run):
    config = offline_run["read"]["config"]
    assert config["model"]["api"]["api_key"] == "***"
    assert config["model"]["api"]["api_key_env"] == "OPENAI_API_KEY"  # a variable's name: kept
    assert config["note"] == "launched with key *** by mistake"
    assert config["seed"] == 0


def test_table_is_logged_and_capped(offline_run):
    summary = offline_run["read"]["summary"]
    assert summary["tables/responses/rows_total"] == 5
    assert summary["tables/responses/rows_logged"] == 3
    assert summary["responses"]["_type"] == "table-file" and summary["responses"]["nrows"] == 3
    media = list(Path(offline_run["result"]["dir"]).glob("files/media/table/responses_*.json"))
    assert len(media) == 1
    data = json.loads(media[0].read_text())
    assert data["columns"] == ["id", "score", "tags"] and len(data["data"]) == 3
    assert data["data"][2][2] == '["b", "c"]'  # nested cells become JSON text


def test_image_is_logged_as_wandb_image(offline_run):
    image = offline_run["read"]["summary"]["plots/demo"]
    assert image["_type"] == "image-file" and image["format"] == "png"
    assert (image["width"], image["height"]) == (4, 3)
    media = Path(offline_run["result"]["dir"]) / "files" / image["path"]
    assert media.read_bytes() == (offline_run["run_dir"] / "demo.png").read_bytes()


def test_secret_never_written_and_nothing_leaves_run_dir(offline_run):
    files = _files(offline_run["run_dir"])
    assert any(p.suffix == ".wandb" for p in files)
    leaked = [p for p in files if b"PLANTED123456" in p.read_bytes()]
    assert leaked == [], leaked
    assert _files(offline_run["home"]) == []  # no ~/.config/wandb, ~/.cache/wandb, ...
    before, after = offline_run["env"]
    assert before == after  # WANDB_*_DIR restored


def test_rerun_resumes_same_run(isolated, tmp_path):
    run_dir = tmp_path / "run"
    cfg = WandbConfig(mode="offline", project="aligncultura-test")
    kwargs = dict(name="gen", job_type="generate", config={"seed": 1})
    first = log_run(run_dir, cfg, summary={"attempt": 1}, **kwargs)
    t0 = time.perf_counter()
    second = log_run(run_dir, cfg, summary={"attempt": 2}, **kwargs)
    assert time.perf_counter() - t0 < 15
    assert first["status"] == second["status"] == "ok"
    assert second["run_id"] == first["run_id"]
    assert second["dir"] != first["dir"]  # offline: one directory per attempt, same run id
    read = read_offline_summary(Path(second["dir"]))
    assert read["run_id"] == first["run_id"] and read["summary"]["attempt"] == 2
    assert read["run"]["job_type"] == "generate"


def test_disabled_does_nothing(isolated, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    t0 = time.perf_counter()
    assert log_run(run_dir, WandbConfig(mode="disabled"), name="x", job_type="generate",
                   config=CONFIG, summary=SUMMARY) == {"status": "disabled"}
    assert time.perf_counter() - t0 < 0.1
    assert list(run_dir.iterdir()) == []


@pytest.mark.parametrize("blocker", ["wandb/wandb", "wandb_data", "afile"])
def test_unwritable_dir_fails_softly(isolated, tmp_path, capsys, blocker):
    """A regular file where W&B needs a directory: fails for root too (chmod would not)."""
    run_dir = tmp_path / "run"
    (run_dir / blocker).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / blocker).write_text("a regular file")
    (run_dir / "summary.json").write_text('{"n": 1}')
    target = run_dir / "afile" / "x" if blocker == "afile" else run_dir
    env_before = {k: os.environ.get(k) for k in tracking._ENV_DIRS}
    result = log_run(target, WandbConfig(mode="offline"), name="x", job_type="generate",
                     config={}, summary={"n": 1})
    assert result["status"] == "failed", result
    assert "\n" not in result["error"] and result["error"]
    assert str(target) in result["hint"] and "wandb sync" in result["hint"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: W&B logging failed")
    assert (run_dir / "summary.json").read_text() == '{"n": 1}'
    assert (run_dir / blocker).read_text() == "a regular file"
    assert {k: os.environ.get(k) for k in tracking._ENV_DIRS} == env_before


@pytest.mark.slow
def test_online_unreachable_server_fails_in_bounded_time(isolated, tmp_path, monkeypatch, capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    run_dir = tmp_path / "run"
    t0 = time.perf_counter()
    result = log_run(run_dir, WandbConfig(mode="online"), name="x", job_type="generate",
                     config={}, summary={"n": 1})
    seconds = time.perf_counter() - t0
    assert result["status"] == "failed", result
    assert seconds < 40, seconds
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not [p for p in _files(run_dir) if FAKE_KEY.encode() in p.read_bytes()]


def test_plain_config_and_flatten():
    cfg = OmegaConf.create({"model": {"api": {"api_key": SECRET}}, "x": "${model.api.api_key}"})
    assert tracking._plain(cfg) == {"model": {"api": {"api_key": SECRET}}, "x": SECRET}
    assert tracking._plain(WandbConfig()) == {"mode": "offline", "project": "aligncultura",
                                              "entity": None, "group": None}
    assert tracking.flatten({"a": {"b": {"c": 1}, "d": None}, "e": [1, 2]}) == {"a/b/c": 1,
                                                                               "e": [1, 2]}
