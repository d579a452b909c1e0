"""End to end: jobs.generate through real vLLM (embedded model) on a local Ray."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import run_job

from aligncultura.engine.requests import GENERATION_SCHEMA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gen") / "run"
    proc = run_job("generate", "experiment=quickstart", "dataset.limit=3", "generation.n=2",
                   "generation.max_tokens=24", f"run_dir={run_dir}",
                   f"cache_dir={run_dir.parent / 'cache'}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir, proc


def test_outputs_and_accounting(generated):
    run_dir, proc = generated
    for name in ("config.yaml", "manifest.json", "summary.json", "generations.parquet"):
        assert (run_dir / name).exists(), name
    gens = pq.read_table(run_dir / "generations.parquet")
    assert gens.schema.equals(GENERATION_SCHEMA)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["rows"]
    assert rows["read"] == rows["used"] + rows["quarantined"] == 60
    assert rows["selected"] == 3
    assert gens.num_rows == rows["selected"] * 2 == summary["generations"]["written"]
    assert sorted(set(gens.column("sample_index").to_pylist())) == [0, 1]
    responses = gens.column("response").to_pylist()
    assert all(r and r.strip() for r in responses)
    assert len(set(responses)) >= 4  # distinct samples, not one answer copied
    assert all(t > 0 for t in gens.column("output_tokens").to_pylist())
    assert all(lat > 0 for lat in gens.column("latency_s").to_pylist())


def test_summary_efficiency_and_manifest(generated):
    run_dir, proc = generated
    eff = json.loads((run_dir / "summary.json").read_text())["efficiency"]
    for key in ("output_tok_s", "input_tok_s", "latency_p50_s", "latency_p95_s",
                "engine_start_s", "wall_s", "cpu_s", "peak_rss_mb"):
        assert eff[key] is not None and eff[key] >= 0, key
    assert eff["output_tok_s"] > 0 and eff["engine_start_s"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["packages"]["ray"] and manifest["inputs"]
    assert "generate:" in proc.stdout and "[generate]" in proc.stderr  # summary + progress


def test_multirun_one_dir_per_job(tmp_path):
    """A local Hydra multirun; engine=local keeps one engine for both jobs in one process."""
    proc = run_job("generate", "-m", "generation.temperature=0.2,0.7", "engine=local",
                   "experiment=quickstart", "dataset.limit=2", "generation.max_tokens=8", "cache_dir=off",
                   f"hydra.sweep.dir={tmp_path}", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "summary.json").exists())
    assert len(dirs) == 2
    temps = {json.loads((d / "summary.json").read_text())["job"] for d in dirs}
    assert temps == {"generate"}
    # each job's library lines in its own run dir's log; the one engine (in this process)
    # logged while the first job ran
    assert all((d / "logs" / "job.log").exists() for d in dirs)
    assert "vllm" in (dirs[0] / "logs" / "job.log").read_text().lower()
    assert not [x for x in proc.stdout.splitlines() if " INFO " in x or "WARNING" in x]


def test_seeded_batch_larger_than_one_prefill_step(tmp_path):
    """Regression: 24 seeded requests whose prompts total > 4096 tokens (vLLM's per-step token
    budget; prefix caching off, or the shared system prompt would be computed once). With
    chunked prefill, vLLM 0.32's CPU runner failed the whole batch ("CPU Generator does not use
    offset") and the engine then spun forever; engine=cpu turns it off. Checked to fail with
    `engine.engine_kwargs.enable_chunked_prefill=true` added."""
    system = "You are a careful assistant for questions about cultural heritage. " * 20
    proc = run_job("generate", "engine=local", "experiment=quickstart", "dataset.limit=24",
                   "generation.max_tokens=2", f"model.system_prompt='{system.strip()}'",
                   "+engine.engine_kwargs.enable_prefix_caching=false",
                   "cache_dir=off", "progress=false", f"run_dir={tmp_path / 'r'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "engine batch" not in proc.stderr, proc.stderr[-3000:]
    gens = pq.read_table(tmp_path / "r" / "generations.parquet")
    assert gens.num_rows == 24
    assert set(gens.column("status").to_pylist()) == {"ok"}
    assert sum(gens.column("input_tokens").to_pylist()) > 4096


def test_dry_run_starts_no_engine(tmp_path):
    proc = run_job("generate", "dry_run=true", f"run_dir={tmp_path / 'x'}")
    assert proc.returncode == 0
    assert "plan: 60 prompts" in proc.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["dataset.path=/does/not/exist.csv"], "does not exist"),
        (["model=local", "model.path=/no/such/ckpt"], "no such directory"),
        (["model=nope"], "available:"),
        (["generation.temprature=0.1"], "temprature"),
    ],
)
def test_bad_input_is_one_line(args, needle, tmp_path):
    proc = run_job("generate", *args, f"run_dir={tmp_path / 'r'}")
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
