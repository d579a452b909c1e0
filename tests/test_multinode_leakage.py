"""jobs.leakage and jobs.dedup with executor=ray on a real two-node Ray cluster on this machine
(127.0.0.1 and 127.0.0.2, aligncultura/cluster/local_ray.py): both nodes run tasks, each job
reports its tasks per node (summary.json and its printed output, as the tasks saw it), and the
results equal an executor=local run's. The cluster is started and stopped here (only its own
processes)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_job

from aligncultura.cluster import local_ray

WORDS = ("river market song weave clay loom drum harvest mask temple lantern spice dye bronze "
         "mural chant pottery festival silk carving ritual bamboo saffron indigo copper dance "
         "archive manuscript fresco mosaic garden basket cedar ivory lacquer opera puppet").split()


def _text(rng: random.Random, n: int = 24) -> str:
    return "How does the " + " ".join(rng.choice(WORDS) for _ in range(n)) + " shape local life?"


def _edit(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(2, len(words) - 2)] = "changed"
    return " ".join(words)


@pytest.fixture(scope="module")
def two_nodes():
    root = Path("/tmp") / f"acl2-{os.getpid()}"  # short: Ray's socket paths must stay short
    state = local_ray.start(root, nodes=2, cpus=2, gpus=0)
    try:
        yield state
    finally:
        local_ray.stop(root)
        assert local_ray.processes(root, state["client_port"]) == []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Eval JSONL with 30 leaked rows of 60; a reference of 2 Parquet files and 1 JSONL file
    (~3 MB, so ~15 pieces of 200 kB); a dedup input of 12,000 rows with planted copies."""
    d = tmp_path_factory.mktemp("multinode")
    rng = random.Random(11)
    evals = [_text(rng) for _ in range(60)]
    (d / "eval.jsonl").write_text("".join(
        json.dumps({"id": f"E{k}", "question": t}) + "\n" for k, t in enumerate(evals)))
    ref = d / "ref"
    ref.mkdir()
    for part in range(2):
        body = [_text(rng) for _ in range(6000)]
        body[100] = evals[part]  # verbatim
        for k in range(2 + part * 14, 16 + part * 14):
            body[200 + k] = _edit(evals[k], rng)  # one word edited
        pq.write_table(pa.table({"doc_id": [f"P{part}-{k}" for k in range(len(body))],
                                 "body": body}), ref / f"part-{part}.parquet",
                       row_group_size=1500)
    lines = [{"doc_id": f"J{k}", "body": _text(rng)} for k in range(3000)]
    (ref / "more.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = [_text(rng) for _ in range(12000)]
    for k in range(0, 12000, 97):
        rows[(k * 7919) % 12000] = _edit(rows[k], rng)  # near copies of earlier or later rows
    (d / "dedup.jsonl").write_text("".join(
        json.dumps({"id": f"D{k}", "question": t}) + "\n" for k, t in enumerate(rows)))
    return d


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _check_spread(proc, summary: dict) -> dict:
    per_node = summary["ray"]["tasks_per_node"]
    assert len(per_node) == 2 and all(v > 0 for v in per_node.values()), per_node
    assert summary["ray"]["tasks"] == sum(per_node.values())
    line = "ray tasks per node: " + ", ".join(f"{k}={v}" for k, v in per_node.items())
    assert line in proc.stdout, proc.stdout[-2000:]
    print(f"\n{summary['job']}: {line}")
    return per_node


def test_leakage_and_dedup_run_tasks_on_both_nodes_and_equal_local(two_nodes, data, tmp_path):
    env = {"RAY_ADDRESS": two_nodes["address"]}
    leak = [f"eval.path={data / 'eval.jsonl'}", "eval.class_field=null",
            f"reference.paths=[{data / 'ref'}]", "reference.text_field=body",
            "reference.id_field=doc_id", "leakage.piece_bytes=200000"]
    ray = run_job("leakage", *leak, "executor=ray", f"run_dir={tmp_path / 'lr'}", env=env,
                  timeout=600)
    assert ray.returncode == 0, ray.stdout[-2000:] + ray.stderr[-3000:]
    local = run_job("leakage", *leak, f"run_dir={tmp_path / 'll'}", timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    sr, sl = _summary(tmp_path / "lr"), _summary(tmp_path / "ll")
    per_node = _check_spread(ray, sr)
    assert sum(per_node.values()) >= 10  # one task per piece: ~15 pieces of 200 kB
    assert "ray" not in sl
    assert sr["leakage"] == sl["leakage"] and sr["rows"] == sl["rows"]
    assert sl["leakage"]["overall"]["flagged"] == 30
    a = pq.read_table(tmp_path / "lr" / "leakage.parquet")
    assert a.equals(pq.read_table(tmp_path / "ll" / "leakage.parquet"))

    dd = [f"input.path={data / 'dedup.jsonl'}", "input.class_field=null"]
    ray = run_job("dedup", *dd, "executor=ray", "batch_size=1500", f"run_dir={tmp_path / 'dr'}",
                  env=env, timeout=600)
    assert ray.returncode == 0, ray.stdout[-2000:] + ray.stderr[-3000:]
    local = run_job("dedup", *dd, f"run_dir={tmp_path / 'dl'}", timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    sr, sl = _summary(tmp_path / "dr"), _summary(tmp_path / "dl")
    per_node = _check_spread(ray, sr)
    assert sum(per_node.values()) >= 8  # 12,000 rows in blocks of 1,500
    assert (sr["exact"], sr["near"], sr["rows"]) == (sl["exact"], sl["near"], sl["rows"])
    assert sl["near"]["groups"] >= 100
    assert pq.read_table(tmp_path / "dr" / "clusters.parquet").equals(
        pq.read_table(tmp_path / "dl" / "clusters.parquet"))
