"""A real two-node Ray cluster on this machine (127.0.0.1 and 127.0.0.2, 2 fake GPUs each):
replicas are placed per node, tensor-parallel groups stay on one node, and plans that could never
be placed are refused in one line before any replica starts. Started and stopped by the fixture
(only its own processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aligncultura.cluster import local_ray

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "placement_probe.py"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    root = Path("/tmp") / f"acr-{os.getpid()}"  # short: Ray's socket paths must stay short
    state = local_ray.start(root, nodes=2, cpus=3, gpus=2)
    try:
        yield state
    finally:
        local_ray.stop(root)
        assert local_ray.processes(root, state["client_port"]) == []


def probe(cluster: dict, **spec) -> dict:
    env = {**os.environ, "RAY_ADDRESS": cluster["address"], "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    last = out.stdout.strip().splitlines()[-1:] or ["{}"]
    result = json.loads(last[0])
    assert "rows" in result or "error" in result, out.stderr[-2000:]
    return result


def replicas(rows: list[dict]) -> dict[int, dict]:
    """Each replica (actor process) once: where it ran."""
    return {r["pid"]: r for r in rows}


def test_one_gpu_replicas_fill_both_nodes_two_per_node(two_nodes):
    out = probe(two_nodes, replicas=0, gpus=1, cpus=1)
    reps = replicas(out["rows"])
    assert len(reps) == 4  # replicas: 0 resolved per node: 2 + 2
    per_node = Counter(r["node"] for r in reps.values())
    assert sorted(per_node.values()) == [2, 2]
    for node in per_node:
        mine = [r for r in reps.values() if r["node"] == node]
        assert sorted(r["cvd"] for r in mine) == ["0", "1"]  # each its own GPU
        assert all(r["gpu_ids"] == [r["cvd"]] for r in mine)


def test_a_tensor_parallel_group_gets_two_gpus_of_one_node(two_nodes):
    reps = replicas(probe(two_nodes, replicas=0, gpus=2, cpus=1)["rows"])
    assert len(reps) == 2 and len({r["node"] for r in reps.values()}) == 2
    assert all(r["cvd"] == "0,1" and sorted(r["gpu_ids"]) == ["0", "1"] for r in reps.values())


def test_cpu_replicas_spread_one_per_node(two_nodes):
    reps = replicas(probe(two_nodes, replicas=2, gpus=0, cpus=1)["rows"])
    assert len(reps) == 2 and len({r["node"] for r in reps.values()}) == 2


@pytest.mark.parametrize("spec, message", [
    ({"replicas": 0, "gpus": 3, "cpus": 1}, "engine.num_gpus_per_replica=3 (the tensor-parallel "
                                            "group) is more than any node has"),
    ({"replicas": 5, "gpus": 1, "cpus": 1}, "engine.replicas=5: the cluster can place 4"),
    ({"replicas": 2, "gpus": 1, "cpus": 3}, "take every CPU of the cluster (6)"),
    ({"replicas": 1, "gpus": 1, "cpus": 1, "engine_kwargs": {"pipeline_parallel_size": 2}},
     "pipeline_parallel_size > 1 is not supported"),
])
def test_plans_that_cannot_be_placed_are_one_line_errors(two_nodes, spec, message):
    out = probe(two_nodes, **spec)
    assert message in out["error"] and "\n" not in out["error"]
    assert "127.0.0.2: 3 CPU, 2 GPU" in out["error"] or "CPU of the cluster" in out["error"]


def test_an_unreachable_ray_address_is_one_line_in_bounded_time():
    from conftest import run_job

    port = local_ray._free_port()  # nothing listens there
    proc = run_job("generate", "experiment=quickstart", "dataset.limit=1", "cache_dir=off",
                   env={"RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=120)
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there" in lines[0]


@pytest.mark.slow
def test_two_replicas_one_per_node_shard_the_prompts_and_share_the_row_cache(two_nodes, tmp_path):
    """jobs.generate with engine.replicas=2 on the two-node cluster: one vLLM CPU replica per
    node, each reported in the efficiency block; the responses equal a one-replica run's row by
    row (sampling is seeded per row); rerun with one replica on the same row cache computes
    nothing."""
    from conftest import run_job

    cache = tmp_path / "cache"
    common = ["experiment=quickstart", "dataset.limit=6", "generation.max_tokens=16",
              "engine.batch_size=2", "wandb.mode=disabled"]
    ray_env = {"RAY_ADDRESS": two_nodes["address"]}
    two = run_job("generate", *common, "engine.replicas=2", f"cache_dir={cache}",
                  f"run_dir={tmp_path / 'two'}", env=ray_env, timeout=1200)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert "placement: 2 replica(s)" in two.stdout
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    reps = summary["efficiency"]["by_replica"]
    assert len(reps) == 2 and len({r["node"] for r in reps.values()}) == 2, reps
    assert sum(r["rows"] for r in reps.values()) == 6
    assert all(r["rows"] > 0 and r["output_tokens"] > 0 and r["busy_s"] > 0 for r in reps.values())

    one = run_job("generate", *common, "engine=local", "cache_dir=off",
                  f"run_dir={tmp_path / 'one'}", timeout=1200)
    assert one.returncode == 0, one.stderr[-3000:]

    def responses(run: str) -> dict:
        import pyarrow.parquet as pq

        gens = pq.read_table(tmp_path / run / "generations.parquet").to_pylist()
        return {(g["row_id"], g["sample_index"]): g["response"] for g in gens}

    a, b = responses("two"), responses("one")
    assert set(a) == set(b) and len(a) == 6
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"{len(differ)} of 6 responses differ between 2 replicas and 1: {differ}"

    again = run_job("generate", *common, "engine.replicas=1", f"cache_dir={cache}",
                    f"run_dir={tmp_path / 'again'}", env=ray_env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    g = json.loads((tmp_path / "again" / "summary.json").read_text())["generations"]
    assert (g["cached"], g["computed"]) == (6, 0)
    assert responses("again") == a


@pytest.mark.slow
def test_losing_a_node_mid_run_retries_its_rows_on_the_survivor(tmp_path):
    """kill -9 of the second node's Ray processes in the middle of a benchmark (generate + judge
    in one pass on two replicas): the unfinished rows run again on the surviving node (retried,
    not failed), nothing persisted is lost, and the same command again computes nothing."""
    import threading
    import time

    from conftest import run_job

    root = Path("/tmp") / f"acl-{os.getpid()}"
    state = local_ray.start(root, nodes=2, cpus=3, gpus=0)
    cache = tmp_path / "cache"
    args = ["experiment=quickstart", "dataset.limit=12", "generation.max_tokens=24",
            "judge.max_tokens=32", "judge.max_unscored_rate=1.0", "bench.determinism_sample=0",
            "engine.batch_size=1", "engine.replicas=2", "wandb.mode=disabled",
            f"cache_dir={cache}", f"run_dir={tmp_path / 'run'}"]
    killed = []

    def kill_when_a_batch_is_persisted():
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not list(cache.glob("*/part-*.parquet")):
            time.sleep(0.2)
        killed.append(local_ray.kill_node(root, 2))

    try:
        watcher = threading.Thread(target=kill_when_a_batch_is_persisted, daemon=True)
        watcher.start()
        proc = run_job("benchmark", *args, env={"RAY_ADDRESS": state["address"]}, timeout=1500)
        watcher.join(timeout=5)
        assert killed and killed[0] > 0, "node 2 was never killed"
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "retrying its" in proc.stderr and "unfinished rows" in proc.stderr
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        g = summary["generations"]
        assert g["written"] == g["expected"] == 12 and g["failed"] == 0, g
        assert summary["judgments"]["written"] == 12 * 5, summary["judgments"]
        again = run_job("benchmark", *args, env={"RAY_ADDRESS": state["address"]}, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        g, j = summary["generations"], summary["judgments"]
        assert (g["cached"], g["computed"], j["computed"]) == (12, 0, 0), (g, j)
    finally:
        local_ray.stop(root)
    assert local_ray.processes(root, state["client_port"]) == []


@pytest.mark.slow
def test_losing_the_only_node_that_can_hold_a_replica_fails_the_rest_in_one_line(tmp_path):
    """A head that runs no work (0 CPU) and one worker holding the only replica: kill -9 the
    worker mid-run. No replica can be placed any more, so the unfinished rows are marked failed
    with that reason, everything is written, and the job exits 2 with one line; the rows
    finished before stay in the row cache."""
    import threading
    import time

    import pyarrow.parquet as pq
    from conftest import run_job

    root = Path("/tmp") / f"acn-{os.getpid()}"
    state = local_ray.start(root, nodes=2, cpus=3, gpus=0, head_cpus=0)
    cache = tmp_path / "cache"
    killed = []

    def kill_when_a_batch_is_persisted():
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not list(cache.glob("*/part-*.parquet")):
            time.sleep(0.2)
        killed.append(local_ray.kill_node(root, 2))

    try:
        watcher = threading.Thread(target=kill_when_a_batch_is_persisted, daemon=True)
        watcher.start()
        proc = run_job("generate", "experiment=quickstart", "dataset.limit=8",
                       "generation.max_tokens=24", "engine.batch_size=1", "engine.replicas=1",
                       "wandb.mode=disabled", f"cache_dir={cache}", f"run_dir={tmp_path / 'run'}",
                       env={"RAY_ADDRESS": state["address"]}, timeout=1500)
        watcher.join(timeout=5)
    finally:
        local_ray.stop(root)
    assert local_ray.processes(root, state["client_port"]) == []
    assert killed and killed[0] > 0, "node 2 was never killed"
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "no engine replica can be placed any more" in errors[0]
    assert "engine.num_cpus_per_replica=1 is more than any node has" in errors[0]
    assert "Traceback" not in proc.stderr
    gens = pq.read_table(tmp_path / "run" / "generations.parquet").to_pylist()
    failed = [g for g in gens if g["status"] != "ok"]
    assert len(gens) == 8 and 0 < len(failed) < 8, [g["status"] for g in gens]
    assert all("no engine replica can be placed" in (g["error"] or "") for g in failed)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["generations"]["ok"] == 8 - len(failed) and "error" in summary
    cached = sum(pq.read_table(p).num_rows for p in cache.glob("*/part-*.parquet"))
    assert cached == 8 - len(failed)  # what finished is kept for the rerun


@pytest.mark.slow
def test_the_benchmark_and_the_builder_run_on_two_replicas_one_per_node(two_nodes, tmp_path):
    """jobs.benchmark (generation and judging in one pass: model and judge are one preset) and
    jobs.build_dataset with engine.replicas=2 on the two-node cluster: every engine pass uses
    a replica on each node, and both jobs finish with every row accounted for."""
    from conftest import run_job

    env = {"RAY_ADDRESS": two_nodes["address"]}
    bench = run_job("benchmark", "experiment=quickstart", "dataset.limit=4",
                    "generation.max_tokens=16", "judge.max_tokens=160",
                    "judge.max_unscored_rate=1.0", "engine.replicas=2", "engine.batch_size=2",
                    # a fresh row cache: the judge pass reads the verdicts the shared
                    # generate + judge pass already made
                    "wandb.mode=disabled", f"cache_dir={tmp_path / 'rows'}",
                    f"run_dir={tmp_path / 'bench'}", env=env, timeout=1500)
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-3000:]
    metrics = json.loads((tmp_path / "bench" / "metrics.json").read_text())
    reps = metrics["efficiency"]["generation"]["by_replica"]
    assert len({r["node"] for r in reps.values()}) == 2, reps
    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    assert summary["generations"]["written"] == 4 and summary["judgments"]["written"] > 0

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "question": q, "class_id": 11}) + "\n"
                             for i, q in enumerate([
                                 "How is injera traditionally eaten in Ethiopia?",
                                 "What spices define a Moroccan tagine?",
                                 "Why is kimchi made in late autumn in Korea?",
                                 "What is the history of the Japanese tea ceremony?"])))
    build = run_job("build_dataset", f"seeds.path={seeds}", "seeds.topic_field=null",
                    "builder=cpu", "engine=cpu", "engine.replicas=2", "engine.batch_size=2",
                    "classify.shortlist_size=2", "expand.subdomains=[11]",
                    "expand.min_per_subdomain=4", "expand.max_rounds=1", "expand.max_tokens=32",
                    "respond.k=1", "respond.max_tokens=24", "respond.critic_max_tokens=96",
                    "respond.max_feedback_rounds=0", "wandb.mode=disabled",
                    f"cache_dir={tmp_path / 'rows'}", f"run_dir={tmp_path / 'build'}", env=env,
                    timeout=1800)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    stages = json.loads((tmp_path / "build" / "summary.json").read_text())["stages"]
    engine_stages = {k: v for k, v in stages.items() if v.get("computed")}
    assert engine_stages, stages
    for name, st in engine_stages.items():
        if st["computed"] >= 4:  # at least two blocks of engine.batch_size=2
            assert len(st.get("rows_by_node", {})) == 2, (name, st)
