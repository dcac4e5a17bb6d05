"""The arrival process beyond a stationary renewal: long-term trend and batch arrivals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import batched_vms, trend_vms
from pydantic import ValidationError

from fleetlab.workload import (
    RateCurve,
    compare,
    fit,
    iter_chunks,
    load_model,
    sample,
    save_model,
)
from fleetlab.workload._stats import cv

DAY = 86400.0


@pytest.fixture(scope="module")
def stepped() -> pl.DataFrame:
    # 28 days, 200 VMs/day for 14 days then 800/day: a weekly profile alone would put
    # 500/day everywhere
    return trend_vms(28, seed=4, step_day=14, low=200.0, high=800.0)


def test_trend_recovers_a_step_in_the_load(stepped: pl.DataFrame) -> None:
    model, diag = fit(stepped, seed=0)
    rate = model.arrival.rate
    assert rate.trend is not None and rate.trend_bin_s == DAY
    assert diag["trend_days"] == len(rate.trend) == 28
    trend = np.asarray(rate.trend)
    # unit mean over the trace; a 1:4 step, smoothed over a week around day 14
    assert np.mean(trend) == pytest.approx(1.0, rel=0.02)
    assert np.mean(trend[:10]) == pytest.approx(0.4, rel=0.1)
    assert np.mean(trend[-10:]) == pytest.approx(1.6, rel=0.1)
    # the trend carries the step, so the renewal is Poisson-like again
    assert model.arrival.renewal.cv == pytest.approx(1.0, abs=0.1)
    synthetic = model.sample(seed=1)
    per_day = np.bincount((synthetic["created_s"].to_numpy() // DAY).astype(np.int64))
    assert np.mean(per_day[:12]) == pytest.approx(200, rel=0.1)
    assert np.mean(per_day[16:28]) == pytest.approx(800, rel=0.1)
    cmp = compare(stepped, synthetic)
    assert cmp.passed, cmp.metrics["failed"]


def test_a_longer_trace_holds_the_last_trend_level(stepped: pl.DataFrame, tmp_path) -> None:
    model, _ = fit(stepped, seed=0)
    assert load_model(save_model(model, tmp_path / "trend.yaml")) == model
    longer = sample(model, duration_s=42 * DAY, seed=2)
    per_day = np.bincount((longer["created_s"].to_numpy() // DAY).astype(np.int64))
    assert per_day.size == 42
    last = model.arrival.rate.trend[-1] * np.mean(model.arrival.rate.levels) * DAY
    # after day 28 the final level is held (no extrapolated growth)
    assert np.mean(per_day[29:]) == pytest.approx(last, rel=0.08)
    assert np.mean(per_day[29:]) == pytest.approx(800, rel=0.15)


def test_steady_traces_get_no_trend() -> None:
    flat = trend_vms(21, seed=5, step_day=0, low=300.0, high=300.0)
    model, diag = fit(flat, seed=0)
    assert model.arrival.rate.trend is None and diag["trend_days"] == 0


def test_trend_synthesis_is_chunk_size_free(stepped: pl.DataFrame) -> None:
    model, _ = fit(stepped, seed=0)
    a = sample(model, duration_s=30 * DAY, seed=3)
    b = pl.concat(list(iter_chunks(model, duration_s=30 * DAY, seed=3, chunk_rows=999)))
    assert a.height == b.height
    assert np.max(np.abs(a["created_s"].to_numpy() - b["created_s"].to_numpy())) < 1e-6


def test_rate_curve_trend_needs_its_step() -> None:
    with pytest.raises(ValidationError, match="trend and trend_bin_s"):
        RateCurve(bin_s=3600, period_s=86400, levels=[1.0] * 24, mean_rate_per_s=1, trend=[1.0])
    with pytest.raises(ValidationError, match="whole number of bins"):
        RateCurve(
            bin_s=3600,
            period_s=86400,
            levels=[1.0] * 24,
            mean_rate_per_s=1,
            trend=[1.0],
            trend_bin_s=5000,
        )


@pytest.fixture(scope="module")
def jobs() -> pl.DataFrame:
    return batched_vms(6000, seed=7, mean_gap_s=8.0)


def test_batches_are_fitted_as_a_compound_process(jobs: pl.DataFrame) -> None:
    model, diag = fit(jobs, seed=0)
    batch = model.arrival.batch
    assert batch is not None and batch.kind == "discrete" and batch.lower == 1.0
    assert model.arrival.quantum_s == pytest.approx(1.0)
    # mean 5 per job; jobs sharing a second (1 in 16 at one per 8 s) count as one batch
    _, real_sizes = np.unique(jobs["created_s"].to_numpy(), return_counts=True)
    assert diag["batch_mean"] == pytest.approx(float(np.mean(real_sizes)), rel=1e-9)
    assert 5.0 < diag["batch_mean"] < 5.6
    # instants: the distinct seconds (one job per 8 s, less the shared seconds)
    span = float(jobs["created_s"].max())
    assert model.arrival.rate.mean_rate_per_s == pytest.approx(real_sizes.size / span, rel=0.02)
    assert model.arrival.rate.mean_rate_per_s == pytest.approx(1 / 8.0, rel=0.1)
    assert model.arrival.renewal.cv == pytest.approx(1.0, abs=0.1)
    synthetic = model.sample(seed=1)
    t = synthetic["created_s"].to_numpy()
    _, sizes = np.unique(t, return_counts=True)
    assert np.mean(sizes) == pytest.approx(np.mean(real_sizes), rel=0.08)
    assert np.all(t == np.floor(t))  # back on the 1 s grid
    real_cv = cv(np.diff(jobs["created_s"].to_numpy()))
    assert cv(np.diff(t)) == pytest.approx(real_cv, rel=0.1)
    cmp = compare(jobs, synthetic)
    assert cmp.passed, cmp.metrics["failed"]


def test_batch_synthesis_is_deterministic_and_chunk_size_free(jobs: pl.DataFrame, tmp_path) -> None:
    model, _ = fit(jobs, seed=0)
    assert load_model(save_model(model, tmp_path / "batch.json")) == model
    a = sample(model, seed=4)
    b = pl.concat(list(iter_chunks(model, seed=4, chunk_rows=1000)))
    assert a.height == b.height and a.drop("vm_id").equals(b.drop("vm_id"))
    ten = sample(model, seed=4, scale=10.0)
    # scale multiplies the jobs; each keeps its batch size distribution
    assert ten.height / a.height == pytest.approx(10.0, rel=0.05)
    _, sizes = np.unique(ten["created_s"].to_numpy(), return_counts=True)
    assert np.mean(sizes) > 5.0  # (ten jobs per grid step sometimes share a second)


def test_grid_ties_without_batches_stay_a_simple_process() -> None:
    # 3 events/s on a 3 s grid fill every step: ties come from the grid, not batches
    rng = np.random.default_rng(8)
    t = np.floor(np.cumsum(rng.exponential(1 / 3.0, 10_000)) / 3.0) * 3.0
    from fleetlab.traces import canonical

    table = canonical(
        pl.LazyFrame(
            {
                "arrival_s": t - t[0],
                "prompt_tokens": rng.integers(1, 100, t.size),
                "output_tokens": rng.integers(1, 100, t.size),
            }
        ),
        "requests",
    ).collect()
    model, diag = fit(table, seed=0)
    assert model.arrival.quantum_s == pytest.approx(3.0)
    assert model.arrival.batch is None and diag["batch_mean"] is None


def test_spans_and_flows_are_modelled_and_bad_ones_named() -> None:
    from fleetlab.errors import ConfigError
    from fleetlab.traces import canonical

    spans = canonical(
        pl.LazyFrame(
            {
                "trace_id": ["a", "a", "b"],
                "span_id": ["1", "2", "3"],
                "parent_id": [None, "1", None],
                "service": ["web", "db", "web"],
                "operation": ["get", "q", "get"],
                "start_us": [0, 10, 1000],
                "duration_us": [100, 50, 90],
                "status": ["ok", "ok", "ok"],
            }
        ),
        "spans",
    ).collect()
    model, _ = fit(spans)
    assert model.traces is not None and model.source.duration_s == pytest.approx(0.001)
    assert [t.tree for t in model.traces.templates] == [["web:get", "db:q"], ["web:get"]]
    with pytest.raises(ConfigError, match=r"spans table.*1 event\(s\) with a time"):
        fit(spans.filter(pl.col("trace_id") == "a"))
    flows = canonical(
        pl.LazyFrame({"ts_us": [0, 5, 9], "src": ["a", "a", "b"], "dst": ["b", "c", "c"]}),
        "flows",
    ).collect()
    model, _ = fit(flows)
    assert model.entity is not None and model.entity.pairs == [[0, 1], [0, 2], [1, 2]]
    assert model.entity.endpoints == ["svc-0", "svc-1", "svc-2"]
    with pytest.raises(ConfigError, match=r"flows table has 1 event"):
        fit(flows.head(1))
