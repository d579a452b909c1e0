"""Our engine stage against `ray.data.llm`'s `build_processor` on the same prompts (issue 16).

    RAY_AUTH_MODE=disabled python bench/bench_raydata_llm.py [--prompts 48 --max-tokens 64
        --batch-size 8 --replicas 1 2 --rounds 1 --json out.json]

Both sides get the same N prompts of the embedded sample, chat-templated by the model's own
template (default system prompt), the same sampling (the project's `sampling_spec` with
`generation.temperature=0`: greedy, so outputs can be compared row by row), the same model (the
embedded SmolLM2-135M, resolved by aligncultura/engine/models.py) and the engine settings of
conf/engine/cpu.yaml (engine_kwargs and env), the same batch size, thread count and replica
count, each against a fresh local Ray cluster (aligncultura/cluster/local_ray.py: 1 node of 2
CPUs for 1 replica, 2 nodes of 2 CPUs for 2; every node shares this machine's 2 cores):

- ours: `python -m jobs.generate` (row cache off), the whole job as a user runs it;
- ray.data.llm: this script's `--side raydata` child, a hand-written `build_processor` pipeline
  over the same request table (`generation_requests`), with the least changes that make it run
  on a CPU-only Ray cluster (each found by running it; see `raydata_processor`).

Per run: wall time of the driver process, engine start (the engine actor's constructor,
`__init__` RUNNING -> FINISHED in Ray's task events), steady output tok/s (output tokens over
the engine actors' first batch start -> last batch end, from the same events), CPU seconds of
the driver (its rusage) plus every process of the cluster (each one's own CPU in /proc, last
seen by a 0.5 s sampler: a process loses at most its last 0.5 s; summing what the live
processes reaped instead misses vLLM engine-core processes, which are orphaned, not reaped),
by role (engine: the engine actor and its engine-core process; other Ray workers; Ray's own
processes), peak RSS and PSS (sums over the driver and the cluster's processes, same sampler)
and row-by-row equality of the outputs. `ray.util.state.list_tasks` needs the dashboard, which
local_ray turns off; the events are read from the GCS instead (`ray._private.state`, what
`ray.timeline()` reads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aligncultura.cluster import local_ray  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def overrides(args, replicas: int) -> list[str]:
    """The job's Hydra overrides; the ray.data.llm child composes the same config."""
    threads = max(1, args.cores // replicas) if replicas > 1 else "null"
    out = ["experiment=quickstart", f"dataset.limit={args.prompts}",
           f"generation.max_tokens={args.max_tokens}", "generation.temperature=0",
           f"engine.replicas={replicas}", f"engine.batch_size={args.batch_size}",
           f"engine.threads={threads}", "cache_dir=off", "wandb.mode=disabled", "progress=false"]
    if args.kv_gib:
        out.append(f"engine.env.VLLM_CPU_KVCACHE_SPACE={args.kv_gib}")
    return out


# ----------------------------------------------------------------------------- ray.data.llm side


def compose(overrides_: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import aligncultura.config  # noqa: F401 - registers the schemas

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="generate", overrides=overrides_)


def raydata_processor(cfg, model_path: str, replicas: int, fixed_pool: bool = False):
    """The hand-written pipeline. Changes from the documented example, each needed here:
    1. ``placement_group_config={"bundles": [{"CPU": 1}]}``: without it the engine stage asks
       for ``num_gpus=1`` per replica and waits forever on a CPU cluster ("No available node
       types can fulfill resource request {'CPU': 1.0, 'GPU': 1.0}");
    2. ``log_engine_metrics=False``: the default exports vLLM metrics through
       `vllm.v1.metrics.ray_wrappers`, which imports ``ray.serve``; without Ray Serve's
       dependencies the engine actor dies with "ImportError: RayPrometheusMetric requires Ray
       to be installed.";
    3. CPU stages (chat template, tokenize, detokenize, pre/postprocess) at fractional CPUs:
       at their default of 1 CPU each they hold every CPU of a 2-CPU node and the engine actor
       stays pending ("pending: 2 CPU").
    Everything else is the processor's default (one engine per replica, async engine with its
    engine core in a subprocess, up to 8 batches in flight per engine; ``concurrency=n`` is an
    autoscaling pool of 1..n engines, `fixed_pool` asks for exactly n)."""
    from omegaconf import OmegaConf
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from aligncultura.engine.vllm_stage import OFFLINE_ENV

    engine_kwargs = {**OmegaConf.to_container(cfg.engine.engine_kwargs, resolve=True),
                     **OmegaConf.to_container(cfg.model.engine_kwargs, resolve=True)}
    threads = cfg.engine.threads or len(os.sched_getaffinity(0))
    env = {**OFFLINE_ENV, **{k: str(v) for k, v in cfg.engine.env.items()},
           "OMP_NUM_THREADS": str(threads)}  # what LLMStage gives torch (vllm_stage.py)
    small = {"num_cpus": 0.1}
    config = vLLMEngineProcessorConfig(
        model_source=model_path, engine_kwargs=engine_kwargs, batch_size=int(cfg.engine.batch_size),
        concurrency=(replicas, replicas) if fixed_pool else replicas,
        runtime_env={"env_vars": env},
        placement_group_config={"bundles": [{"CPU": float(cfg.engine.num_cpus_per_replica)}]},
        log_engine_metrics=False,
        chat_template_stage=small, tokenize_stage=small, detokenize_stage=small)
    return build_processor(
        config,
        preprocess=lambda row: {"messages": json.loads(row["messages"]),
                                "sampling_params": json.loads(row["sampling"])},
        postprocess=lambda row: {"row_id": row["row_id"], "text": row["generated_text"],
                                 "input_tokens": row["num_input_tokens"],
                                 "output_tokens": row["num_generated_tokens"]},
        preprocess_map_kwargs=small, postprocess_map_kwargs=small)


def raydata_main(args) -> None:
    """Child: the ray.data.llm pipeline over the job's request table; writes out.parquet."""
    t0 = time.perf_counter()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aligncultura.benchmark.generation import generation_requests
    from aligncultura.data.reader import load_prompts
    from aligncultura.engine.models import resolve_model
    from aligncultura.engine.requests import request_table

    cfg = compose(overrides(args, args.side_replicas))
    prompts = load_prompts(cfg.dataset, "dataset")
    model = resolve_model(cfg.model)
    reqs = request_table(generation_requests(prompts.table, cfg.model, cfg.generation))
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    proc = raydata_processor(cfg, model.path, args.side_replicas, args.fixed_pool)
    t1 = time.perf_counter()
    # the same blocks as our engine pass (runner.engine_dataset), one per engine batch, cut
    # here: a `.repartition()` operator needs a whole CPU for its tasks, which a 2-CPU node
    # running the engine (1 CPU) and the CPU stages no longer has, and the pipeline hangs
    table = reqs.select(["request_id", "row_id", "messages", "sampling"])
    bs = int(cfg.engine.batch_size)
    ds = ray.data.from_arrow([table.slice(i, bs) for i in range(0, table.num_rows, bs)])
    rows = proc(ds).take_all()
    t2 = time.perf_counter()
    out = Path(args.side_out)
    pq.write_table(pa.Table.from_pylist(rows), out / "out.parquet")
    (out / "timing.json").write_text(json.dumps({"setup_s": t1 - t0, "execute_s": t2 - t1,
                                                 "wall_s": t2 - t0}))


# ----------------------------------------------------------------------------- measuring


def _stat(pid: str) -> tuple[int, float, float, int] | None:
    """(ppid, own CPU s, reaped children's CPU s, RSS bytes) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("latin-1")
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[1]), (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK,
            int(f[21]) * PAGE)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("latin-1")[:300]
    except OSError:
        return ""


def _pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def role(cmd: str) -> str:
    if "LLMStage" in cmd or "vLLMEngineStageUDF" in cmd or "EngineCore" in cmd:
        return "engine"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "other Ray workers"
    return "Ray system"


class Tree:
    """The processes of one local cluster (its roots and their descendants) and a driver."""

    def __init__(self, roots: list[int]):
        self.roots = set(roots)
        self.driver: int | None = None
        self.info: dict[int, dict[str, Any]] = {}  # pid -> role, last own CPU, peak RSS, ...
        self.peak_total = 0
        self.peak_engine = 0
        self.peak_pss = 0

    def scan(self) -> dict[int, tuple[int, float, float, int]]:
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                s = _stat(name)
                if s is not None:
                    stats[int(name)] = s
        kids: dict[int, list[int]] = {}
        for pid, s in stats.items():
            kids.setdefault(s[0], []).append(pid)
        mine, todo = set(), [p for p in self.roots | ({self.driver} if self.driver else set())
                             if p in stats]
        while todo:
            pid = todo.pop()
            if pid not in mine:
                mine.add(pid)
                todo.extend(kids.get(pid, []))
        return {pid: stats[pid] for pid in mine}

    def sample(self) -> dict[int, tuple[int, float, float, int]]:
        procs = self.scan()
        total = engine = pss = 0
        for pid, (ppid, own, _, rss) in sorted(procs.items()):  # parents before children
            e = self.info.get(pid)
            if e is None:
                e = self.info[pid] = {"role": "driver" if pid == self.driver else "",
                                      "own": 0.0, "rss": 0}
            if e["role"] not in ("driver", "engine"):  # Ray workers rename themselves later
                parent = self.info.get(ppid, {}).get("role")  # vLLM's engine core process
                e["role"] = "engine" if parent == "engine" else role(_cmdline(pid))
            e["own"], e["rss"] = own, max(e["rss"], rss)
            total += rss
            pss += _pss(pid)
            engine += rss if e["role"] == "engine" else 0
        self.peak_total, self.peak_engine = max(self.peak_total, total), max(self.peak_engine, engine)
        self.peak_pss = max(self.peak_pss, pss)
        return procs

    def cpu_now(self) -> float:
        """Own plus reaped children's CPU of the cluster's live processes (the driver apart)."""
        return sum(own + reaped for pid, (_, own, reaped, _) in self.scan().items()
                   if pid != self.driver)


def run_side(side: str, replicas: int, args, work: Path) -> dict[str, Any]:
    """One run on a fresh local cluster: start it, run the driver, measure, stop it."""
    cluster = work / "ray"
    state = local_ray.start(cluster, nodes=replicas, cpus=args.cpus_per_node, gpus=0)
    try:
        tree = Tree([p.pid for p in local_ray.processes(cluster, state.get("client_port"))])
        time.sleep(2.0)
        tree.sample()
        base_pss, tree.peak_pss = tree.peak_pss, 0
        base_cpu = tree.cpu_now()
        base_info = {pid: dict(e) for pid, e in tree.info.items()}
        out = work / "out"
        out.mkdir()
        if side == "ours":
            cmd = [sys.executable, "-m", "jobs.generate", *overrides(args, replicas),
                   *args.ours_extra, f"run_dir={out}"]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "raydata", "--side-out", str(out),
                   "--side-replicas", str(replicas), "--prompts", str(args.prompts),
                   "--max-tokens", str(args.max_tokens), "--batch-size", str(args.batch_size),
                   "--cores", str(args.cores)] + (["--kv-gib", str(args.kv_gib)] if args.kv_gib else []) \
                + (["--fixed-pool"] if args.fixed_pool else [])
        env = {**os.environ, "RAY_ADDRESS": state["address"], "RAY_AUTH_MODE": "disabled"}
        load0 = os.getloadavg()
        log = open(work / f"{side}.log", "w")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        tree.driver = proc.pid
        stop = threading.Event()

        def sampler():
            while not stop.wait(0.5):
                tree.sample()

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        load1 = os.getloadavg()
        reaped_cpu = tree.cpu_now() - base_cpu
        if proc.returncode != 0:
            tail = (work / f"{side}.log").read_text()[-3000:]
            raise SystemExit(f"{side} replicas={replicas} failed (exit {proc.returncode}):\n{tail}")
        events = task_events(state["address"], work)
    finally:
        local_ray.stop(cluster)
    by_role: dict[str, float] = {}
    for pid, e in tree.info.items():
        if e["role"] == "driver":
            continue
        spent = e["own"] - base_info.get(pid, {}).get("own", 0.0)
        by_role[e["role"]] = by_role.get(e["role"], 0.0) + spent
    driver_cpu = usage.ru_utime + usage.ru_stime
    cluster_cpu = sum(by_role.values())
    rows = read_rows(side, out)
    res = {"side": side, "replicas": replicas, "wall_s": wall, "load": [load0[0], load1[0]],
           "driver_cpu_s": driver_cpu, "cluster_cpu_s": cluster_cpu,
           "cluster_cpu_reaped_s": reaped_cpu,
           "cpu_s": driver_cpu + cluster_cpu, "cpu_by_role_s": by_role,
           "driver_peak_rss_mb": usage.ru_maxrss / 1024, "peak_rss_mb": tree.peak_total / 2**20,
           "engine_peak_rss_mb": tree.peak_engine / 2**20, "peak_pss_mb": tree.peak_pss / 2**20,
           "idle_cluster_pss_mb": base_pss / 2**20,
           "output_tokens": sum(r["output_tokens"] for r in rows.values()), **events}
    window = res.get("engine_window_s")
    res["steady_out_tok_s"] = res["output_tokens"] / window if window else None
    if side == "ours":
        eff = json.loads((out / "summary.json").read_text())["efficiency"]
        res["job_reported"] = {k: eff[k] for k in ("output_tok_s", "engine_start_s", "wall_s")}
    else:
        res["job_reported"] = json.loads((out / "timing.json").read_text())
    res["rows"] = rows
    return res


def read_rows(side: str, out: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    if side == "ours":
        t = pq.read_table(out / "generations.parquet")
        return {r["row_id"]: {"text": r["response"], "output_tokens": r["output_tokens"],
                              "input_tokens": r["input_tokens"]} for r in t.to_pylist()}
    t = pq.read_table(out / "out.parquet")
    return {r["row_id"]: {"text": r["text"], "output_tokens": r["output_tokens"],
                          "input_tokens": r["input_tokens"]} for r in t.to_pylist()}


def task_events(address: str, work: Path) -> dict[str, Any]:
    """Engine start and steady window from the cluster's task events (a helper driver)."""
    path = work / "events.json"
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--events", str(path)], env=env, check=True,
                   timeout=300, capture_output=True)
    events = json.loads(path.read_text())
    engine = [e for e in events if "LLMStage" in e["name"] or "vLLMEngineStageUDF" in e["name"]]
    inits = [e for e in engine if e["name"].endswith(".__init__") and "RUNNING" in e["ts"]
             and "FINISHED" in e["ts"]]
    calls = [e for e in engine if e["name"].endswith(".submit") and "RUNNING" in e["ts"]
             and "FINISHED" in e["ts"]]
    per_node: dict[str, int] = {}
    for e in calls:
        per_node[e["node"]] = per_node.get(e["node"], 0) + 1
    out: dict[str, Any] = {
        "engine_start_s": max(((e["ts"]["FINISHED"] - e["ts"]["RUNNING"]) / 1e9 for e in inits),
                              default=None),
        "engine_batches_per_node": dict(sorted(per_node.items())),
    }
    if calls:
        first = min(e["ts"]["RUNNING"] for e in calls)
        last = max(e["ts"]["FINISHED"] for e in calls)
        out["engine_window_s"] = (last - first) / 1e9
    return out


def events_main(path: str) -> None:
    """Helper child: every task event of the cluster as JSON (name, node IP, state times)."""
    import ray
    from ray._private.state import state
    from ray.core.generated import common_pb2

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    ip = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    out = []
    for e in state._get_all_task_events():
        out.append({"name": e.task_info.name, "job": e.job_id.hex(),
                    "node": ip.get(e.state_updates.node_id.hex(), e.state_updates.node_id.hex()),
                    "ts": {common_pb2.TaskStatus.Name(k): v
                           for k, v in e.state_updates.state_ts_ns.items()}})
    Path(path).write_text(json.dumps(out))
    ray.shutdown()


# ----------------------------------------------------------------------------- report


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    same = [k for k in common if a[k]["text"] == b[k]["text"]]
    # LLMStage strips the text it returns (requests.split_reasoning); ray.data.llm does not
    stripped = [k for k in common if (a[k]["text"] or "").strip() == (b[k]["text"] or "").strip()]
    same_out = [k for k in common if a[k]["output_tokens"] == b[k]["output_tokens"]]
    same_in = [k for k in common if a[k]["input_tokens"] == b[k]["input_tokens"]]
    diff = [k for k in common if a[k]["text"] != b[k]["text"]]
    first = None
    if diff:
        k = diff[0]
        x, y = a[k]["text"] or "", b[k]["text"] or ""
        i = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
        first = {"row_id": k, "at_char": i, "ours": x[max(0, i - 40):i + 60],
                 "raydata": y[max(0, i - 40):i + 60]}
    return {"rows_ours": len(a), "rows_raydata": len(b), "common": len(common),
            "identical_text": len(same), "identical_after_strip": len(stripped),
            "identical_input_tokens": len(same_in), "identical_output_tokens": len(same_out),
            "first_difference": first}


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--cpus-per-node", type=float, default=2)
    ap.add_argument("--kv-gib", type=int, default=None,
                    help="engine.env.VLLM_CPU_KVCACHE_SPACE for both sides (default: the preset's)")
    ap.add_argument("--fixed-pool", action="store_true",
                    help="ray.data.llm: concurrency=(n, n), a fixed pool of n engines (default: "
                         "concurrency=n, the documented autoscaling pool of 1..n)")
    ap.add_argument("--ours-extra", nargs="*", default=[],
                    help="more Hydra overrides for our side only, e.g. "
                         "engine.env.VLLM_ENABLE_V1_MULTIPROCESSING=1")
    ap.add_argument("--json", default=None, help="write every run's measurements here")
    ap.add_argument("--side", choices=("raydata",), help=argparse.SUPPRESS)
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    ap.add_argument("--side-replicas", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.events:
        events_main(args.events)
        return 0
    if args.side == "raydata":
        raydata_main(args)
        return 0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    results: list[dict[str, Any]] = []
    for replicas in args.replicas:
        for r in range(args.rounds):
            order = ("ours", "raydata") if r % 2 == 0 else ("raydata", "ours")
            for side in order:
                with tempfile.TemporaryDirectory(prefix="acrdl-", dir="/tmp") as tmp:
                    res = run_side(side, replicas, args, Path(tmp))
                results.append(res)
                print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
    print(f"\n{args.prompts} prompts, max_tokens {args.max_tokens}, greedy, batch size "
          f"{args.batch_size}, {args.cores} cores, {args.cpus_per_node:g} Ray CPUs per node, KV "
          f"cache {args.kv_gib or 'preset'} GiB, ray.data.llm pool "
          f"{'fixed' if args.fixed_pool else 'autoscaling'}"
          f"{'; ours also ' + ' '.join(args.ours_extra) if args.ours_extra else ''}\n")
    print("| replicas | side | wall s | engine start s | steady out tok/s | CPU s (driver + "
          "cluster) | engine CPU s | peak RSS MB (all / engine / driver) | batches per node "
          "| load 1-min start-end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        name = "ours (jobs.generate)" if res["side"] == "ours" else "ray.data.llm build_processor"
        nodes = ", ".join(f"{k}={v}" for k, v in res["engine_batches_per_node"].items())
        print(f"| {res['replicas']} | {name} | {res['wall_s']:.1f} | {fmt(res['engine_start_s'])} "
              f"| {fmt(res['steady_out_tok_s'])} | {res['cpu_s']:.0f} ({res['driver_cpu_s']:.0f} + "
              f"{res['cluster_cpu_s']:.0f}) | {res['cpu_by_role_s'].get('engine', 0):.0f} | "
              f"{res['peak_rss_mb']:.0f} / {res['engine_peak_rss_mb']:.0f} / "
              f"{res['driver_peak_rss_mb']:.0f} | {nodes} | {res['load'][0]:.1f}-{res['load'][1]:.1f} |")
    print()
    for replicas in args.replicas:
        ours = [x for x in results if x["replicas"] == replicas and x["side"] == "ours"]
        theirs = [x for x in results if x["replicas"] == replicas and x["side"] == "raydata"]
        for a, b in zip(ours, theirs, strict=True):
            print(f"replicas={replicas}: outputs {json.dumps(compare(a['rows'], b['rows']))}")
        if ours and theirs:
            for key in ("wall_s", "steady_out_tok_s", "cpu_s", "peak_rss_mb"):
                mo = statistics.median(x[key] for x in ours)
                mt = statistics.median(x[key] for x in theirs)
                print(f"replicas={replicas}: {key} ours / ray.data.llm = {mo:.1f} / {mt:.1f} "
                      f"= {mo / mt:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
