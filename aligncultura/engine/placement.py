"""Where the engine replicas go: a plan from the Ray cluster's nodes, checked before any engine
starts.

Ray places each replica (one actor holding ``engine.num_gpus_per_replica`` GPUs, the tensor-
parallel group, and ``engine.num_cpus_per_replica`` CPUs) on a single node, so the group's GPUs
always share a node. What Ray does not say is that a plan cannot be placed: an actor that fits
no node, or replicas that take every CPU so that Ray Data's own tasks (repartition, reading)
never run, wait forever. `plan_replicas` works the plan out per node and refuses those cases in
one line naming the key and what the cluster has; `engine.replicas: 0` means as many replicas as
the nodes can hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aligncultura.errors import JobError

DATA_CPUS = 1.0  # CPUs Ray Data's own tasks need somewhere in the cluster


@dataclass(frozen=True)
class Node:
    name: str  # the node's address
    cpus: float
    gpus: float


@dataclass
class Plan:
    replicas: int
    per_node: dict[str, int] = field(default_factory=dict)  # replicas each node can hold
    cpus_left: float = 0.0

    def line(self, gpus: float, cpus: float) -> str:
        nodes = ", ".join(f"{n} holds {k}" for n, k in self.per_node.items())
        return (f"placement: {self.replicas} replica(s) x ({gpus:g} GPU, {cpus:g} CPU); "
                f"nodes: {nodes}; {self.cpus_left:g} CPU left for Ray Data")


def _fits(node: Node, gpus: float, cpus: float) -> int:
    by_cpu = int(node.cpus // cpus) if cpus > 0 else 1 << 30
    by_gpu = int(node.gpus // gpus) if gpus > 0 else 1 << 30
    return min(by_cpu, by_gpu)


def plan_replicas(nodes: list[Node], replicas: int, gpus: float, cpus: float,
                  engine_kwargs: dict[str, Any] | None = None) -> Plan:
    """How many replicas, on which nodes; a JobError when the cluster cannot hold them."""
    if not nodes:
        raise JobError("the Ray cluster has no live node")
    have = "; ".join(f"{n.name}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in nodes)
    if int((engine_kwargs or {}).get("pipeline_parallel_size") or 1) > 1:
        raise JobError("engine.engine_kwargs.pipeline_parallel_size > 1 is not supported: a "
                       "replica is one Ray actor on one node; use tensor_parallel_size within "
                       f"a node and more engine.replicas across nodes (cluster: {have})")
    if gpus > max(n.gpus for n in nodes):
        raise JobError(f"engine.num_gpus_per_replica={gpus:g} (the tensor-parallel group) is "
                       f"more than any node has: a group must sit on one node (cluster: {have}); "
                       "lower engine.engine_kwargs.tensor_parallel_size")
    if cpus > max(n.cpus for n in nodes):
        raise JobError(f"engine.num_cpus_per_replica={cpus:g} is more than any node has "
                       f"(cluster: {have})")
    per_node = {n.name: _fits(n, gpus, cpus) for n in nodes}
    total_cpus = sum(n.cpus for n in nodes)
    # CPU replicas: keep a CPU for Ray Data's own tasks; the count is bounded by the CPUs
    capacity = sum(per_node.values())
    by_cpu_left = int((total_cpus - DATA_CPUS) // cpus) if cpus > 0 else capacity
    wanted = int(replicas)
    if wanted <= 0:  # auto: as many as the nodes can hold, leaving Ray Data a CPU
        wanted = min(capacity, by_cpu_left) if gpus > 0 else 1
        if wanted < 1:
            raise JobError(f"engine.replicas=0 (auto): no replica fits with a CPU left for Ray "
                           f"Data (cluster: {have}); lower engine.num_cpus_per_replica")
    if wanted > capacity:
        raise JobError(f"engine.replicas={wanted}: the cluster can place {capacity} replica(s) "
                       f"of {gpus:g} GPU and {cpus:g} CPU (cluster: {have}); lower "
                       "engine.replicas or use 0 for as many as fit")
    left = total_cpus - wanted * cpus
    if left < DATA_CPUS:
        raise JobError(f"engine.replicas={wanted} x engine.num_cpus_per_replica={cpus:g} take "
                       f"every CPU of the cluster ({total_cpus:g}): Ray Data's own tasks could "
                       "never run and the job would wait forever; lower one of them")
    return Plan(wanted, per_node, left)


def cluster_nodes() -> list[Node]:
    """The live nodes of the connected Ray cluster."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        out.append(Node(str(n.get("NodeManagerAddress")), float(res.get("CPU", 0.0)),
                        float(res.get("GPU", 0.0))))
    return sorted(out, key=lambda n: n.name)
