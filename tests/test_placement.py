"""Engine replica placement: planned per node, refused in one line before any engine starts."""

from __future__ import annotations

import pytest

from aligncultura.engine.placement import Node, plan_replicas
from aligncultura.errors import JobError

TWO_BY_TWO = [Node("127.0.0.1", 4, 2), Node("127.0.0.2", 4, 2)]


def test_auto_replicas_resolve_per_node_not_from_the_cluster_total():
    assert plan_replicas(TWO_BY_TWO, 0, 1, 1).replicas == 4
    assert plan_replicas(TWO_BY_TWO, 0, 2, 1).replicas == 2
    plan = plan_replicas(TWO_BY_TWO, 0, 2, 1)
    assert plan.per_node == {"127.0.0.1": 1, "127.0.0.2": 1} and plan.cpus_left == 6
    assert "127.0.0.2 holds 1" in plan.line(2, 1)
    # CPU-only: one replica (it takes every thread of its node)
    assert plan_replicas([Node("a", 2, 0)], 0, 0, 1).replicas == 1


def test_a_tensor_parallel_group_larger_than_any_node_is_refused():
    # the cluster has 4 GPUs, so `GPUs // tp` said 1 replica: it could never be placed
    with pytest.raises(JobError, match=r"engine.num_gpus_per_replica=3 .* more than any node "
                                       r"has: a group must sit on one node"):
        plan_replicas(TWO_BY_TWO, 0, 3, 1)


def test_more_replicas_than_fit_is_refused_with_what_the_cluster_has():
    with pytest.raises(JobError, match=r"engine.replicas=5: the cluster can place 4 replica\(s\)"
                                       r".*127.0.0.1: 4 CPU, 2 GPU; 127.0.0.2: 4 CPU, 2 GPU"):
        plan_replicas(TWO_BY_TWO, 5, 1, 1)


def test_replicas_that_take_every_cpu_leave_ray_data_nothing_and_are_refused():
    nodes = [Node("a", 1, 2), Node("b", 1, 2)]  # what the 1-CPU-per-node hang was seen with
    with pytest.raises(JobError, match="take every CPU of the cluster .* wait forever"):
        plan_replicas(nodes, 2, 1, 1)
    with pytest.raises(JobError, match="take every CPU"):  # the gpu preset: 4 CPUs per replica
        plan_replicas([Node("a", 8, 8)], 2, 1, 4)
    assert plan_replicas(nodes, 0, 1, 1).replicas == 1  # auto leaves Ray Data a CPU


def test_pipeline_parallelism_across_nodes_is_refused():
    with pytest.raises(JobError, match="pipeline_parallel_size > 1 is not supported"):
        plan_replicas(TWO_BY_TWO, 1, 1, 1, {"pipeline_parallel_size": 2})


def test_an_empty_cluster_is_refused():
    with pytest.raises(JobError, match="no live node"):
        plan_replicas([], 1, 0, 1)
