"""A multi-node Ray cluster on one machine, to try (and test) what a real cluster does.

Node i listens on 127.0.0.i with its own temp dir under ``--dir`` and, if asked, fake GPUs
(``--gpus``: Ray hands them out like real ones and sets CUDA_VISIBLE_DEVICES), plus a custom
resource ``node_i``. Jobs reach it through RAY_ADDRESS, as on a real cluster:

    python -m aligncultura.cluster.local_ray start --dir /tmp/acray --nodes 2 --cpus 2 --gpus 2
    RAY_ADDRESS=127.0.0.1:<port> python -m jobs.benchmark engine.replicas=2 ...
    python -m aligncultura.cluster.local_ray stop --dir /tmp/acray

`stop` ends exactly the processes this cluster started (those whose command line names its
temp dir), never another Ray on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATE = "cluster.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    proc = subprocess.run([ray, "start", *args], env=env, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"ray start {' '.join(args[:2])} failed: {tail[0][:300]}")


def start(root: str | Path, nodes: int = 2, cpus: float = 1, gpus: float = 0,
          head_cpus: float | None = None) -> dict[str, Any]:
    """Start `nodes` Ray nodes; returns {address, nodes: [{ip, temp_dir}], root}. `head_cpus`
    (default `cpus`): 0 makes a head that runs no task or actor, as on many clusters."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port, client_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    state: dict[str, Any] = {"address": address, "root": str(root), "nodes": [],
                             "client_port": client_port}
    (root / STATE).write_text(json.dumps(state))  # so that stop() finds the client server
    try:
        for i in range(1, nodes + 1):
            ip, temp = f"127.0.0.{i}", root / f"n{i}"
            n_cpus = head_cpus if i == 1 and head_cpus is not None else cpus
            common = ["--node-ip-address", ip, "--num-cpus", f"{n_cpus:g}", "--num-gpus",
                      f"{gpus:g}", "--resources", json.dumps({f"node_{i}": 1}),
                      "--temp-dir", str(temp), "--disable-usage-stats"]
            if i == 1:
                _ray_start(["--head", "--port", str(port), "--include-dashboard", "false",
                            "--ray-client-server-port", str(client_port), *common], env)
            else:
                _ray_start(["--address", address, *common], env)
            state["nodes"].append({"ip": ip, "temp_dir": str(temp)})
        (root / STATE).write_text(json.dumps(state))
        _wait_for_nodes(address, nodes)
    except BaseException:
        stop(root)
        raise
    return state


def _wait_for_nodes(address: str, n: int, timeout: float = 60.0) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True,
                             text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local Ray cluster at {address} did not show {n} nodes")
        time.sleep(1.0)


def processes(root: str | Path, client_port: int | None = None) -> list[Any]:
    """The processes of this cluster: those whose command line names one of its temp dirs (or
    its Ray client server's port), and their descendants (workers, agents)."""
    import psutil

    root = str(Path(root).resolve())
    marks = [root] + ([f"--port={client_port}"] if client_port else [])
    mine: dict[int, Any] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.pid != os.getpid() and any(m in part for part in cmd for m in marks):
                mine[p.pid] = p
                for child in p.children(recursive=True):
                    mine.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(mine.values())


def kill_node(root: str | Path, i: int) -> int:
    """kill -9 every process of node i (its raylet and workers): a lost node. Returns how many."""
    procs = processes(Path(root).resolve() / f"n{i}")
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except Exception:  # noqa: BLE001 - already gone
            pass
    return len(procs)


def stop(root: str | Path, timeout: float = 20.0) -> int:
    """Stop this cluster's processes by PID (TERM, then KILL) and remove its temp dirs."""
    import psutil

    state = Path(root) / STATE
    port = json.loads(state.read_text()).get("client_port") if state.exists() else None
    procs = processes(root, port)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(root, ignore_errors=True)
    return len(procs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aligncultura.cluster.local_ray",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("--dir", required=True, help="where the nodes' temp dirs go (short path)")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus", type=float, default=1)
    ap.add_argument("--gpus", type=float, default=0, help="fake GPUs per node")
    ap.add_argument("--head-cpus", type=float, default=None,
                    help="CPUs of node 1 (default --cpus; 0: a head that runs no work)")
    args = ap.parse_args(argv)
    if args.action == "stop":
        print(f"stopped {stop(args.dir)} process(es) of the cluster in {args.dir}")
        return 0
    try:
        state = start(args.dir, args.nodes, args.cpus, args.gpus, args.head_cpus)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.nodes} node(s) up; export RAY_ADDRESS={state['address']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
