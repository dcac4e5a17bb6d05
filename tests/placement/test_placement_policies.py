"""Policies: golden decisions on a hand-built state, and class mode == server mode."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import known_stream, vms_table

from fleetlab.errors import ConfigError
from fleetlab.placement import (
    POLICY_NAMES,
    Ask,
    ClusterSpec,
    ClusterState,
    Policy,
    ServerType,
    build_cluster,
    decide,
    make_policy,
    place_stream,
    requested_to_capacity_ratio,
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
    # and the compiled kernel decides the same stream identically
    assert _kernel_decisions(cl, reqs, fast) == got


def _kernel_decisions(cl, reqs, policy, *, max_trees=64):
    """place_stream's decisions in _run_by_hand's form (node, GPU slots) or None."""
    out = place_stream(cl, reqs, policy, max_trees=max_trees)
    return [
        None if n < 0 else (int(n), tuple(int(g) for g in row if g >= 0))
        for n, row in zip(out.node.tolist(), out.gpus.tolist(), strict=True)
    ]


KERNEL_POLICIES = ["first-fit", *SHAPE_INDEXED, "rtcr-custom"]


def _kernel_policy(name):
    if name == "rtcr-custom":
        # a spreading-then-packing shape with interior points (np.interp's branches)
        shape = ((10.0, 0.0), (50.0, 10.0), (75.0, 10.0), (90.0, 2.0))
        return Policy(name, (requested_to_capacity_ratio(shape),))
    return make_policy(name)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(KERNEL_POLICIES),
    max_trees=st.sampled_from([1, 2, 64]),
    counts=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3)),
    rows=st.lists(
        st.tuples(
            st.integers(0, 30),
            st.one_of(st.none(), st.integers(0, 25)),
            st.sampled_from([0.5, 1, 2, 4, 6]),
            st.sampled_from([1, 2, 4, 8, 12]),
            st.sampled_from([0, 0, 0, 1, 1, 2, 3]),
            st.sampled_from([125, 250, 500, 1000]),
            st.sampled_from(["", "", "V100", "A100", "A100|V100"]),
        ),
        min_size=1,
        max_size=120,
    ),
)
def test_compiled_kernel_decides_exactly_like_the_python_policies(name, max_trees, counts, rows):
    # random clusters of three types (two GPU models), random streams with departures
    # (and VMs that never leave), shared and whole GPUs, GPU model constraints, few
    # trees (1 or 2: recycled and rebuilt as shapes alternate) or plenty (64)
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="a", count=counts[0], capacity={"cores": 8, "memory_gb": 16}),
                ServerType(
                    name="v",
                    count=counts[1],
                    capacity={"cores": 16, "memory_gb": 32},
                    gpus=2,
                    gpu_model="V100",
                ),
                ServerType(
                    name="h",
                    count=counts[2],
                    capacity={"cores": 32, "memory_gb": 24},
                    gpus=4,
                    gpu_model="A100",
                ),
            )
        )
    )
    vms = vms_table(
        [
            (
                f"v{i}",
                a,
                None if life is None else a + life,
                c,
                m,
                g,
                milli if g == 1 else 1000,
                model if g else "",
            )
            for i, (a, life, c, m, g, milli, model) in enumerate(rows)
        ],
        columns=("gpus", "gpu_milli", "gpu_model"),
    )
    reqs = requests_from_vms(vms, cl)
    policy = _kernel_policy(name)
    want = _run_by_hand(cl, reqs, policy)
    assert _kernel_decisions(cl, reqs, policy, max_trees=max_trees) == want
    assert want == _run_by_hand(cl, reqs, dataclasses.replace(policy, by_class=False))


def test_compiled_kernel_places_a_known_stream():
    # 3 servers of 10 cores / 10 GiB; best fit packs, worst fit spreads, a VM that
    # arrives when its predecessor left reuses its room, an oversized one fails
    cl, vms = known_stream()
    reqs = requests_from_vms(vms, cl)
    assert place_stream(cl, reqs, make_policy("best-fit")).node.tolist() == [0, 0, 1, 1, -1]
    assert place_stream(cl, reqs, make_policy("worst-fit")).node.tolist() == [0, 1, 2, 0, -1]
    assert place_stream(cl, reqs, make_policy("first-fit")).node.tolist() == [0, 0, 1, 0, -1]
    empty = place_stream(cl, reqs.take(np.arange(0)), make_policy("best-fit"))
    assert empty.node.shape == (0,) and empty.gpus.shape == (0, 1)


def test_compiled_kernel_refuses_policies_it_cannot_run():
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=2, capacity={"cores": 4, "memory_gb": 4}),)
        )
    )
    reqs = requests_from_vms(vms_table([("a", 0, 1, 1, 1)]), cl)
    for name in ("protean", "lifetime", "oversub", "random", "gpu-packing"):
        with pytest.raises(ConfigError, match=f"policy '{name}': no compiled form"):
            place_stream(cl, reqs, make_policy(name))
    with pytest.raises(ConfigError, match="no compiled form"):
        place_stream(cl, reqs, make_policy("best-fit", max_per_rack=1))
    with pytest.raises(ConfigError, match="max_trees: expected >= 1, found 0"):
        place_stream(cl, reqs, make_policy("best-fit"), max_trees=0)


def test_migration_makes_room_for_a_request_that_fits_nowhere():
    # best fit on two 10-core servers: a (4) and b (4) pack s0, c (5) goes to s1; d (6)
    # fits nowhere (free 2 and 5) until a moves from s0 to s1 (free 5 -> 1)
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=2, capacity={"cores": 10, "memory_gb": 10}),)
        )
    )
    vms = vms_table(
        [("a", 0, None, 4, 4), ("b", 1, None, 4, 4), ("c", 2, None, 5, 5), ("d", 3, 9, 6, 6)]
    )
    plain = simulate(cl, vms, make_policy("best-fit"), samples=5)
    assert plain.metrics["failures"] == 1 and plain.metrics["migrations"] == 0
    moved = simulate(cl, vms, make_policy("best-fit", migrate=True), samples=5)
    assert moved.metrics["failures"] == 0 and moved.metrics["migrations"] == 1
    nodes = dict(zip(moved.placements["vm_id"], moved.placements["node"], strict=True))
    assert nodes == {"a": "s-00001", "b": "s-00000", "c": "s-00001", "d": "s-00000"}
    assert (moved.placements["outcome"] == "placed").all()


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["best-fit", "first-fit", "worst-fit", "tetris", "protean"]),
    rows=st.lists(
        st.tuples(
            st.integers(0, 40),
            st.integers(1, 30),
            st.sampled_from([1, 3, 5, 7]),
            st.sampled_from([1, 2, 5, 7]),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_migrations_never_overfill_and_never_lose_a_placed_vm(name, rows):
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="a", count=3, capacity={"cores": 8, "memory_gb": 8}),)
        )
    )
    vms = vms_table([(f"v{i}", a, a + life, c, m) for i, (a, life, c, m) in enumerate(rows)])
    plain = simulate(cl, vms, make_policy(name), samples=30)
    res = simulate(cl, vms, make_policy(name, migrate=True), samples=30)
    tl = res.timeline
    assert (tl["alloc_cores"] <= 1 + 1e-9).all() and (tl["alloc_memory_gb"] <= 1 + 1e-9).all()
    placed = res.placements.filter(res.placements["outcome"] == "placed").height
    assert placed + res.metrics["failures"] == len(rows)
    # without a migration the run is the plain one; with one, a VM sits elsewhere
    assert (res.metrics["migrations"] == 0) == (res.placements.equals(plain.placements))


@pytest.mark.parametrize("name", ["best-fit", "worst-fit", "tetris", "rtcr-custom"])
def test_lazy_kernel_trees_stay_exact_on_a_larger_cluster(name):
    # the kernel's trees are lazy: an update only marks the server dirty in each tree and
    # a tree is repaired when its shape is asked for, or rebuilt when more servers went
    # dirty than it remembers (n / 8). On 300 servers (a 4-level tree of fan-out 8) a
    # rare shape goes unasked while many servers change, so its tree overflows; every
    # decision must still be the Python path's
    from fleetlab.placement._kernel import StreamRun

    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=300, capacity={"cores": 16, "memory_gb": 64}),)
        )
    )
    rng = np.random.default_rng(7)
    n = 1500
    arrival = np.sort(rng.uniform(0, 1000, n))
    arrival[0], arrival[n // 2] = 0.0, 500.0  # the rare shape: first and in the middle
    life = rng.exponential(400.0, n)
    cores = rng.choice([1, 2, 4], n)
    mem = cores * rng.choice([2, 4], n)
    cores[[0, n // 2]], mem[[0, n // 2]] = 3, 5  # asked twice only
    vms = vms_table(
        [(f"v{i}", arrival[i], arrival[i] + life[i], cores[i], mem[i]) for i in range(n)]
    )
    reqs = requests_from_vms(vms, cl)
    policy = _kernel_policy(name)
    want = _run_by_hand(cl, reqs, policy)
    assert sum(w is None for w in want) == 0
    assert _kernel_decisions(cl, reqs, policy) == want
    assert _kernel_decisions(cl, reqs, policy, max_trees=2) == want
    # the rare shape's tree did overflow before it was asked again (the rebuild path)
    first, second = np.flatnonzero(reqs.demand[:, 0] == 3)
    run = StreamRun(cl, reqs, policy)
    run.advance(float(reqs.arrival[second]))
    rare = run.slot_of[run.shape_of[second]]
    assert first < second - 500 and run.node[first] >= 0
    assert rare >= 0 and run.full[rare] and run.stack.shape[1] == 300 // 8
    run.advance(math.inf)
    assert [int(x) for x in run.node] == [-1 if w is None else w[0] for w in want]
