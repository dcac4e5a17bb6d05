"""GPU fragmentation (FGD's measure), the FGD policy and the paper's protocol."""

from __future__ import annotations

import numpy as np
import pytest
from placement_helpers import vms_table

from fleetlab.placement import (
    ClusterSpec,
    ServerType,
    TaskTypes,
    build_cluster,
    cluster_from_nodes,
    fragmentation,
    fragmentation_experiment,
    load_vms,
    read_node_list,
    simulate,
)

TYPES = TaskTypes(
    cores=np.array([1.0, 1.0, 1.0]),
    memory_gb=np.array([1.0, 1.0, 1.0]),
    gpu_count=np.array([1, 1, 0]),
    gpu_milli=np.array([300, 1000, 0]),
    prob=np.array([0.5, 0.25, 0.25]),
)


def test_fragmentation_golden_values():
    gpu = np.array([[1000, 500, 0, -1]])
    # share task (300): every GPU with free >= 300 usable, the empty one holds 0 -> 0
    # whole-GPU task: the half-used GPU (500) is a fragment -> 500
    # CPU-only task: all 1500 free milli-GPUs are fragments -> 1500
    assert fragmentation(np.array([10.0]), np.array([100.0]), gpu, TYPES)[0] == pytest.approx(
        0.5 * 0 + 0.25 * 500 + 0.25 * 1500
    )
    # not enough CPU for any task: everything free is fragmented
    assert fragmentation(np.array([0.5]), np.array([100.0]), gpu, TYPES)[0] == pytest.approx(1500)
    # a GPU with 200 free cannot host the 300 share task
    gpu2 = np.array([[200, 1000]])
    assert fragmentation(np.array([10.0]), np.array([10.0]), gpu2, TYPES)[0] == pytest.approx(
        0.5 * 200 + 0.25 * 200 + 0.25 * 1200
    )


def test_fgd_fills_a_shared_gpu_instead_of_opening_a_whole_one():
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="g", count=2, capacity={"cores": 32, "memory_gb": 64}, gpus=2),
            )
        )
    )
    # a 0.5 share sits on g-0's GPU 0; the next 0.5 share should complete that GPU, and a
    # following whole-GPU task then still finds g-0's GPU 1 and both of g-1's GPUs free
    vms = vms_table(
        [
            ("a", 0, None, 1, 1, 1.0, 500),
            ("b", 1, None, 1, 1, 1.0, 500),
            ("c", 2, None, 1, 1, 2.0, 1000),
            ("d", 3, None, 1, 1, 1.0, 1000),
        ],
        columns=("gpus", "gpu_milli"),
    )
    res = simulate(cl, vms, "fgd")
    assert res.metrics["failures"] == 0
    assert res.placements["node"].to_list() == ["g-00000", "g-00000", "g-00001", "g-00000"]


@pytest.mark.slow
def test_openb_protocol_fgd_leaves_fewest_gpus_unallocated(openb):
    pods, nodes = openb
    cluster = cluster_from_nodes(read_node_list(nodes).gather_every(6))
    vms = load_vms(pods)
    curves, summary, metrics = fragmentation_experiment(
        cluster, vms, ("random", "best-fit", "fgd"), seeds=(0,), step=0.1
    )
    per = {r["policy"]: r["unallocated"] for r in summary.to_dicts()}
    # the paper's ordering: FGD < best-fit < random in unallocated GPUs at full load
    assert per["fgd"] < per["best-fit"] < per["random"]
    assert metrics["winner"] == "fgd"
    assert metrics["fgd_reduction_vs_best-fit"] > 0.1
    # the curve starts with nearly every GPU free and ends with the load at capacity
    first = curves.filter(curves["policy"] == "fgd").sort("arrived").row(0, named=True)
    assert first["unallocated"] > 0.85
    assert curves["arrived"].max() == pytest.approx(1.0)


def test_gpu_clustering_gathers_tasks_of_one_gpu_shape():
    from fleetlab.placement import Ask, ClusterState, decide, make_policy

    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="g", count=3, capacity={"cores": 32, "memory_gb": 64}, gpus=4),
            )
        )
    )

    def ask(i, cores, milli):
        return Ask(
            index=i,
            demand=np.array([cores, 1.0, milli / 1000]),
            gpu_count=1,
            gpu_milli=milli,
            gpu_model="",
            tenant=-1,
            arrival=0.0,
            predicted_departure=np.inf,
            p95_demand=cores,
        )

    state = ClusterState(cl)
    state.place(ask(0, 1, 300), 0, (0,))  # g-0 runs a 0.3-GPU task
    state.place(ask(1, 20, 700), 1, (0,))  # g-1 runs a 0.7-GPU task and most cores
    new = ask(2, 1, 300)
    # best fit: g-1 is tighter (normalised residual 2.06 vs 2.76); clustering: g-0
    # already runs a task of the same 300 milli-GPU shape
    assert decide(make_policy("best-fit"), state, new)[0] == 1
    assert decide(make_policy("gpu-clustering"), state, new) == (0, (0,))
