"""Two Slurm nodes on one machine, for real: `slurm/setup_local_slurm.sh --nodes 2` puts a slurmd
in each of two network namespaces (n1 = 10.77.0.2, n2 = 10.77.0.3, a bridge to the controller at
10.77.0.1), beside the one-node cluster the other Slurm tests use, which is left alone.

One `python -m aligncultura.slurm submit --nodes 2` job boots the Ray head on n1 and a worker on
n2 and runs jobs.generate with two engine replicas, one per node; then a Hydra multirun through
the submitit launcher runs one array task per node. The module starts the two-node cluster and
tears it down (no process left in its namespaces, no daemon of it running).

Opt in like the other Slurm tests (ALIGNCULTURA_SLURM_TESTS=1, which .ci/run sets); needs root
and network namespaces, else skipped, except under CI=true where they must work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from slurm_env import ACTIVE_STATES, ENV_VAR

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "slurm" / "setup_local_slurm.sh"
TEARDOWN = ROOT / "slurm" / "teardown_local_slurm.sh"
CONF = "/etc/slurm/two_nodes/slurm.conf"
NODE_IP = {"n1": "10.77.0.2", "n2": "10.77.0.3"}
NAMESPACES = ["acslurm-n1", "acslurm-n2"]
CTLD_PID = Path("/run/slurmctld-2n.pid")
CI = os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(why: str) -> None:
    if CI and os.geteuid() == 0:
        pytest.fail(f"CI=true as root, but the two-node Slurm cannot run: {why}", pytrace=False)
    pytest.skip(why)


def _alive(pidfile: Path, name: str) -> bool:
    try:
        return psutil.Process(int(pidfile.read_text().split()[0])).name() == name
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


def _ns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:150]}")
        except psutil.Error:
            pass
    return out


def _job_processes(pids: list[int]) -> list[int]:
    """Everything in the namespaces but the slurmds: what jobs left behind."""
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).name() != "slurmd":
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture(scope="module")
def env():
    """The two-node cluster for this module; the environment that talks to it."""
    if os.environ.get(ENV_VAR) != "1" and not CI:
        pytest.skip(f"real Slurm tests are opt-in: set {ENV_VAR}=1 (root: starts a local "
                    "two-node Slurm with slurm/setup_local_slurm.sh --nodes 2)")
    if os.geteuid() != 0:
        _skip_or_fail("needs root: it creates network namespaces and starts Slurm daemons")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        _skip_or_fail(f"network namespaces are not available (unshare --net: "
                      f"{probe.stderr.strip()[:200]})")

    was_up = _alive(CTLD_PID, "slurmctld")  # someone's own two-node cluster: leave it running
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SETUP), "--nodes", "2"], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        if not was_up:
            subprocess.run(["bash", str(TEARDOWN), "--nodes", "2"], capture_output=True,
                           timeout=300)
        pytest.fail(f"setup_local_slurm.sh --nodes 2 exited {proc.returncode}:\n"
                    f"{(proc.stdout + proc.stderr)[-3000:]}", pytrace=False)
    print(f"two-node Slurm up in {time.monotonic() - t0:.1f}s")
    full = {**os.environ, "SLURM_CONF": CONF, "WANDB_MODE": "offline",
            "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    full.pop("RAY_ADDRESS", None)
    try:
        yield full
        # every job is over: nothing of theirs may stay in the nodes (Ray workers of a finished
        # job take a few seconds to exit)
        deadline = time.monotonic() + 60
        while (left := _job_processes([p for ns in NAMESPACES for p in _ns_pids(ns)])) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes left in the nodes after the jobs: {_describe(left)}"
    finally:
        if not was_up:
            t1 = time.monotonic()
            down = subprocess.run(["bash", str(TEARDOWN), "--nodes", "2"], capture_output=True,
                                  text=True, timeout=300)
            assert down.returncode == 0, down.stdout + down.stderr
            print(f"two-node Slurm down in {time.monotonic() - t1:.1f}s")
            assert not _alive(CTLD_PID, "slurmctld")
            for node in NODE_IP:
                assert not _alive(Path(f"/run/slurmd-2n-{node}.pid"), "slurmd")
            listed = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                    text=True).stdout
            assert not [ns for ns in NAMESPACES if ns in listed], listed
            stray = [p.pid for p in psutil.process_iter(["cmdline"])
                     if any("two_nodes/slurm.conf" in a for a in (p.info["cmdline"] or []))]
            assert not stray, f"two-node Slurm processes still running: {_describe(stray)}"


def sacct(job: str, env: dict, fields: str) -> list[str]:
    out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", f"--format={fields}"],
                         env=env, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def wait_for_job(job: str, env: dict, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        lines = sacct(job, env, "State")
        state = lines[-1].split()[0] if lines else ""
        if state and state not in ACTIVE_STATES:
            return state
        time.sleep(1)
    subprocess.run(["scancel", job], env=env, capture_output=True)
    raise AssertionError(f"job {job} still {state or 'unknown'} after {timeout_s:.0f}s")


def test_one_job_over_two_nodes_runs_one_replica_per_node(env, tmp_path):
    """Ray head on n1, worker on n2 (each with its own temp dir under /tmp/ray_<job>/), and the
    two engine replicas of jobs.generate land one on each node's address."""
    run_dir = tmp_path / "run"
    rows = 4
    # the replicas start at different speeds: Ray Data waits for both before handing out the
    # 4 one-row blocks, so a replica that is ready first does not take them all
    job_env = {**env, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "aligncultura.slurm", "submit", "--job", "generate",
         "--nodes", "2", "--cpus-per-task", "2", "--time", "00:20:00", "--ray-bootstrap-home",
         "--run-dir", str(run_dir), "--",
         "experiment=quickstart", "engine.replicas=2", f"dataset.limit={rows}",
         "generation.max_tokens=16", "engine.batch_size=1", "wandb.mode=disabled",
         f"cache_dir={tmp_path / 'cache'}"],
        cwd="/tmp", env=job_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.split("job_id=")[1].split()[0]
    try:
        state = wait_for_job(job, env, 900)
        wall = time.monotonic() - t0
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True)
    out = (run_dir / f"slurm-{job}.out").read_text()
    logs = f"{out[-4000:]}\n--- err\n{(run_dir / f'slurm-{job}.err').read_text()[-4000:]}"
    try:
        assert state == "COMPLETED", logs
        assert sacct(job, env, "NodeList,ExitCode") == ["n[1-2]|0:0"], logs
        assert f"starting Ray head on n1 ({NODE_IP['n1']}:" in out, logs
        assert "all 2 Ray nodes joined" in out and "Ray stopped" in out, logs
        assert f"Local node IP: {NODE_IP['n2']}" in out, logs  # the worker, on n2's address
        # one Ray temp dir per node, side by side on the shared /tmp
        assert {p.name for p in Path(f"/tmp/ray_{job}").iterdir()} >= {"n1", "n2"}

        summary = json.loads((run_dir / "summary.json").read_text())
        gens = summary["generations"]
        assert (gens["written"], gens["ok"], gens["computed"]) == (rows, rows, rows), gens
        reps = summary["efficiency"]["by_replica"]
        assert sorted(r["node"] for r in reps.values()) == sorted(NODE_IP.values()), reps
        assert all(r["rows"] > 0 and r["output_tokens"] > 0 for r in reps.values()), reps
        assert sum(r["rows"] for r in reps.values()) == rows, reps
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["slurm"]["SLURM_JOB_NODELIST"] == "n[1-2]", manifest["slurm"]

        # this job's Ray is gone from both nodes (its workers may take a moment to exit)
        deadline = time.monotonic() + 15
        while (leftovers := [p.pid for p in psutil.process_iter(["cmdline"]) if any(
                f"/tmp/ray_{job}/" in a for a in (p.info["cmdline"] or []))]) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not leftovers, f"Ray processes of job {job}: {_describe(leftovers)}"
        elapsed = sacct(job, env, "ElapsedRaw")[0]
        print(f"job {job}: {state} on n[1-2] in {wall:.0f}s wall ({elapsed}s in Slurm); "
              f"replicas {reps}")
    finally:
        for tmp in (f"/tmp/ray_{job}", f"/tmp/ray_home_{job}"):
            shutil.rmtree(tmp, ignore_errors=True)


def test_hydra_multirun_through_submitit_runs_a_task_on_each_node(env, tmp_path):
    """`-m dataset.limit=1,2 hydra/launcher=slurm`: two array tasks of 2 CPUs, one per node
    (each node has 2), each with its own local Ray inside its node's namespace."""
    sweep = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.generate", "-m", "hydra/launcher=slurm",
         "experiment=quickstart", "dataset.limit=1,2", "generation.max_tokens=8",
         "wandb.mode=disabled", f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"],
        cwd="/tmp", env=env, capture_output=True, text=True, timeout=900)
    tasks = sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
    try:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}"
                         for p in sorted((sweep / ".submitit").glob("*/*_log.*")))
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}"
        assert len(tasks) == 2, tasks
        # the launcher returns once the results exist; the jobs end a few seconds later
        assert [wait_for_job(t, env, 120) for t in tasks] == ["COMPLETED"] * 2, logs
        wall = time.monotonic() - t0
    finally:
        if tasks:
            subprocess.run(["scancel", tasks[0].split("_")[0]], env=env, capture_output=True)
    nodes = {t: sacct(t, env, "NodeList")[0] for t in tasks}
    assert sorted(nodes.values()) == ["n1", "n2"], nodes
    for num, rows in [(0, 1), (1, 2)]:
        run_dir = sweep / str(num)
        summary = json.loads((run_dir / "summary.json").read_text())
        gens = summary["generations"]
        assert (gens["written"], gens["ok"]) == (rows, rows), (run_dir, gens)
        # no RAY_ADDRESS in a submitit job: its replica ran on a local Ray on the node's loopback
        reps = summary["efficiency"]["by_replica"]
        assert [r["node"] for r in reps.values()] == ["127.0.0.1"], reps
        slurm = json.loads((run_dir / "manifest.json").read_text())["slurm"]
        assert slurm["SLURM_JOB_NODELIST"] == nodes[f"{slurm['SLURM_ARRAY_JOB_ID']}_{num}"]
    print(f"sweep {tasks}: COMPLETED on {nodes} in {wall:.0f}s")
