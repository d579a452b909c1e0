"""Shared fixtures: real jobs run once per session through the public command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CULTURAX = ROOT.parent / "shared" / "data" / "CulturaX.csv"


def culturax_csv() -> Path:
    """The released CulturaX.csv: skip when absent, except under CI=true where it must exist."""
    if not CULTURAX.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CULTURAX} is missing under CI=true: CI must provide ../shared/data")
        pytest.skip(f"{CULTURAX} not present (the authors' released dataset lives in ../shared)")
    return CULTURAX


BEAVER_LABELS = [
    "animal_abuse", "child_abuse", "controversial_topics,politics",
    "discrimination,stereotype,injustice", "drug_abuse,weapons,banned_substance",
    "financial_crime,property_crime,theft", "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety", "non_violent_unethical_behavior",
    "privacy_violation", "self_harm", "sexually_explicit,adult_content",
    "terrorism,organized_crime", "violence,aiding_and_abetting,incitement"]


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A LlamaForSequenceClassification from the embedded weights, 14 labels, seeded head."""
    from aligncultura.engine.models import demo_classifier

    return demo_classifier(tmp_path_factory.mktemp("cls") / "tiny_beaver", BEAVER_LABELS)


def run_job(module: str, *args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m jobs.<module> args...` from another directory, as a user would."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "RAY_AUTH_MODE": "disabled",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", f"jobs.{module}", *args], cwd=cwd or "/tmp",
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def quickstart_benchmark(tmp_path_factory):
    """One real benchmark (embedded model as model and judge, vLLM on a local Ray)."""
    run_dir = tmp_path_factory.mktemp("bench") / "run"
    proc = run_job("benchmark", "experiment=quickstart", "dataset.limit=4",
                   "generation.max_tokens=32", f"run_dir={run_dir}", "wandb.group=tests",
                   f"cache_dir={run_dir.parent / 'cache'}")
    if proc.returncode != 0:
        pytest.fail(f"benchmark failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return run_dir, proc
