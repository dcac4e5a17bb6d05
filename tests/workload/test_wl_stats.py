"""Golden values and invariants of the vectorised statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import gamma_renewal_requests
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from fleetlab.workload import compare
from fleetlab.workload._stats import (
    acf,
    counts,
    cv,
    gini,
    hill_tail_index,
    index_of_dispersion,
    kaplan_meier,
    km_quantile,
    ks_critical,
    ks_two_sample,
    survival_at,
    time_quantum,
    top_share,
    wasserstein,
    zipf_exponent,
)


def test_cv_and_counts_golden() -> None:
    assert cv(np.array([1.0, 1.0, 1.0])) == 0.0
    assert cv(np.array([1.0, 3.0])) == pytest.approx(0.5)
    assert math.isnan(cv(np.array([2.0])))
    t = np.array([0.1, 0.2, 1.5, 2.5, 2.6, 2.7, 3.9])
    assert counts(t, 1.0, end=4.0).tolist() == [2, 1, 3, 1]
    # a partial last window is dropped
    assert counts(t, 1.5, end=4.0).tolist() == [2, 4]


def test_idc_of_poisson_is_one_and_of_a_regular_process_is_zero() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(0.01, 200_000))
    for row in index_of_dispersion(t):
        assert row["idc"] == pytest.approx(1.0, abs=0.15)
    regular = np.arange(0, 1000, 0.01)
    assert index_of_dispersion(regular, (1.0,))[0]["idc"] == pytest.approx(0.0, abs=1e-6)


def test_acf_golden() -> None:
    x = np.array([1.0, -1.0] * 50)
    r = acf(x, 2)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(-0.99)
    assert r[2] == pytest.approx(0.98)


def test_hill_recovers_pareto_tail_index() -> None:
    rng = np.random.default_rng(2)
    x = (1 - rng.random(200_000)) ** (-1 / 1.5)  # Pareto alpha = 1.5
    assert hill_tail_index(x) == pytest.approx(1.5, rel=0.08)


def test_zipf_top_share_gini_golden() -> None:
    ranks = np.arange(1, 1001)
    c = 1e6 * ranks**-1.2
    assert zipf_exponent(c) == pytest.approx(1.2, abs=1e-9)
    assert top_share(np.array([50.0, 30.0, 20.0]), 0.01) == pytest.approx(0.5)
    assert gini(np.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert gini(np.array([0.0, 0.0, 0.0, 10.0])) == pytest.approx(0.75)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
)
def test_ks_matches_scipy_and_is_a_distance(a: list[float], b: list[float]) -> None:
    x, y = np.array(a), np.array(b)
    d = ks_two_sample(x, y)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(sps.ks_2samp(x, y).statistic, abs=1e-12)
    assert ks_two_sample(x, x) == 0.0


def test_wasserstein_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4096), rng.normal(0.5, 2, 4096)
    assert wasserstein(a, b) == pytest.approx(sps.wasserstein_distance(a, b), rel=0.02)


def test_kaplan_meier_golden_with_censoring() -> None:
    # durations 1,2,3,4,5; the 2 and 4 are censored
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    e = np.array([True, False, True, False, True])
    t, s = kaplan_meier(d, e)
    assert t.tolist() == [1.0, 3.0, 5.0]
    assert s.tolist() == pytest.approx([4 / 5, 4 / 5 * 2 / 3, 0.0])
    assert survival_at(t, s, 0.5) == 1.0
    assert survival_at(t, s, 3.5) == pytest.approx(8 / 15)
    assert km_quantile(t, s, 0.5) == 5.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1e4), min_size=1, max_size=80))
def test_kaplan_meier_without_censoring_is_the_empirical_survival(xs: list[float]) -> None:
    d = np.array(xs)
    t, s = kaplan_meier(d, np.ones(d.size, dtype=bool))
    for ti, si in zip(t, s, strict=True):
        assert si == pytest.approx(np.mean(d > ti), abs=1e-9)


def test_time_quantum_detects_a_grid_and_ignores_continuous_times() -> None:
    rng = np.random.default_rng(4)
    steps = np.arange(0, 600, 3.0) + rng.uniform(-0.001, 0.001, 200)  # batches, ms clock jitter
    assert time_quantum(np.repeat(steps, 5)) == pytest.approx(3.0, rel=1e-3)
    assert time_quantum(np.cumsum(rng.exponential(1.0, 1000))) is None


def test_ks_critical_golden_and_the_size_rows_use_it_only_on_small_traces() -> None:
    # 1.358 sqrt(2 / 199): two 199-value samples of one distribution differ by more in 5 %
    assert ks_critical(199, 199) == pytest.approx(0.13614, abs=1e-4)
    assert ks_critical(0, 10) == math.inf
    # the 5 % quantile of the exact two-sample KS statistic is close at these sizes
    exact = sps.kstwo.ppf(0.95, 500 * 500 // 1000)
    assert ks_critical(500, 500) == pytest.approx(exact, rel=0.03)

    def ks_thresholds(n: int) -> list[float]:
        real = gamma_renewal_requests(n, rate=5.0, cv=1.0, seed=1)
        synth = gamma_renewal_requests(n, rate=5.0, cv=1.0, seed=2)
        rows = compare(real, synth).table.filter(statistic="ks")
        return rows["threshold"].to_list()

    assert ks_thresholds(200) == [pytest.approx(ks_critical(200, 200))] * 2
    assert ks_thresholds(5000) == [0.05, 0.05]
