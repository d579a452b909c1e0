"""Run engine replicas that only report where they run (node, GPU ids, CUDA_VISIBLE_DEVICES),
placed by the runner exactly as LLMStage replicas are. Prints one JSON line.

    RAY_ADDRESS=... python tests/placement_probe.py '{"replicas": 0, "gpus": 1, "cpus": 1}'
"""

from __future__ import annotations

import json
import os
import sys

import pyarrow as pa
from omegaconf import OmegaConf

from aligncultura.engine.runner import engine_dataset
from aligncultura.errors import JobError


class Probe:
    def __init__(self, **_: object):
        import ray

        ctx = ray.get_runtime_context()
        self.where = {"node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(),
                      "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                      "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def __call__(self, batch: pa.Table) -> pa.Table:
        import time

        time.sleep(0.3)  # long enough for every replica to take batches
        n = batch.num_rows
        return pa.table({"request_id": batch.column("request_id"),
                         "where": [json.dumps(self.where)] * n})


def main() -> int:
    spec = json.loads(sys.argv[1])
    engine = OmegaConf.create({"replicas": spec["replicas"], "num_gpus_per_replica": spec["gpus"],
                               "num_cpus_per_replica": spec["cpus"], "batch_size": 1,
                               "max_restarts": 0, "engine_kwargs": {}})
    requests = pa.table({"request_id": [f"r{i}" for i in range(spec.get("rows", 12))]})
    try:
        ds = engine_dataset(requests, Probe, {"engine_kwargs": spec.get("engine_kwargs", {})},
                            engine)
        rows = [json.loads(w) for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)
                for w in b.column("where").to_pylist()]
    except JobError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
