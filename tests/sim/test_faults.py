"""Fault models: golden timelines, statistical properties, determinism, invariants."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import ConfigError
from fleetlab.sim import (
    CrashSpec,
    Duration,
    FailureSpec,
    FaultModel,
    PartitionSpec,
    SlowdownSpec,
    availability,
    draw_faults,
    failure_timeline,
    partition_windows,
    slowdown_windows,
)

NODES = [f"n{i:03d}" for i in range(200)]
RACKS = {n: f"rack{i % 10}" for i, n in enumerate(NODES)}


def _crash(kind: str, mtbf: float, mttr: float, shape: float = 1.0) -> CrashSpec:
    return CrashSpec(
        mtbf=Duration(kind=kind, mean_s=mtbf, shape=shape),
        mttr=Duration(kind=kind, mean_s=mttr, shape=shape),
    )


def test_constant_durations_give_the_golden_timeline() -> None:
    spec = FailureSpec(node=_crash("constant", 10.0, 5.0))
    t = failure_timeline(spec, ["a"], horizon_s=32.0, rng=0)
    assert t["down_s"].to_list() == [10.0, 25.0]
    assert t["up_s"].to_list() == [15.0, 30.0]
    a = availability(t, nodes=["a", "b"], horizon_s=32.0)
    assert a["downtime_s"].to_list() == [10.0, 0.0]
    assert a["availability"].to_list() == pytest.approx([22 / 32, 1.0])
    assert a["outages"].to_list() == [2, 0]


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("exponential", 1.0), ("weibull", 0.7), ("weibull", 2.5), ("lognormal", 1.0)],
)
def test_mean_uptime_is_mtbf_and_mean_downtime_is_mttr(kind: str, shape: float) -> None:
    mtbf, mttr, horizon = 1000.0, 100.0, 200_000.0
    spec = FailureSpec(node=_crash(kind, mtbf, mttr, shape))
    t = failure_timeline(spec, NODES, horizon_s=horizon, rng=np.random.default_rng(7))
    full = t.filter(pl.col("up_s") < horizon)
    assert (full["up_s"] - full["down_s"]).mean() == pytest.approx(mttr, rel=0.05)
    ups = (
        t.sort("node", "down_s")
        .with_columns(prev_up=pl.col("up_s").shift(1).over("node").fill_null(0.0))
        .select(uptime=pl.col("down_s") - pl.col("prev_up"))
    )
    assert ups["uptime"].mean() == pytest.approx(mtbf, rel=0.05)
    a = availability(t, nodes=NODES, horizon_s=horizon)
    assert a["availability"].mean() == pytest.approx(mtbf / (mtbf + mttr), abs=0.01)
    assert spec.node is not None
    assert spec.node.steady_state_availability == pytest.approx(1000 / 1100)


def test_weibull_shape_changes_dispersion_not_mean() -> None:
    rng = np.random.default_rng(3)
    low = Duration(kind="weibull", mean_s=50.0, shape=0.5).sample(rng, 200_000)
    high = Duration(kind="weibull", mean_s=50.0, shape=3.0).sample(rng, 200_000)
    assert low.mean() == pytest.approx(50.0, rel=0.03)
    assert high.mean() == pytest.approx(50.0, rel=0.01)
    assert low.std() > 3 * high.std()


def test_domain_event_takes_down_every_member_at_once() -> None:
    spec = FailureSpec(domain=_crash("exponential", 5000.0, 200.0))
    t = failure_timeline(spec, NODES, RACKS, horizon_s=100_000.0, rng=1)
    assert t.height > 0
    assert t["cause"].str.starts_with("domain:rack").all()
    per_event = t.group_by("cause", "down_s").agg(n=pl.len(), ups=pl.col("up_s").n_unique())
    assert (per_event["n"] == 20).all()  # 200 nodes over 10 racks
    assert (per_event["ups"] == 1).all()
    # members of a rack have identical availability; racks differ
    a = availability(t, nodes=NODES, horizon_s=100_000.0).with_columns(
        rack=pl.col("node").replace_strict(RACKS)
    )
    assert (a.group_by("rack").agg(pl.col("availability").n_unique())["availability"] == 1).all()


def test_overlapping_causes_are_merged_in_availability() -> None:
    t = pl.DataFrame(
        {
            "node": ["a", "a", "a"],
            "down_s": [10.0, 12.0, 40.0],
            "up_s": [20.0, 15.0, 50.0],
            "cause": ["domain:r", "node", "node"],
        }
    )
    a = availability(t, nodes=["a"], horizon_s=100.0)
    assert a.row(0, named=True) == {
        "node": "a",
        "outages": 2,
        "downtime_s": 20.0,
        "availability": 0.8,
    }


def test_same_seed_same_timeline_other_seed_other_timeline() -> None:
    model = FaultModel(
        failures=FailureSpec(
            node=_crash("weibull", 3000, 300, 0.8), domain=_crash("exponential", 9e3, 600)
        ),
        slowdowns=SlowdownSpec(interval=Duration(mean_s=2000), duration=Duration(mean_s=60)),
        partitions=PartitionSpec(interval=Duration(mean_s=8000), duration=Duration(mean_s=120)),
    )
    a = draw_faults(model, NODES[:30], RACKS, 50_000.0, 11)
    b = draw_faults(model, NODES[:30], RACKS, 50_000.0, np.random.default_rng(11))
    c = draw_faults(model, NODES[:30], RACKS, 50_000.0, 12)
    assert a.equals(b)
    assert not a.equals(c)
    assert set(a["kind"].unique()) == {"down", "slow", "partitioned"}


def test_adding_a_process_does_not_change_the_others() -> None:
    fail = FailureSpec(node=_crash("exponential", 3000, 300))
    only = draw_faults(FaultModel(failures=fail), NODES[:20], None, 40_000.0, 5)
    more = draw_faults(
        FaultModel(
            failures=fail,
            slowdowns=SlowdownSpec(interval=Duration(mean_s=900), duration=Duration(mean_s=30)),
        ),
        NODES[:20],
        None,
        40_000.0,
        5,
    )
    assert only.equals(more.filter(pl.col("kind") == "down"))


def test_slowdowns_have_factors_in_range_and_expected_share_of_time() -> None:
    spec = SlowdownSpec(
        interval=Duration(mean_s=900.0),
        duration=Duration(mean_s=100.0),
        factor_min=1.5,
        factor_max=3.0,
    )
    w = slowdown_windows(spec, NODES, 100_000.0, 2)
    assert w["factor"].min() >= 1.5 and w["factor"].max() <= 3.0
    assert w["factor"].mean() == pytest.approx(2.25, abs=0.05)
    slow_share = (w["end_s"] - w["start_s"]).sum() / (len(NODES) * 100_000.0)
    assert slow_share == pytest.approx(0.1, abs=0.01)


def test_partitions_cut_off_one_domain_or_a_fraction() -> None:
    spec = PartitionSpec(interval=Duration(mean_s=1000.0), duration=Duration(mean_s=50.0))
    p = partition_windows(spec, NODES, RACKS, 50_000.0, 4)
    per = p.group_by("partition_id").agg(
        racks=pl.col("node").replace_strict(RACKS).n_unique(), n=pl.len()
    )
    assert (per["racks"] == 1).all() and (per["n"] == 20).all()
    assert per.height == pytest.approx(50_000 / 1050, rel=0.3)
    rnd = partition_windows(
        spec.model_copy(update={"scope": "random", "fraction": 0.05}), NODES, None, 20_000.0, 4
    )
    assert (rnd.group_by("partition_id").len()["len"] == 10).all()
    # partitions never overlap in time
    spans = (
        p.group_by("partition_id")
        .agg(pl.col("start_s").first(), pl.col("end_s").first())
        .sort("start_s")
    )
    assert (spans["start_s"].shift(-1).drop_nulls() >= spans["end_s"].head(spans.height - 1)).all()


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ConfigError, match="horizon_s"):
        failure_timeline(FailureSpec(node=_crash("exponential", 1, 1)), ["a"], horizon_s=-1.0)
    with pytest.raises(ConfigError, match="domains"):
        failure_timeline(FailureSpec(domain=_crash("exponential", 1, 1)), ["a"], None, 10.0)
    with pytest.raises(ConfigError, match="domains"):
        partition_windows(
            PartitionSpec(interval=Duration(mean_s=1), duration=Duration(mean_s=1)),
            ["a"],
            None,
            10.0,
        )
    with pytest.raises(ConfigError, match="columns"):
        availability(pl.DataFrame({"x": [1]}), nodes=["a"], horizon_s=1.0)
    with pytest.raises(ValueError, match="mean_s"):
        Duration(mean_s=0)
    with pytest.raises(ValueError, match="factor_max"):
        SlowdownSpec(
            interval=Duration(mean_s=1), duration=Duration(mean_s=1), factor_min=3, factor_max=2
        )


def test_specs_load_from_yaml_like_dicts_and_are_frozen() -> None:
    import yaml

    text = """
failures:
  node: {mtbf: {kind: weibull, mean_s: 86400, shape: 0.8}, mttr: {kind: lognormal, mean_s: 600, shape: 1.2}}
  domain: {mtbf: {mean_s: 2592000}, mttr: {mean_s: 3600}}
slowdowns: {interval: {mean_s: 7200}, duration: {mean_s: 300}, factor_min: 1.5, factor_max: 5}
"""
    model = FaultModel.model_validate(yaml.safe_load(text))
    assert model.failures is not None and model.failures.node is not None
    assert model.failures.node.mtbf.kind == "weibull"
    with pytest.raises(ValueError):
        model.failures.node.mtbf.mean_s = 1.0  # type: ignore[misc]


@settings(max_examples=40, deadline=None)
@given(
    mtbf=st.floats(1.0, 1e4),
    mttr=st.floats(0.1, 1e3),
    horizon=st.floats(1.0, 1e5),
    n=st.integers(0, 12),
    kind=st.sampled_from(["exponential", "weibull", "lognormal", "constant"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_windows_lie_in_the_horizon_and_never_overlap_per_node(
    mtbf: float, mttr: float, horizon: float, n: int, kind: str, seed: int
) -> None:
    nodes = [f"x{i}" for i in range(n)]
    t = failure_timeline(
        FailureSpec(node=_crash(kind, mtbf, mttr, 0.9)), nodes, horizon_s=horizon, rng=seed
    )
    assert (t["down_s"] >= 0).all() and (t["up_s"] <= horizon).all()
    assert (t["down_s"] <= t["up_s"]).all()
    gaps = t.sort("node", "down_s").with_columns(prev=pl.col("up_s").shift(1).over("node"))
    assert (gaps.drop_nulls("prev")["down_s"] >= gaps.drop_nulls("prev")["prev"]).all()
    a = availability(t, nodes=nodes, horizon_s=horizon)
    assert a.height == n
    assert ((a["availability"] >= 0) & (a["availability"] <= 1 + 1e-12)).all()


def test_slo_attainment_golden() -> None:
    from fleetlab.sim import slo_attainment

    a = pl.DataFrame(
        {
            "node": ["a", "b", "c", "d"],
            "outages": [0, 1, 2, 1],
            "downtime_s": [0.0, 36.0, 3600.0, 86.4],
            "availability": [1.0, 0.9996, 0.9583, 0.999],
        }
    )
    s = slo_attainment(a, target=0.999)
    assert s["nodes"] == 4 and s["nodes_below_target"] == 1 and s["attainment"] == 0.75
    assert s["min_availability"] == 0.9583
    assert s["total_downtime_s"] == pytest.approx(3722.4)
    with pytest.raises(ConfigError, match="target"):
        slo_attainment(a, target=1.5)
