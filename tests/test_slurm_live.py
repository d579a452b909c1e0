"""The sbatch script on a real Slurm: Ray boots inside the allocation, the driver connects to it,
and the job ends as soon as the driver is done. Opt in with ALIGNCULTURA_SLURM_TESTS=1 (root)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import time

import psutil
import pytest
from slurm_env import ensure_slurm, wait_for_job

from aligncultura.cluster.slurm import render_sbatch, submit

pytestmark = pytest.mark.slurm

DRIVER = (
    "import ray; ray.init(address='auto'); "
    "print('RESOURCES', dict(ray.cluster_resources()), flush=True); "
    "print('GCS', ray.get_runtime_context().gcs_address, flush=True)"
)


def _sacct(job_id: str, fields: str) -> str:
    return subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", f"--format={fields}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_ray_job_completes_on_real_slurm(tmp_path):
    ensure_slurm()
    run_dir = tmp_path / "run"
    script = render_sbatch(
        "generate",
        [],
        run_dir=str(run_dir),
        cpus_per_task=1,
        time="00:10:00",
        driver_cmd=[sys.executable, "-c", DRIVER],
    )
    t0 = time.monotonic()
    job_id = submit(script, run_dir)
    try:
        state = wait_for_job(job_id, timeout_s=300)
        wall = time.monotonic() - t0
        out = (run_dir / f"slurm-{job_id}.out").read_text()
        err = (run_dir / f"slurm-{job_id}.err").read_text()
        logs = f"--- slurm-{job_id}.out\n{out}\n--- slurm-{job_id}.err\n{err}"

        assert (run_dir / "sbatch.sh").read_text() == script
        assert state == "COMPLETED", f"job {job_id} ended {state}\n{logs}"
        assert _sacct(job_id, "ExitCode") == "0:0", logs

        # Ray ran inside the allocation, sized from it, on the per-job port
        resources = ast.literal_eval(re.search(r"^RESOURCES (.*)$", out, re.M).group(1))
        assert resources["CPU"] == 1.0, logs
        port = 6379 + int(job_id) % 1000
        assert re.search(rf"^GCS 127\.0\.0\.1:{port}$", out, re.M), logs

        # ...and was stopped right after the driver: no hang until the time limit
        assert "Ray stopped" in out, logs
        elapsed = _sacct(job_id, "ElapsedRaw")
        assert int(elapsed) < 120, f"job took {elapsed}s (limit 600): did it hang?\n{logs}"
        leftovers = [
            p.info["pid"]
            for p in psutil.process_iter(["pid", "cmdline"])
            if any(f"/tmp/ray_{job_id}/" in a for a in (p.info["cmdline"] or []))
        ]
        assert not leftovers, f"Ray processes of job {job_id} still running: {leftovers}"
        print(f"job {job_id}: {state} in {wall:.1f}s wall, {elapsed}s in Slurm")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
        shutil.rmtree(f"/tmp/ray_{job_id}", ignore_errors=True)
