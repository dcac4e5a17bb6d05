"""Policies: golden decisions on a hand-built state, and class mode == server mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import vms_table

from fleetlab.errors import ConfigError
from fleetlab.placement import (
    POLICY_NAMES,
    Ask,
    ClusterSpec,
    ClusterState,
    ServerType,
    build_cluster,
    decide,
    make_policy,
    requests_from_vms,
    simulate,
)


def _ask(i, cores, mem, *, dep=np.inf, tenant=-1, p95=None):
    return Ask(
        index=i,
        demand=np.array([cores, mem], dtype=float),
        gpu_count=0,
        gpu_milli=0,
        gpu_model="",
        tenant=tenant,
        arrival=0.0,
        predicted_departure=dep,
        p95_demand=cores if p95 is None else p95,
    )


@pytest.fixture
def loaded(small_cluster):
    """s0 free (8, 2), s1 free (3, 5), s2 empty (10, 10)."""
    state = ClusterState(small_cluster)
    state.place(_ask(100, 2, 8, dep=100.0), 0, ())
    state.place(_ask(101, 7, 5, dep=1000.0), 1, ())
    return state


@pytest.mark.parametrize(
    ("name", "server"),
    [
        ("first-fit", 0),
        ("best-fit", 1),
        ("best-fit-l2", 1),
        ("worst-fit", 2),
        ("dot-product", 1),
        ("tetris", 2),
        ("most-allocated", 1),
        ("least-allocated", 2),
        ("rtcr", 1),
        ("protean", 1),
    ],
)
def test_golden_decisions(loaded, name, server):
    # request (2 cores, 2 GiB); normalised residuals: s0 0.6, s1 0.4, s2 1.6
    assert decide(make_policy(name), loaded, _ask(0, 2, 2))[0] == server


@pytest.mark.parametrize(("dep", "server"), [(90.0, 0), (500.0, 1), (5000.0, 1)])
def test_lifetime_packs_vms_that_leave_together(loaded, dep, server):
    # s0's residents leave at 100 s, s1's at 1000 s, s2 is empty
    assert decide(make_policy("lifetime"), loaded, _ask(0, 1, 1, dep=dep))[0] == server


def test_oversubscription_admits_on_predicted_p95():
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=1, capacity={"cores": 10, "memory_gb": 100}),)
        )
    )
    vms = vms_table([(f"v{i}", i, None, 8, 10, 30.0) for i in range(6)], columns=("p95_cpu",))
    # 8 cores at P95 30% = 2.4 predicted cores: 4 fit in 10 cores at ratio 1.0
    assert simulate(cl, vms, make_policy("oversub", oversub_ratio=1.0)).metrics["failures"] == 2
    assert simulate(cl, vms, "best-fit").metrics["failures"] == 5


def test_spread_puts_a_tenants_vms_on_distinct_racks():
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=4, capacity={"cores": 10, "memory_gb": 10}),),
            servers_per_rack=2,
        )
    )
    vms = vms_table([(f"v{i}", i, None, 1, 1, "A") for i in range(3)], columns=("tenant",))
    res = simulate(cl, vms, make_policy("first-fit", max_per_rack=1))
    assert res.placements["node"].to_list()[:2] == ["s-00000", "s-00002"]
    assert res.placements["outcome"].to_list()[2] == "failed"
    assert simulate(cl, vms, "first-fit").placements["node"].to_list() == ["s-00000"] * 3


def test_unknown_policy_lists_the_names():
    with pytest.raises(ConfigError, match="best-fit"):
        make_policy("bestest-fit")
    with pytest.raises(ConfigError, match="fgd"):
        make_policy("fgd")


def test_random_is_seeded(small_cluster):
    vms = vms_table([(f"v{i}", i, None, 1, 1) for i in range(12)])
    a = simulate(small_cluster, vms, "random", seed=3).placements["node"].to_list()
    b = simulate(small_cluster, vms, "random", seed=3).placements["node"].to_list()
    c = simulate(small_cluster, vms, "random", seed=4).placements["node"].to_list()
    assert a == b and a != c


RESOURCE_POLICIES = [n for n in POLICY_NAMES if n != "fgd" and make_policy(n).by_class]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(RESOURCE_POLICIES),
    rows=st.lists(
        st.tuples(
            st.integers(0, 50),
            st.integers(1, 30),
            st.sampled_from([1, 2, 4]),
            st.sampled_from([1, 2, 4, 8]),
        ),
        min_size=5,
        max_size=60,
    ),
)
def test_class_index_decides_exactly_like_a_full_scan(name, rows):
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="a", count=5, capacity={"cores": 8, "memory_gb": 16}),
                ServerType(name="b", count=3, capacity={"cores": 16, "memory_gb": 16}),
            )
        )
    )
    vms = vms_table([(f"v{i}", a, a + life, c, m) for i, (a, life, c, m) in enumerate(rows)])
    reqs = requests_from_vms(vms, cl)
    fast = make_policy(name)
    slow = dataclasses.replace(fast, by_class=False)
    a = simulate(cl, reqs, fast, samples=5)
    b = simulate(cl, reqs, slow, samples=5)
    assert a.placements.equals(b.placements)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["best-fit", "worst-fit", "first-fit", "lifetime", "protean", "tetris"]),
    rows=st.lists(
        st.tuples(
            st.integers(0, 50),
            st.integers(1, 30),
            st.sampled_from([1, 3, 5]),
            st.sampled_from([1, 2, 7]),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_no_server_is_ever_over_capacity(name, rows):
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="a", count=4, capacity={"cores": 8, "memory_gb": 8}),)
        )
    )
    vms = vms_table([(f"v{i}", a, a + life, c, m) for i, (a, life, c, m) in enumerate(rows)])
    res = simulate(cl, vms, name, samples=30)
    tl = res.timeline
    assert (tl["alloc_cores"] <= 1 + 1e-9).all() and (tl["alloc_memory_gb"] <= 1 + 1e-9).all()
    placed = res.placements.filter(res.placements["outcome"] == "placed").height
    assert placed + res.metrics["failures"] == len(rows)


SHAPE_INDEXED = [
    "best-fit",
    "best-fit-l2",
    "worst-fit",
    "dot-product",
    "tetris",
    "most-allocated",
    "least-allocated",
    "rtcr",
]


def _run_by_hand(cl, reqs, policy, *, log_limit=None):
    """decide/place/release over ``reqs`` (departures first); the node per request."""
    import heapq

    from fleetlab.placement._state import ask_of

    state = ClusterState(cl)
    if log_limit is not None:
        state.classes.log_limit = log_limit
    where, heap = [], []
    for i in range(reqs.size):
        while heap and heap[0][0] <= reqs.arrival[i]:
            state.release(heapq.heappop(heap)[1])
        ask = ask_of(reqs, i)
        choice = decide(policy, state, ask)
        where.append(None if choice is None else (choice[0], tuple(choice[1])))
        if choice is not None:
            state.place(ask, *choice)
            heapq.heappush(heap, (reqs.departure[i], i))
    return where


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(SHAPE_INDEXED),
    log_limit=st.sampled_from([1, 4, 1024]),
    rows=st.lists(
        st.tuples(
            st.integers(0, 40),
            st.integers(1, 30),
            st.sampled_from([1, 2, 4]),
            st.sampled_from([1, 2, 4, 8]),
            st.sampled_from([0, 0, 1, 2]),
            st.sampled_from([250, 500, 1000]),
        ),
        min_size=5,
        max_size=80,
    ),
)
def test_shape_score_heaps_decide_exactly_like_a_full_scan(name, log_limit, rows):
    # score-based policies decide through per-(scorer, request shape) heaps of classes
    # (lazy invalidation, creation log trimmed every few classes with log_limit);
    # three dimensions plus shared and whole GPUs, many repeated shapes
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="a", count=5, capacity={"cores": 8, "memory_gb": 16, "ssd_gb": 10}),
                ServerType(
                    name="g",
                    count=3,
                    capacity={"cores": 16, "memory_gb": 16, "ssd_gb": 40},
                    gpus=2,
                ),
            )
        )
    )
    vms = vms_table(
        [
            (f"v{i}", a, a + life, c, m, g, milli if g == 1 else 1000)
            for i, (a, life, c, m, g, milli) in enumerate(rows)
        ],
        columns=("gpus", "gpu_milli"),
    )
    reqs = requests_from_vms(vms, cl)
    fast = make_policy(name)
    scan = dataclasses.replace(fast, by_class=False)
    # the same scorer, unmarked, takes the class scan without heaps
    plain = dataclasses.replace(fast, prefer=(lambda view, ask: fast.prefer[0](view, ask),))
    got = _run_by_hand(cl, reqs, fast, log_limit=log_limit)
    assert any(w is not None for w in got)
    assert got == _run_by_hand(cl, reqs, scan)
    assert got == _run_by_hand(cl, reqs, plain)
