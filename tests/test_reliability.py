"""Reliability: row-level resume after kill -9 and signals, what the cache key covers.

The end-to-end test runs the real benchmark (embedded model as model and judge, vLLM on a
local Ray) through the command line, kills it, interrupts it and resumes it, and compares the
result with an uninterrupted run (the session's `quickstart_benchmark`, same settings).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from aligncultura.benchmark.metrics import compute_metrics
from aligncultura.engine.cache import CACHE_SCHEMA, RowCache, salt
from aligncultura.engine.models import ResolvedModel

# the session fixture's command (an uninterrupted run), plus batches of one row so that
# every row is persisted on its own
BENCH = ["experiment=quickstart", "dataset.limit=4", "generation.max_tokens=32",
         "wandb.group=tests"]
METRICS = ("win_rate", "safety_score", "truthful_informative", "joint_hhh",
           "cultural_failure_rate")


# ---- the cache, directly (no engine) ------------------------------------------------------

def _row(key: str, text: str, i: int = 0) -> dict:
    return {"request_id": "r::gen0", "output_index": i, "text": text, "status": "ok", "key": key,
            "finish_reason": "stop", "cached": False}


def test_two_writers_of_one_key_serve_one_part(tmp_path):
    """Array tasks sharing a cache dir may both compute a key: a reader gets one part's
    samples, never both (which would duplicate generation rows)."""
    a, b = RowCache(tmp_path, "salt"), RowCache(tmp_path, "salt")
    a.put([_row("k1", "from a", 0), _row("k1", "from a", 1), _row("k2", "only a")])
    b.put([_row("k1", "from b", 0), _row("k1", "from b", 1)])
    reader = RowCache(tmp_path, "salt")
    got = reader.get("k1")
    assert len(got) == 2 and len({r["text"] for r in got}) == 1
    assert sorted(r["output_index"] for r in got) == [0, 1]
    assert reader.get("k2")[0]["text"] == "only a"
    assert len(list(reader.dir.glob("part-*.parquet"))) == 2


def test_failed_half_written_and_foreign_parts_never_served(tmp_path):
    cache = RowCache(tmp_path, "salt")
    cache.put([{**_row("bad", "x"), "status": "failed"}])  # failures are retried, not cached
    assert not cache.dir.exists()
    cache.put([_row("good", "kept")])
    (cache.dir / ".part-dead.parquet.tmp").write_bytes(b"PAR1 half")  # killed mid-write
    (cache.dir / "part-damaged.parquet").write_bytes(b"not parquet")
    fresh = RowCache(tmp_path, "salt")
    assert fresh.get("good")[0]["text"] == "kept" and fresh.get("bad") is None
    table = pq.read_table(next(p for p in cache.dir.glob("part-*") if "damaged" not in p.name))
    assert table.schema.equals(CACHE_SCHEMA)


def test_key_covers_template_files_tokenizer_and_numerics(tmp_path):
    """The salt changes with the chat template file, the tokenizer and the dtype; not with
    settings that only change speed (batch size, gpu memory)."""
    from omegaconf import OmegaConf

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    model = ResolvedModel("m", str(folder), None, None, None, "local", "local:ckpt:1")
    mcfg = OmegaConf.create({"engine_kwargs": {}, "chat_template_kwargs": {}})
    ecfg = OmegaConf.create({"engine_kwargs": {"dtype": "float32"}, "batch_size": 64})
    base = salt(model, mcfg, ecfg)
    assert salt(model, mcfg, OmegaConf.merge(ecfg, {"batch_size": 2, "engine_kwargs": {
        "gpu_memory_utilization": 0.5}})) == base
    assert salt(model, mcfg, OmegaConf.merge(ecfg, {"engine_kwargs": {"dtype": "bfloat16"}})) != base
    assert salt(model, OmegaConf.merge(mcfg, {"chat_template_kwargs": {"enable_thinking": False}}),
                ecfg) != base
    tok = ResolvedModel("m", str(folder), str(tmp_path), None, None, "local", "local:ckpt:1")
    assert salt(tok, mcfg, ecfg) != base
    (folder / "chat_template.jinja").write_text("{{ messages }} edited")
    assert salt(model, mcfg, ecfg) != base


# ---- the real job, killed, interrupted and resumed ----------------------------------------

def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "RAY_AUTH_MODE": "disabled",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "jobs.benchmark", *args], cwd="/tmp", env=env,
                            stdout=open(log.with_suffix(".out"), "w"),
                            stderr=open(log.with_suffix(".err"), "w"), start_new_session=True)


def _session(pid: int) -> list[tuple[int, str]]:
    """(pid, command) of the processes in the session the job started (Ray's included)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    procs = []
    for line in out.splitlines():
        p, sid, cmd = (line.split(None, 2) + [""])[:3]
        if sid == str(pid):
            procs.append((int(p), cmd))
    return procs


def _reap(proc: subprocess.Popen) -> None:
    """End what the job left behind (its own session only, by pid)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for _ in range(20):
        left = _session(proc.pid)
        if not left:
            return
        time.sleep(0.5)
    for p, _ in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait(cond, proc: subprocess.Popen, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the job ended ({proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            _reap(proc)
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.2)


def _parts(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.glob("*/part-*.parquet"))}


def _cached_gens(cache: Path) -> dict[str, str]:
    """row_id -> response text of the generation rows persisted in the cache."""
    rows = [r for p in sorted(cache.glob("*/part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {r["row_id"]: r["text"] for r in rows if r["task"] == "generate"}


def _verdicts(rows: list[dict]) -> dict[tuple, tuple]:
    return {(r["row_id"], r["sample_index"], r["criterion"], r["order"]): (r["status"], r["verdict"])
            for r in rows}


def _interrupt(args, rd: Path, log: Path, sig: signal.Signals, group: bool = False
               ) -> subprocess.CompletedProcess:
    """Start the job, wait until it runs on Ray (its guard is on), send `sig`, check it stops.
    `group`: to every process of the job, its Ray included, as `scancel --signal` does; the
    driver then sits in Ray's wait for its engine actors, which never comes back."""
    t0 = time.time()
    proc = _start(args, log)
    try:
        _wait(lambda: (rd / "config.yaml").exists() and (rd / "config.yaml").stat().st_mtime > t0
              and any("ray::" in cmd for _, cmd in _session(proc.pid)), proc, 600,
              "Ray worker of the job")
        sent = time.monotonic()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=90)
        took = time.monotonic() - sent
    finally:
        _reap(proc)
    err = log.with_suffix(".err").read_text()
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err
    last = [x for x in err.splitlines() if x.startswith("error:")]
    assert last and last[-1].startswith(f"error: interrupted by {sig.name}: finished rows are "
                                        "cached; rerun the same command"), err[-2000:]
    assert json.loads((rd / "interrupted.json").read_text())["signal"] == sig.name
    assert took < 60, f"{sig.name}: took {took:.0f} s to stop"
    return proc


@pytest.mark.slow
def test_kill9_signals_then_resume_loses_nothing(tmp_path, quickstart_benchmark):
    ref_dir, _ = quickstart_benchmark
    cache, rd = tmp_path / "cache", tmp_path / "run"
    args = [*BENCH, "engine.batch_size=1", f"cache_dir={cache}", f"run_dir={rd}"]

    # 1. kill -9 the whole process group once the first batch is persisted
    proc = _start(args, tmp_path / "a")
    try:
        _wait(lambda: _parts(cache), proc, 900, "cache part file")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _reap(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (rd / "generations.parquet").exists()
    before, persisted = _parts(cache), _cached_gens(cache)
    assert persisted

    # 2./3. SIGTERM and SIGUSR2 while running on Ray: one line, exit 2, interrupted.json
    _interrupt(args, rd, tmp_path / "b", signal.SIGTERM)
    _interrupt(args, rd, tmp_path / "c", signal.SIGUSR2, group=True)
    now = _parts(cache)
    assert all(now[name] == data for name, data in before.items()), "a persisted part changed"
    persisted = _cached_gens(cache)

    # 4. the same command again finishes, reusing every persisted row unchanged
    proc = _start(args, tmp_path / "d")
    try:
        proc.wait(timeout=1200)
    finally:
        _reap(proc)
    out = (tmp_path / "d.out").read_text()
    assert proc.returncode == 0, (tmp_path / "d.err").read_text()[-3000:]
    summary = json.loads((rd / "summary.json").read_text())
    g = summary["generations"]
    assert g["cached"] == len(persisted) > 0 and g["computed"] == 4 - len(persisted)
    # every one of the 4 rows ends judged: ok, or unscored where the demo judge wrote a verdict
    # that cannot be scored (say, "safe" with a harm category); none failed or went missing
    line = next(x for x in out.splitlines() if x.startswith("rows: 60 read = not_selected 56, "))
    states = dict(part.rsplit(" ", 1) for part in line.split(" = ", 1)[1].split(", "))
    assert set(states) <= {"not_selected", "ok", "unscored"}, line
    assert int(states.get("ok", 0)) + int(states.get("unscored", 0)) == 4, line
    gens = pq.read_table(rd / "generations.parquet").to_pylist()
    keys = [(r["row_id"], r["sample_index"]) for r in gens]
    assert len(keys) == len(set(keys)) == 4, "a row was lost or duplicated"
    resp = {r["row_id"]: r["response"] for r in gens}
    assert all(resp[rid] == text for rid, text in persisted.items()), "a reused row changed"
    judged = pq.read_table(rd / "judgments.parquet")
    jkeys = [(r["row_id"], r["sample_index"], r["criterion"], r["order"])
             for r in judged.to_pylist()]
    assert len(jkeys) == len(set(jkeys)) == 20

    # the same row set as the uninterrupted run, and metrics recomputed from the final rows
    ref = pq.read_table(ref_dir / "generations.parquet").to_pylist()
    ref_judged = pq.read_table(ref_dir / "judgments.parquet").to_pylist()
    assert sorted(keys) == sorted((r["row_id"], r["sample_index"]) for r in ref)
    assert sorted(jkeys) == sorted((r["row_id"], r["sample_index"], r["criterion"], r["order"])
                                   for r in ref_judged)
    sample = [json.loads(x) for x in
              (ROOT / "aligncultura/data/sample_data/culturax_sample.jsonl").read_text().splitlines()]
    row_meta = {s["id"]: s["class_id"] if s["class_id"] is not None else 41 for s in sample}
    again = compute_metrics(judged, {r: row_meta[r] for r in resp}, n_resamples=1000, seed=0)
    reported = json.loads((rd / "metrics.json").read_text())
    for name in METRICS:
        for field in ("value", "ci_low", "ci_high", "n", "unscored"):
            assert again[name][field] == pytest.approx(reported[name][field]), (name, field)
    ref_resp = {r["row_id"]: r["response"] for r in ref}
    ref_verdict = _verdicts(ref_judged)
    reused = [rid for rid in resp if rid in persisted]
    fresh = [rid for rid in resp if rid not in persisted]
    report = {"reused": len(reused), "recomputed_after_kill": len(fresh),
              "reused_differ_from_uninterrupted": sum(resp[r] != ref_resp[r] for r in reused),
              "recomputed_differ_from_uninterrupted": sum(resp[r] != ref_resp[r] for r in fresh),
              "verdicts_differ_from_uninterrupted": sum(
                  v != ref_verdict[k] for k, v in _verdicts(judged.to_pylist()).items()),
              "judgments": len(jkeys)}
    print(f"\nresume vs uninterrupted run (batch 1 vs 64): {json.dumps(report)}")
    (tmp_path / "resume_report.json").write_text(json.dumps(report))

    # 5. a finished run, re-run: a no-op that starts no engine
    again_proc = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", *args], cwd="/tmp", capture_output=True,
        text=True, timeout=600, env={**os.environ, "WANDB_MODE": "offline",
                                     "RAY_AUTH_MODE": "disabled"})
    assert again_proc.returncode == 0, again_proc.stderr[-2000:]
    assert "all 24 rows cached: no engine started" in again_proc.stdout
    assert "Started a local Ray instance" not in again_proc.stderr
    s2 = json.loads((rd / "summary.json").read_text())
    assert s2["generations"]["computed"] == s2["judgments"]["computed"] == 0
    assert pq.read_table(rd / "generations.parquet").to_pylist() == gens


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_a_signal_whose_exception_python_swallowed_still_stops_the_job(tmp_path):
    """A handler that runs inside a finalizer has its Interrupted dropped by Python ("Exception
    ignored in ..."); the guard must still stop the job (seen once in the Slurm sweep test)."""
    from aligncultura.errors import JobError
    from aligncultura.rundir import RunDir, guard_signals, raise_if_interrupted

    class SignalsInFinalizer:
        def __init__(self, sig: signal.Signals):
            self.sig = sig

        def __del__(self):
            os.kill(os.getpid(), self.sig)
            for _ in range(10_000):  # the Python-level handler runs between these bytecodes
                pass

    rd = RunDir(tmp_path)
    after: list[str] = []
    with pytest.raises(JobError, match="interrupted by SIGUSR1: finished rows are cached"):
        with guard_signals(rd):
            obj = SignalsInFinalizer(signal.SIGUSR1)
            del obj  # the handler's exception is swallowed here
            after.append("ran on")  # as the sweep test's job did ...
            raise_if_interrupted()  # ... until the next batch boundary
            after.append("too far")
    assert after == ["ran on"]
    assert json.loads((tmp_path / "interrupted.json").read_text())["signal"] == "SIGUSR1"
    raise_if_interrupted()  # cleared once handled: nothing pending for the next job
    with pytest.raises(JobError, match="interrupted by SIGUSR2"):  # checked when the block ends
        with guard_signals(rd):
            obj = SignalsInFinalizer(signal.SIGUSR2)
            del obj
    assert json.loads((tmp_path / "interrupted.json").read_text())["signal"] == "SIGUSR2"
