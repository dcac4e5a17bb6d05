"""Lower bounds (fluid, LP) and the capacity question."""

from __future__ import annotations

import numpy as np
import pytest
from placement_helpers import vms_table

from fleetlab.placement import (
    ClusterSpec,
    ServerType,
    build_cluster,
    fluid_bound,
    lp_bound,
    requests_from_vms,
    simulate,
    size_cluster,
)

SERVER = ServerType(name="s", count=0, capacity={"cores": 10, "memory_gb": 10})


def _cluster(n: int = 10):
    return build_cluster(ClusterSpec(server_types=(SERVER.model_copy(update={"count": n}),)))


def test_fluid_bound_is_peak_active_demand_over_capacity():
    vms = vms_table(
        [("a", 0, 10, 6, 1), ("b", 5, 20, 6, 1), ("c", 12, 30, 6, 9), ("d", 15, 30, 1, 9)]
    )
    r = requests_from_vms(vms, _cluster())
    b = fluid_bound(r, np.array([10.0, 10.0]))
    # at t in [15, 20): cores 6+6+1 = 13 -> 2 servers; memory 1+9+9 = 19 -> 2 servers
    assert b["servers"] == 2
    assert b["per_dimension"] == [2.0, 2.0]


def test_lp_bound_sees_items_too_big_to_share_a_server():
    # three VMs of 6 cores: the fluid bound says 2 servers, but no two fit together
    vms = vms_table([(f"v{i}", 0, 100, 6, 1) for i in range(3)])
    cl = _cluster()
    r = requests_from_vms(vms, cl)
    assert fluid_bound(r, cl.capacity[0])["servers"] == 2
    lp = lp_bound(r, cl, at_s=50.0)
    assert lp["status"] == "optimal" and lp["servers"] == 3 and lp["active"] == 3
    # and every policy needs at least the bound
    used = simulate(cl, vms, "best-fit").metrics["peak_used_servers"]
    assert used >= lp["servers"]


def test_size_answers_with_the_fewest_servers_meeting_the_target():
    vms = vms_table([(f"v{i}", i, i + 40, 3 + i % 4, 2 + i % 5) for i in range(60)])
    probes, res = size_cluster(vms, SERVER, "best-fit", max_failure_rate=0.0)
    n = res["servers"]
    assert n >= max(res["fluid_bound"], res["lp_bound"])
    assert simulate(_cluster(n), vms, "best-fit").metrics["failures"] == 0
    assert simulate(_cluster(n - 1), vms, "best-fit").metrics["failures"] > 0
    assert probes.filter(probes["servers"] == n)["ok"].item() is True
    assert res["gap"] == pytest.approx(n / max(res["fluid_bound"], res["lp_bound"]) - 1)


def test_sizing_with_failures_adds_headroom():
    from fleetlab.sim import CrashSpec, Duration, FailureSpec

    vms = vms_table([(f"v{i}", i, i + 40, 3 + i % 4, 2 + i % 5) for i in range(60)])
    _, plain = size_cluster(vms, SERVER, "best-fit", max_failure_rate=0.0)
    spec = FailureSpec(node=CrashSpec(mtbf=Duration(mean_s=30.0), mttr=Duration(mean_s=20.0)))
    probes, failing = size_cluster(vms, SERVER, "best-fit", max_failure_rate=0.0, failures=spec)
    assert failing["with_failures"] and not plain["with_failures"]
    assert failing["servers"] > plain["servers"]
    assert probes.filter(probes["servers"] == failing["servers"])["ok"].item() is True
