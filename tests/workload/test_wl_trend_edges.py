"""The trend keeps a step in the load on its day (edge-preserving 7-day windows)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import trend_vms

from fleetlab.workload import FitOptions, fit
from fleetlab.workload._arrival_fit import edge_preserving_ratio, operational_time

DAY = 86400.0


def test_edge_preserving_ratio_keeps_a_step_where_centred_windows_smear_it() -> None:
    observed = np.array([2.0] * 10 + [100.0] * 10)
    expected = np.ones(20)
    ratio = edge_preserving_ratio(observed, expected, 7)
    np.testing.assert_allclose(ratio, observed)
    # a centred window would give day 9 (2 x 4 + 100 x 3) / 7 = 44
    centred = pl.Series(observed).rolling_sum(7, center=True, min_samples=1) / 7
    assert centred[9] == pytest.approx(44.0)


def test_edge_preserving_ratio_is_the_centred_average_where_counts_are_homogeneous() -> None:
    # Poisson-like wiggles and a sparse stretch: every centred window is within count
    # noise, so each day takes its centred window (truncated at the ends: the moving
    # average of the model before), and a window of zeros does not switch the rate off
    observed = np.array([3, 5, 4, 6, 2, 4, 5, 0, 0, 1, 0, 0, 2, 0, 0, 1], dtype=float)
    expected = np.where(np.arange(16) < 7, 4.0, 0.5)
    ratio = edge_preserving_ratio(observed, expected, 7)
    for d in range(16):
        lo, hi = max(d - 3, 0), min(d + 4, 16)
        assert ratio[d] == pytest.approx(observed[lo:hi].sum() / expected[lo:hi].sum())
    assert np.all(ratio > 0)


def test_edge_preserving_ratio_follows_the_expected_shape() -> None:
    # observed exactly the weekday shape times 3: every window is homogeneous (deviance
    # 0), the ratio is 3 everywhere
    expected = np.tile([1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.5], 3)
    np.testing.assert_allclose(edge_preserving_ratio(3 * expected, expected, 7), 3.0)


@pytest.fixture(scope="module")
def sparse_then_busy() -> pl.DataFrame:
    # 14 days of 20 VMs/day, then 800/day: the Alibaba GPU 2023 shape in small
    return trend_vms(28, seed=4, step_day=14, low=20.0, high=800.0)


def test_trend_does_not_pull_a_step_early(sparse_then_busy: pl.DataFrame) -> None:
    t = sparse_then_busy["created_s"].to_numpy()
    early = int(np.sum(t < 14 * DAY))  # 320
    model, _ = fit(sparse_then_busy, seed=0)
    trend = np.asarray(model.arrival.rate.trend)
    assert trend[:13].max() < 0.1 and trend[14:].min() > 1.5
    expected = operational_time(np.array([14 * DAY, 28 * DAY]), model.arrival.rate)
    assert expected[0] == pytest.approx(early, rel=0.1)  # 314 vs 320
    assert expected[1] == pytest.approx(t.size, rel=0.02)
    synthetic = model.sample(seed=1)["created_s"].to_numpy()
    assert np.sum(synthetic < 14 * DAY) == pytest.approx(early, rel=0.2)  # 267
    # the centred 7-day trend (the model before) leaked the step 3 days back: 2.3x
    centred, _ = fit(sparse_then_busy, seed=0, options=FitOptions(trend_window="centred"))
    leaked = operational_time(np.array([14 * DAY]), centred.arrival.rate)[0]
    assert leaked > 2.0 * early
