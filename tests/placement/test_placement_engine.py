"""simulate()'s engines: the compiled kernel gives exactly the Python path's results."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import known_stream, vms_table
from rich.console import Console
from typer.testing import CliRunner

from fleetlab.cli import _placement as cli_placement
from fleetlab.cli import app
from fleetlab.errors import ConfigError
from fleetlab.placement import (
    ClusterSpec,
    Policy,
    ServerType,
    build_cluster,
    compare,
    fragmentation_experiment,
    make_policy,
    requested_to_capacity_ratio,
    requests_from_vms,
    simulate,
    size_cluster,
)
from fleetlab.placement._kernel import _advance

KERNEL_POLICIES = [
    "first-fit",
    "best-fit",
    "best-fit-l2",
    "worst-fit",
    "dot-product",
    "tetris",
    "most-allocated",
    "least-allocated",
    "rtcr",
    "rtcr-custom",
]


def _policy(name):
    if name == "rtcr-custom":
        # interior points exercise numpy interp's branches in the kernel's twin
        shape = ((10.0, 0.0), (50.0, 10.0), (75.0, 10.0), (90.0, 2.0))
        return Policy(name, (requested_to_capacity_ratio(shape),))
    return make_policy(name)


def _cluster(counts, *, gpus=True):
    types = [ServerType(name="a", count=counts[0], capacity={"cores": 8, "memory_gb": 16})]
    if gpus:
        types += [
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
        ]
    else:
        types.append(ServerType(name="b", count=counts[1], capacity={"cores": 16, "memory_gb": 8}))
    return build_cluster(ClusterSpec(server_types=tuple(types), servers_per_rack=2))


def _without_engine(metrics):
    return {k: v for k, v in metrics.items() if k != "engine"}


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(KERNEL_POLICIES),
    gpus=st.booleans(),
    counts=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3)),
    samples=st.sampled_from([2, 3, 17, 60]),
    rows=st.lists(
        st.tuples(
            st.integers(0, 40),
            # lifetime: never leaves, zero (leaves at its own arrival) or 1..30 s
            st.one_of(st.none(), st.just(0), st.integers(1, 30)),
            st.sampled_from([0.5, 1, 2, 4, 6, 40]),  # 40 cores: larger than any server
            st.sampled_from([1, 2, 4, 8, 12]),
            st.sampled_from([0, 0, 0, 1, 1, 2, 3]),
            st.sampled_from([125, 250, 500, 1000]),
            st.sampled_from(["", "", "V100", "A100", "A100|V100"]),
        ),
        min_size=1,
        max_size=120,
    ),
)
def test_kernel_engine_reports_exactly_what_the_python_path_reports(
    name, gpus, counts, samples, rows
):
    # random clusters (with or without GPUs of two models), random streams with
    # departures, VMs that never leave or leave at once, too-large requests, shared and
    # whole GPUs, model constraints, many or few sample times (falling on event times):
    # the timeline (every sampled column, gpu_frag included), the placements and the
    # metrics are bit-identical (the kernel makes the same float operations in the same
    # order, and the same _sample reads its state)
    cl = _cluster(counts, gpus=gpus)
    table = [
        (
            f"v{i}",
            a,
            None if life is None else a + life,
            c,
            m,
            g if gpus else 0,
            milli if g == 1 else 1000,
            model if g and gpus else "",
        )
        for i, (a, life, c, m, g, milli, model) in enumerate(rows)
    ]
    vms = vms_table(table, columns=("gpus", "gpu_milli", "gpu_model"))
    reqs = requests_from_vms(vms, cl)
    policy = _policy(name)
    fast = simulate(cl, reqs, policy, samples=samples, engine="kernel")
    ref = simulate(cl, reqs, policy, samples=samples, engine="python")
    assert fast.metrics["engine"] == "kernel" and ref.metrics["engine"] == "python"
    assert fast.timeline.columns == ref.timeline.columns
    assert fast.timeline.height == ref.timeline.height == samples
    assert fast.timeline.equals(ref.timeline)
    assert fast.placements.equals(ref.placements)
    assert _without_engine(fast.metrics) == _without_engine(ref.metrics)
    # and the timeline's counts add up: active + failures never exceed arrivals so far
    arrived = np.searchsorted(reqs.arrival, fast.timeline["t_s"].to_numpy(), side="left")
    assert (fast.timeline["active"] + fast.timeline["failures"] <= arrived).all()


def test_kernel_timeline_on_a_known_stream():
    # 3 servers of 10 cores / 10 GiB, best fit: a (0-5 s) and b pack s0, c goes to s1,
    # a leaves at 5, d (5 s) joins c on s1, e (11 cores) is too large; grid 0..6 s, each
    # sample taken before the events at its time
    cl, vms = known_stream()
    res = simulate(cl, vms, "best-fit", samples=7)
    assert res.metrics["engine"] == "kernel"
    tl = res.timeline
    assert tl["t_s"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert tl["active"].to_list() == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert tl["used_servers"].to_list() == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert tl["alloc_cores"].to_list() == pytest.approx(
        [0, 0.2, 0.3, 14 / 30, 14 / 30, 14 / 30, 0.4]
    )
    assert tl["density_cores"][-1] == pytest.approx(12 / 20)
    assert res.metrics["failures"] == 1 and res.metrics["too_large"] == 1
    assert res.metrics["peak_used_servers"] == 2
    assert res.placements["node"].to_list() == ["s-00000", "s-00000", "s-00001", "s-00001", None]
    assert res.placements["outcome"].to_list() == ["placed"] * 4 + ["too_large"]
    assert res.placements["end_s"].to_list() == [
        5.0,
        float("inf"),
        float("inf"),
        float("inf"),
        None,
    ]


def test_auto_picks_the_kernel_only_for_eligible_runs(small_cluster):
    vms = vms_table([(f"v{i}", i, i + 5, 2, 2) for i in range(12)])
    outage = pl.DataFrame({"node": ["s-00000"], "down_s": [3.0], "up_s": [6.0]})
    empty = outage.head(0)
    cases = [
        (make_policy("best-fit"), None, "kernel"),
        (make_policy("rtcr"), empty, "kernel"),  # no outage rows: still eligible
        (make_policy("best-fit"), outage, "python"),
        (make_policy("best-fit", migrate=True), None, "python"),
        (make_policy("best-fit", max_per_rack=1), None, "python"),
        (make_policy("protean"), None, "python"),
        (make_policy("oversub"), None, "python"),
        (make_policy("gpu-packing"), None, "python"),
    ]
    for pol, out, want in cases:
        res = simulate(small_cluster, vms, pol, samples=5, outages=out)
        assert res.metrics["engine"] == want, pol.name
        ref = simulate(small_cluster, vms, pol, samples=5, outages=out, engine="python")
        assert res.timeline.equals(ref.timeline) and res.placements.equals(ref.placements)


def test_kernel_engine_says_why_a_run_is_not_eligible(small_cluster):
    vms = vms_table([("a", 0, 1, 1, 1)])
    outage = pl.DataFrame({"node": ["s-00000"], "down_s": [0.5], "up_s": [0.7]})
    cases = [
        (make_policy("best-fit", migrate=True), None, "migrates VMs"),
        (make_policy("best-fit", max_per_rack=1), None, "filters"),
        (make_policy("oversub"), None, "oversubscribes"),
        (make_policy("protean"), None, "scores per server"),
        (make_policy("gpu-packing"), None, "chains 2 scorers"),
        (Policy("mine", (lambda view, ask: view.index * 1.0,)), None, "no compiled twin"),
        (make_policy("best-fit"), outage, "node outages given"),
    ]
    for pol, out, why in cases:
        with pytest.raises(ConfigError, match=f"engine='kernel': not eligible: .*{why}"):
            simulate(small_cluster, vms, pol, outages=out, engine="kernel")
    with pytest.raises(ConfigError, match="engine: expected auto, kernel or python, found 'gpu'"):
        simulate(small_cluster, vms, "best-fit", engine="gpu")  # type: ignore[arg-type]


def test_kernel_compiles_once_per_process_and_reports_progress(small_cluster):
    # GPU and CPU-only clusters, empty and full streams, any sample count: one compiled
    # signature of the stepped kernel serves them all (numba compiles per signature)
    seen: list[int] = []
    vms = vms_table([(f"v{i}", i, i + 3, 1, 1) for i in range(30)])
    simulate(small_cluster, vms, "worst-fit", samples=4, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] <= 60 and len(seen) == 4
    gpu = _cluster((1, 1, 1))
    table = [(f"g{i}", i, i + 2, 1, 1, 1, 500, "") for i in range(10)]
    gvms = vms_table(table, columns=("gpus", "gpu_milli", "gpu_model"))
    assert simulate(gpu, gvms, "dot-product", samples=3).metrics["engine"] == "kernel"
    assert simulate(small_cluster, vms.head(0), "best-fit").metrics["requests"] == 0
    assert len(_advance.signatures) == 1


def test_compare_and_size_report_the_engine(small_cluster):
    vms = vms_table([(f"v{i}", i, i + 20, 1 + i % 5, 2 + i % 3) for i in range(30)])
    summary, _, _ = compare(small_cluster, vms, ["best-fit", "protean"], with_bounds=False)
    assert summary["engine"].to_list() == ["kernel", "python"]
    moved, _, _ = compare(small_cluster, vms, ["best-fit"], migrate=True, with_bounds=False)
    assert moved["engine"].to_list() == ["python"]
    server = ServerType(name="s", count=0, capacity={"cores": 8, "memory_gb": 16})
    probes, result = size_cluster(vms, server, "best-fit")
    assert result["engine"] == "kernel" and set(probes["engine"]) == {"kernel"}
    _, slow = size_cluster(vms, server, "best-fit", engine="python")
    assert slow["engine"] == "python" and slow["servers"] == result["servers"]
    _, mig = size_cluster(vms, server, "best-fit", migrate=True)
    assert mig["engine"] == "python" and mig["migrate"] is True
    assert mig["servers"] <= result["servers"]


def test_cli_shows_the_engine_and_takes_migrate(tmp_path, monkeypatch):
    # two 10-core servers: d (6 cores) fits only after a moves (see the migration test)
    trace = tmp_path / "vms.parquet"
    vms_table(
        [("a", 0, None, 4, 4), ("b", 1, None, 4, 4), ("c", 2, None, 5, 5), ("d", 3, 9, 6, 6)]
    ).write_parquet(trace)
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "server_types:\n  - {name: s, count: 2, capacity: {cores: 10, memory_gb: 10}}\n"
    )
    base = ["placement", "simulate", "--trace", str(trace), "--cluster", str(cluster), "--json"]
    runner = CliRunner()
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["summary"][0]
    assert row["engine"] == "kernel" and row["failures"] == 1 and row["migrations"] == 0
    res = runner.invoke(app, [*base, "--migrate"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    row = data["summary"][0]
    assert row["engine"] == "python" and row["failures"] == 0 and row["migrations"] == 1
    assert data["policies"]["best-fit"]["engine"] == "python"
    # the table (a wide console of our own, so no column is cut short)
    wide = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(cli_placement, "out", wide)
    res = runner.invoke(app, base[:-1])
    table = wide.file.getvalue()
    assert res.exit_code == 0 and "engine" in table and "kernel" in table
    size = [
        "placement",
        "size",
        "--trace",
        str(trace),
        "--cores",
        "10",
        "--memory-gb",
        "10",
        "--json",
    ]
    plain = json.loads(runner.invoke(app, size).stdout)
    moved = json.loads(runner.invoke(app, [*size, "--migrate"]).stdout)
    assert plain["engine"] == "kernel" and moved["engine"] == "python"
    assert moved["migrate"] is True and moved["servers"] <= plain["servers"]
    assert [p["engine"] for p in moved["probes"]] == ["python"] * len(moved["probes"])


def test_fgd_protocol_curves_are_identical_through_the_kernel():
    # the fill-the-cluster protocol runs best-fit and dot-product in the kernel (auto)
    # and gpu-packing on the Python path; every curve point equals the Python path's
    rng = np.random.default_rng(7)
    rows = [
        (
            f"t{i}",
            0,
            None,
            float(rng.choice([1, 2, 4])),
            float(rng.choice([2, 4, 8])),
            int(g),
            int(rng.choice([250, 500, 1000])) if g == 1 else 1000,
            "",
        )
        for i, g in enumerate(rng.choice([1, 1, 1, 2, 4], size=60))
    ]
    vms = vms_table(rows, columns=("gpus", "gpu_milli", "gpu_model"))
    cl = _cluster((1, 3, 2))
    policies = ["best-fit", "dot-product", "gpu-packing"]
    fast = fragmentation_experiment(cl, vms, policies, seeds=(0, 1), step=0.1)
    ref = fragmentation_experiment(cl, vms, policies, seeds=(0, 1), step=0.1, engine="python")
    assert fast[0].height > 10 and fast[0].equals(ref[0])
    assert fast[1].equals(ref[1]) and fast[2] == ref[2]
    assert (fast[0]["unallocated"] < 1).any() and (fast[0]["fragmented"] > 0).any()
    with pytest.raises(ConfigError, match="engine: expected auto or python, found 'kernel'"):
        fragmentation_experiment(cl, vms, policies, engine="kernel")  # type: ignore[arg-type]
