"""A real local Slurm for tests (helper module, not a test file).

    from slurm_env import ensure_slurm, wait_for_job

    def test_something(tmp_path):
        ensure_slurm()  # skips unless ALIGNCULTURA_SLURM_TESTS=1
        ...
        state = wait_for_job(job_id, timeout_s=300)

With ``ALIGNCULTURA_SLURM_TESTS=1``, the first call runs ``slurm/setup_local_slurm.sh`` (needs root:
it installs and starts Slurm; ~25 s from nothing, ~1 s when already running) and later calls reuse
the result. Without the variable the test is skipped. Under ``CI=true`` a Slurm that cannot start
fails the test instead of skipping it, so CI cannot go green by skipping everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

SETUP_SCRIPT = Path(__file__).resolve().parents[1] / "slurm" / "setup_local_slurm.sh"
ENV_VAR = "ALIGNCULTURA_SLURM_TESTS"
ACTIVE_STATES = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SIGNALING",
    "STAGE_OUT",
}
_result: dict[str, str | None] = {}


def ensure_slurm() -> None:
    """Make sure a working Slurm (sinfo, sbatch, sacct) is available, or skip/fail the test."""
    if os.environ.get(ENV_VAR) != "1":
        pytest.skip(
            f"real Slurm tests are opt-in: set {ENV_VAR}=1 (root: starts a local Slurm "
            f"with {SETUP_SCRIPT.relative_to(SETUP_SCRIPT.parents[1])})"
        )
    if "error" not in _result:
        _result["error"] = _start_slurm()
    error = _result["error"]
    if error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{ENV_VAR}=1 under CI but Slurm is not usable: {error}", pytrace=False)
        pytest.skip(f"Slurm is not usable: {error}")


def _start_slurm() -> str | None:
    """Run the setup script (once per session); return an error message or None."""
    if os.geteuid() != 0:
        # not root: use an existing Slurm if there is one (e.g. a cluster login node)
        if shutil.which("sinfo") and _ok(["sinfo", "-h"]) and _ok(["sacct", "-n", "-X"]):
            return None
        return f"not root, so {SETUP_SCRIPT} cannot install/start Slurm, and no Slurm answers"
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        return f"{SETUP_SCRIPT} did not finish in 900 s"
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return (
            f"{SETUP_SCRIPT} exited {proc.returncode} after {time.monotonic() - t0:.0f}s:\n{tail}"
        )
    return None


def _ok(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def job_state(job_id: str) -> str:
    """The job's state from sacct ("" while slurmdbd has no record yet), e.g. "COMPLETED"."""
    out = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", "--format=State"], capture_output=True, text=True
    ).stdout.strip()
    # "CANCELLED by 0" -> "CANCELLED"; a requeued job has one line per attempt: take the last
    return out.splitlines()[-1].split()[0] if out else ""


def wait_for_job(job_id: str, timeout_s: float = 300, poll_s: float = 0.5) -> str:
    """Poll sacct until the job leaves the active states; return its final state."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state and state not in ACTIVE_STATES:
            return state
        time.sleep(poll_s)
    subprocess.run(["scancel", job_id], capture_output=True)
    raise AssertionError(
        f"Slurm job {job_id} still {state or 'unknown'} after {timeout_s:.0f}s; "
        f"cancelled it (check: scontrol show job {job_id})"
    )
