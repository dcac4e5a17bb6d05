"""Node failures from the shared fault models, and oversubscription violations."""

from __future__ import annotations

import polars as pl
from placement_helpers import vms_table

from fleetlab.placement import (
    ClusterSpec,
    ServerType,
    build_cluster,
    headroom,
    outages,
    oversub_violations,
    simulate,
)
from fleetlab.sim import CrashSpec, Duration, FailureSpec


def _cluster(n=4):
    return build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=n, capacity={"cores": 10, "memory_gb": 10}),),
            servers_per_rack=2,
        )
    )


def test_a_failed_node_evicts_and_replaces_or_loses_its_vms():
    cl = _cluster(2)
    vms = vms_table([("a", 0, 100, 6, 1), ("b", 1, 100, 6, 1)])
    down = pl.DataFrame({"node": ["s-00000"], "down_s": [10.0], "up_s": [50.0]})
    res = simulate(cl, vms, "first-fit", outages=down)
    # a (on s-0) cannot move to s-1, which already hosts b's 6 cores: lost
    assert res.metrics["evictions"] == 1 and res.metrics["lost"] == 1
    out = dict(zip(res.placements["vm_id"], res.placements["outcome"], strict=True))
    assert out == {"a": "lost", "b": "placed"}
    vms2 = vms_table([("a", 0, 100, 3, 1), ("b", 1, 100, 3, 1)])
    res2 = simulate(cl, vms2, "best-fit", outages=down)
    # best fit stacks both 3-core VMs on s-0; both move to s-1 when it fails
    assert res2.metrics["evictions"] == 2 and res2.metrics["lost"] == 0
    assert res2.placements["outcome"].to_list() == ["evicted", "evicted"]
    assert res2.placements["node"].to_list() == ["s-00001", "s-00001"]


def test_rack_failures_from_the_shared_model_and_headroom():
    cl = _cluster(8)
    spec = FailureSpec(domain=CrashSpec(mtbf=Duration(mean_s=500.0), mttr=Duration(mean_s=100.0)))
    out = outages(cl, spec, horizon_s=5000.0, seed=1)
    assert out.height > 0
    # a rack event takes both members down at the same time
    per_event = out.group_by("down_s").agg(pl.col("node").n_unique())
    assert (per_event["node"] == 2).all()
    h = headroom(cl, out)
    assert h["peak_down_servers"] % 2 == 0 and 0 < h["peak_down_share"] <= 1
    vms = vms_table([(f"v{i}", i * 10.0, i * 10.0 + 900, 2, 2) for i in range(200)])
    res = simulate(cl, vms, "best-fit", outages=out)
    assert res.metrics["evictions"] > 0


def test_oversubscription_violations_against_the_usage_series():
    cl = _cluster(1)
    vms = vms_table([("a", 0, 100, 8, 1), ("b", 0, 100, 8, 1)])
    placements = pl.DataFrame(
        {
            "vm_id": ["a", "b"],
            "node": ["s-00000"] * 2,
            "start_s": [0.0, 0.0],
            "end_s": [100.0, 100.0],
        }
    )
    usage = pl.DataFrame(
        {
            "vm_id": ["a", "b", "a", "b"],
            "ts_s": [0.0, 0.0, 50.0, 50.0],
            "cpu_avg": [50.0, 50.0, 90.0, 80.0],
        }
    )
    # t=0: 4 + 4 = 8 <= 10 cores; t=50: 7.2 + 6.4 = 13.6 > 10
    v = oversub_violations(placements, vms, usage, cl)
    assert v == {"samples": 2, "violations": 1, "violation_rate": 0.5}


def test_stranded_capacity_counts_dimensions_blocked_by_another():
    cl = _cluster(2)
    # s-0: all memory used, 8 cores free -> its cores are stranded for the typical (1, 1)
    vms = vms_table([("a", 0, 100, 2, 10), ("b", 1, 100, 1, 1), ("c", 1, 100, 1, 1)])
    res = simulate(cl, vms, "first-fit", samples=3)
    mid = res.timeline.filter(pl.col("t_s") == 50.0).row(0, named=True)
    assert mid["stranded_cores"] == 8 / 20
    assert mid["stranded_memory_gb"] == 0.0
