"""Fitting the arrival process: the rate curve with its trend, the renewal of operational-time
gaps, batches, clusters of short gaps and rate-level bands (see docs/workload.md, "Arrival
process, and why"). :func:`~fleetlab.workload.fit` chooses among them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from fleetlab.workload._marginals import draw, knots
from fleetlab.workload._model import (
    Band,
    RateCurve,
    Renewal,
)
from fleetlab.workload._options import FitOptions
from fleetlab.workload._stats import (
    BIN_CANDIDATES_S,
    cv,
)

DAY = 86400.0
WEEK = 7 * DAY


def choose_period(duration_s: float) -> float:
    """Period of the rate curve: a week (14+ days), a day (2+ days), else the trace."""
    if duration_s >= 14 * DAY:
        return WEEK
    if duration_s >= 2 * DAY:
        return DAY
    return duration_s


def choose_bin(n_events: int, duration_s: float, period_s: float, opts: FitOptions) -> float:
    """Smallest candidate bin with >= ``min_events_per_bin`` events and <= max_levels bins."""
    rate = n_events / duration_s if duration_s > 0 else 0.0
    for b in BIN_CANDIDATES_S:
        if rate * b >= opts.min_events_per_bin and period_s / b <= opts.max_levels:
            return b
    return BIN_CANDIDATES_S[-1] if period_s >= BIN_CANDIDATES_S[-1] else max(period_s, 1e-3)


def fit_rate_curve(
    t: np.ndarray,
    duration_s: float,
    opts: FitOptions,
    *,
    quantum_s: float | None = None,
    noise_cv: float | None = None,
    trend: np.ndarray | None = None,
) -> RateCurve:
    """Piecewise-constant rate over one period from event times ``t`` (s from 0, sorted).

    Each period bin's level is its events divided by the time the trace covered it,
    so a trace of 2.5 days gives the daily profile with correct weights. With times on
    a grid of ``quantum_s``, bins are whole grid steps (else they alias with the grid).

    With ``noise_cv`` (the renewal CV), the levels are shrunk towards a moving average
    of 9 bins by the empirical-Bayes factor w = 1 - (expected renewal noise) / (observed
    deviation), so the curve keeps the real swings but not the sampling noise of one
    realization (which the renewal process adds again when synthesizing; without the
    shrinkage a Poisson trace would come back with twice its variance). When w >= 0.5
    the curve is mostly signal and is kept as seen: shrinking it would put events into
    the idle periods of on/off traces (Azure code) and lose their long gaps.

    With ``trend`` (one factor per day from the trace start, see :func:`fit_trend`),
    each bin's exposure is weighted by the trend at that time, so the levels are the
    detrended period shape and ``levels x trend`` has the observed counts.
    """
    period = choose_period(duration_s)
    bin_s = choose_bin(t.size, duration_s, period, opts)
    if quantum_s:
        bin_s = quantum_s * max(1, math.ceil(bin_s / quantum_s - 1e-9))
    n_levels = max(1, math.ceil(period / bin_s - 1e-9))
    n_abs = max(1, math.ceil(duration_s / bin_s - 1e-9))
    abs_idx = np.minimum((t // bin_s).astype(np.int64), n_abs - 1)
    counts = np.bincount(abs_idx % n_levels, minlength=n_levels).astype(np.float64)
    starts = np.arange(n_abs) * bin_s
    covered = np.clip(duration_s - starts, 0.0, bin_s)
    covered[-1] = max(covered[-1], 1e-9)
    trend_bin = trend_step(bin_s) if trend is not None else None
    if trend is not None and trend_bin is not None:
        day = np.minimum((starts // trend_bin).astype(np.int64), trend.size - 1)
        covered = covered * trend[day]
    exposure = np.bincount(np.arange(n_abs) % n_levels, weights=covered, minlength=n_levels)
    levels = np.where(exposure > 0, counts / np.maximum(exposure, 1e-12), 0.0)
    if noise_cv is not None and n_levels >= 3:
        levels = _shrink(levels, exposure, noise_cv)
    if not np.any(levels > 0):
        levels = np.full(n_levels, t.size / max(duration_s, 1e-9))
    return RateCurve(
        bin_s=bin_s,
        period_s=n_levels * bin_s,
        levels=[float(f"{x:.6g}") for x in levels],
        mean_rate_per_s=float(t.size / duration_s) if duration_s > 0 else 0.0,
        trend_bin_s=trend_bin,
        trend=[float(f"{x:.6g}") for x in trend] if trend is not None else None,
    )


def trend_step(bin_s: float) -> float:
    """Length of one trend step: a day, rounded up to whole rate-curve bins."""
    return bin_s * max(1, math.ceil(DAY / bin_s - 1e-9))


def fit_trend(
    t: np.ndarray,
    duration_s: float,
    opts: FitOptions,
    *,
    noise_cv: float,
    quantum_s: float | None = None,
) -> np.ndarray | None:
    """Slow long-term level of a trace of 14+ days, or None when its load is steady.

    The trend is a factor per day: the day's events over the events the period shape
    expects, summed over a 7-day window (:func:`edge_preserving_ratio`: the most
    homogeneous of the trailing, centred and leading windows, so a step stays on its
    day; ``FitOptions.trend_window="centred"``: always centred, edges use the days
    they have), normalised to unit mean over the trace, alternated twice with the
    detrended shape (:func:`fit_rate_curve` with ``trend``). It is kept only when
    the week-to-week counts vary beyond what the renewal process explains: with
    ``noise = noise_cv^2 x expected`` per week, ``1 - noise / observed squared
    deviation >= 0.5`` (the same empirical-Bayes factor as the level shrinkage).
    A weekly average keeps the weekday pattern in the shape, where it belongs.
    """
    if duration_s < 14 * DAY or t.size < 2:
        return None
    curve = fit_rate_curve(t, duration_s, opts, quantum_s=quantum_s)
    step = trend_step(curve.bin_s)
    n_days = max(1, math.ceil(duration_s / step - 1e-9))
    edges = np.minimum(np.arange(n_days + 1) * step, duration_s)
    day = np.minimum((t // step).astype(np.int64), n_days - 1)
    observed = np.bincount(day, minlength=n_days).astype(np.float64)
    trend = np.ones(n_days)
    week = max(1, round(7 * DAY / step))
    for i in range(3):
        expected = np.diff(operational_time(edges, curve))
        if i == 0:  # is there a trend at all? weekly blocks against the renewal noise
            blocks = np.arange(n_days) // week
            ob = np.bincount(blocks, weights=observed)
            ex = np.bincount(blocks, weights=expected)
            ex *= ob.sum() / max(ex.sum(), 1e-12)
            noise = noise_cv**2 * float(ex.sum())
            dev = float(np.sum((ob - ex) ** 2))
            if ob.size < 2 or dev <= 0 or 1.0 - noise / dev < 0.5:
                return None
        if opts.trend_window == "edge" and n_days >= week:
            factor = edge_preserving_ratio(observed, expected, week)
        else:
            num = pl.Series(observed).rolling_sum(week, center=True, min_samples=1).to_numpy()
            den = pl.Series(expected).rolling_sum(week, center=True, min_samples=1).to_numpy()
            factor = np.where(den > 0, num / np.maximum(den, 1e-12), 1.0)
        trend = trend * factor
        trend *= duration_s / max(float(np.sum(trend * np.diff(edges))), 1e-12)
        curve = fit_rate_curve(t, duration_s, opts, quantum_s=quantum_s, trend=trend)
    return trend


def edge_preserving_ratio(
    observed: np.ndarray, expected: np.ndarray, window: int, *, dispersion: float | None = None
) -> np.ndarray:
    """Per-day ratio of observed to expected events over a window that avoids steps.

    For each day ``d`` the candidate windows of ``window`` days are the centred one
    (truncated at the trace's ends, as a centred moving average), the trailing one
    (ending at ``d``) and the leading one (starting at ``d``), both shifted inside the
    trace at its ends. Each gets the ratio ``r = sum(observed) / sum(expected)`` and
    the Poisson deviance of its days against ``r x expected``. The centred window is
    kept unless its deviance is beyond the day-to-day noise (more than the 99 %
    chi-square quantile with its days - 1 degrees of freedom times ``dispersion``):
    then it straddles a step or ramp, and the
    day takes the ratio of the candidate with the least deviance (Kuwahara-style). A
    plain centred moving average drags a step into the days before it (Alibaba GPU
    2023: the ramp of day 115 leaked three days early, 57-95 synthetic pods in the
    first 115 days instead of 27); sparse stretches keep the centred average, so a
    window of zeros (deviance 0) does not switch the rate off.

    Parameters
    ----------
    observed, expected : numpy.ndarray
        Events per day and the events the period shape expects that day (same length,
        at least ``window``).
    window : int
        Window length in days.
    dispersion : float or None
        Variance over mean of a day's count in a homogeneous window. None (what
        :func:`fit_trend` uses) estimates it from the trace: the median over days of
        the centred windows' deviance per degree of freedom, at least 1 (Poisson). The
        median ignores the few windows that straddle a step; the pooled renewal CV
        cannot serve, as a trend inflates it. Batches and day-to-day swings
        (Alibaba GPU 2025 DLRM) give a dispersion of several, so their ordinary
        swings keep centred windows; a sparse start (GPU 2023) gives 1.

    Returns
    -------
    numpy.ndarray
        One factor per day (1 where the window expects no events).
    """
    from scipy import stats

    n = observed.size
    exp = np.maximum(expected, 1e-12)
    obs_log = np.where(observed > 0, observed * np.log(np.maximum(observed, 1e-300) / exp), 0.0)
    c_obs = np.concatenate([[0.0], np.cumsum(observed)])
    c_exp = np.concatenate([[0.0], np.cumsum(expected)])
    c_log = np.concatenate([[0.0], np.cumsum(obs_log)])
    day = np.arange(n)
    ratios, devs, dofs = [], [], []
    centred_lo = np.maximum(day - window // 2, 0)  # truncated at the ends, as a moving average
    trailing_lo = np.clip(day - (window - 1), 0, n - window)  # shifted inside at the ends
    leading_lo = np.clip(day, 0, n - window)
    for lo, hi in (
        (centred_lo, np.minimum(day - window // 2 + window, n)),
        (trailing_lo, trailing_lo + window),
        (leading_lo, leading_lo + window),
    ):
        o = c_obs[hi] - c_obs[lo]
        e = c_exp[hi] - c_exp[lo]
        r = np.where(e > 0, o / np.maximum(e, 1e-12), 1.0)
        # deviance 2 sum[o_i log(o_i / (r e_i)) - (o_i - r e_i)], where sum r e_i = sum o_i
        log_r = np.where(o > 0, o * np.log(np.maximum(r, 1e-300)), 0.0)
        devs.append(np.maximum(2.0 * (c_log[hi] - c_log[lo] - log_r), 0.0))
        dofs.append(np.maximum(hi - lo - 1, 1))
        ratios.append(r)
    dev = np.stack(devs)
    if dispersion is None:  # the trace's own day-to-day noise, robust to the few steps
        dispersion = max(1.0, float(np.median(dev[0] / dofs[0])))
    limit = stats.chi2.ppf(0.99, dofs[0]) * dispersion
    pick = np.where(dev[0] <= limit, 0, np.argmin(dev, axis=0))
    return np.stack(ratios)[pick, day]


CLUSTER_FRACTIONS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""Candidate cluster thresholds: a gap shorter than this fraction of the mean
operational-time gap (the mean is 1) joins the event to the one before it."""

CLUSTER_Z = -2.326
"""Runs test: the short gaps come in runs when z <= this (one-sided 1 %)."""

CLUSTER_MIN = 10
"""At least this many clusters of >= 2 events, or no cluster model is fitted."""


def runs_z(short: np.ndarray) -> float:
    """Wald-Wolfowitz runs test z of a boolean sequence (negative: fewer runs than iid).

    Under independence the number of runs ``R`` of ``n1`` true and ``n2`` false values
    has mean ``2 n1 n2 / n + 1`` and variance ``2 n1 n2 (2 n1 n2 - n) / (n^2 (n - 1))``.
    A renewal process has independent gaps, so whether a gap is short is independent
    of the gap before it; runs of short gaps (events fanned out by one trigger) give
    far fewer runs. Returns 0 when either value is absent.
    """
    n1 = int(np.count_nonzero(short))
    n2 = int(short.size) - n1
    n = n1 + n2
    if n1 == 0 or n2 == 0 or n < 3:
        return 0.0
    runs = 1 + int(np.count_nonzero(short[1:] != short[:-1]))
    mean = 2.0 * n1 * n2 / n + 1.0
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - n) / (n * n * (n - 1.0))
    return (runs - mean) / math.sqrt(var) if var > 0 else 0.0


def cluster_instants(
    t: np.ndarray, rate: RateCurve
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]] | None:
    """Clusters of events whose short gaps come in runs, or None (with why in the info).

    The gaps are taken in operational time under ``rate`` (unit mean: the rate curve
    divided out, so busy hours do not count as clusters). For each candidate threshold
    of ``CLUSTER_FRACTIONS`` the gaps below it are marked short and the sequence gets a
    runs test (:func:`runs_z`); the threshold with the lowest z is used. Clusters are
    declared when ``z <= CLUSTER_Z`` and at least ``CLUSTER_MIN`` clusters hold 2+
    events: an event whose gap to the one before is short joins that one's cluster.
    The Azure Functions 2021 sample: 114 of its 198 gaps are under 0.1 s; at 1 % of
    the mean gap, 23 clusters of 2+ events, z = -7.7.

    Parameters
    ----------
    t : numpy.ndarray
        Sorted event times (s from the first event), no batches, no grid.
    rate : RateCurve
        The fitted rate curve of ``t``.

    Returns
    -------
    tuple or None
        Cluster instants (their first event's time), cluster sizes, the gaps (s)
        inside clusters, and a dict with the test (``z``, ``fraction``, ``clusters``);
        None when the test or the count rules the clusters out.
    """
    u = operational_time(t, rate)
    du = np.diff(u)
    mean = float(np.mean(du)) if du.size else 0.0
    if du.size < 3 or mean <= 0:
        return None
    du = du / mean
    tests = [(runs_z(du < f), f) for f in CLUSTER_FRACTIONS]
    z, frac = min(tests)
    short = du < frac
    starts = np.flatnonzero(np.concatenate([[True], ~short]))
    sizes = np.diff(np.concatenate([starts, [t.size]]))
    info: dict[str, Any] = {
        "z": float(z),
        "fraction": frac,
        "clusters": int(np.count_nonzero(sizes >= 2)),
    }
    if z > CLUSTER_Z or info["clusters"] < CLUSTER_MIN:
        return None
    return t[starts], sizes, np.diff(t)[short], info


def batch_instants(
    t: np.ndarray, duration_s: float, opts: FitOptions, *, quantum_s: float | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Arrival instants and their batch sizes when events come in batches, else None.

    Ties on a coarse grid are expected even without batches (Mooncake: 3.4 requests/s
    on a 3 s grid fill every step). Batches are declared when the distinct times are
    fewer than 80 % of the grid steps (or events, without a grid) that a batch-free
    process with the same rate curve would occupy: per rate bin of ``c`` events over
    ``m = bin / quantum`` steps, ``m (1 - exp(-c / m))``.
    """
    inst, sizes = np.unique(t, return_counts=True)
    if sizes.max(initial=1) <= 1 or inst.size < 10:
        return None
    period = choose_period(duration_s)
    bin_s = choose_bin(t.size, duration_s, period, opts)
    if quantum_s:
        bin_s = quantum_s * max(1, math.ceil(bin_s / quantum_s - 1e-9))
    n_abs = max(1, math.ceil(duration_s / bin_s - 1e-9))
    c = np.bincount(np.minimum((t // bin_s).astype(np.int64), n_abs - 1), minlength=n_abs)
    if quantum_s:
        m = bin_s / quantum_s
        occupied = float(np.sum(m * -np.expm1(-c / m)))
    else:
        occupied = float(t.size)
    if inst.size >= 0.8 * occupied:
        return None
    return inst, sizes


def _shrink(levels: np.ndarray, exposure: np.ndarray, noise_cv: float) -> np.ndarray:
    smooth = pl.Series(levels * exposure).rolling_sum(
        9, center=True, min_samples=1
    ).to_numpy() / np.maximum(
        pl.Series(exposure).rolling_sum(9, center=True, min_samples=1).to_numpy(), 1e-12
    )
    counts = levels * exposure
    expected = smooth * exposure
    noise = float(np.sum(noise_cv**2 * expected))
    observed = float(np.sum((counts - expected) ** 2))
    w = max(0.0, 1.0 - noise / observed) if observed > 0 else 0.0
    if w >= 0.5:  # mostly signal: keep the curve as seen (shrinking would fill idle periods)
        return levels
    return smooth + w * (levels - smooth)


def operational_time(t: np.ndarray, rate: RateCurve, scale: float = 1.0) -> np.ndarray:
    """Lambda(t): expected events in [0, t) under the rate curve times ``scale``.

    With a trend, the curve is ``levels x trend`` up to the trend's end and the
    periodic levels times the last trend factor after it.
    """
    lv = np.asarray(rate.levels) * scale
    cum = np.concatenate([[0.0], np.cumsum(lv * rate.bin_s)])
    per_cycle = cum[-1]
    t = np.asarray(t, dtype=np.float64)

    def periodic(x: np.ndarray) -> np.ndarray:
        cycles = np.floor(x / rate.period_s)
        rem = x - cycles * rate.period_s
        return cycles * per_cycle + np.interp(rem, np.arange(lv.size + 1) * rate.bin_s, cum)

    head = trend_knots(rate, scale)
    if head is None:
        return periodic(t)
    edges, cum_h = head
    end = float(edges[-1])
    out = np.interp(t, edges, cum_h)
    after = t > end
    if np.any(after):
        last = float(rate.trend[-1]) if rate.trend else 1.0
        base = periodic(np.array([end]))[0]
        out[after] = cum_h[-1] + last * (periodic(t[after]) - base)
    return out


def trend_knots(rate: RateCurve, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Bin edges (s) and cumulative expected events at them while the trend lasts, or None."""
    if rate.trend is None or rate.trend_bin_s is None:
        return None
    per_day = round(rate.trend_bin_s / rate.bin_s)
    n_abs = len(rate.trend) * per_day
    idx = np.arange(n_abs)
    lv = np.asarray(rate.levels)[idx % len(rate.levels)] * np.asarray(rate.trend)[idx // per_day]
    cum = np.concatenate([[0.0], np.cumsum(lv * (rate.bin_s * scale))])
    return np.arange(n_abs + 1, dtype=np.float64) * rate.bin_s, cum


def fit_renewal(
    t: np.ndarray, rate: RateCurve, *, ks_threshold: float, rng: np.random.Generator
) -> Renewal:
    """Renewal burstiness: the inter-arrivals after dividing out the rate curve.

    Gamma with their CV when its KS distance is within ``ks_threshold``; otherwise the
    empirical distribution of the unit-mean gaps (so the CV is kept either way).
    """
    return renewal_from_gaps(np.diff(operational_time(t, rate)), ks_threshold=ks_threshold, rng=rng)


def renewal_from_gaps(
    gaps: np.ndarray, *, ks_threshold: float, rng: np.random.Generator
) -> Renewal:
    """A :class:`Renewal` for gaps in operational time (any mean; unit mean is used).

    Gamma with their CV when its KS distance is within ``ks_threshold``; otherwise the
    empirical distribution of the unit-mean gaps (so the CV is kept either way).
    """
    from scipy import stats

    from fleetlab.workload._marginals import empirical, ks_one_sample

    c = cv(gaps)
    if not math.isfinite(c) or c <= 0 or gaps.size < 10:
        return Renewal(cv=1.0 if not math.isfinite(c) or c <= 0 else float(c))
    g = gaps / gaps.mean()
    if g.size > 200_000:  # KS on a seeded sample: the Gamma CDF is the costly part
        g = rng.choice(g, 200_000, replace=False)
    g = np.sort(g)
    k = 1.0 / c**2
    gamma_ks = ks_one_sample(g, stats.gamma.cdf(g, k, scale=1.0 / k))
    if gamma_ks <= ks_threshold:
        return Renewal(cv=float(c), ks=gamma_ks, gamma_ks=gamma_ks)
    emp = empirical(g, integer=False)
    q = np.asarray(emp.quantiles)
    # the mean of what sampling will draw (linear in z between the knots), so gaps are unit-mean
    zk, xk = knots(emp)
    w = np.exp(-0.5 * zk**2)
    mean = float(np.sum(w * xk) / np.sum(w))
    q = q / mean if mean > 0 else q
    emp = emp.model_copy(
        update={
            "quantiles": [float(f"{x:.7g}") for x in q],
            "upper": float(q[-1]),
            "lower": float(q[0]),
        }
    )
    from fleetlab.workload._stats import ks_two_sample

    sim = draw(emp, rng.standard_normal(min(g.size, 50_000)))
    return Renewal(
        family="empirical",
        cv=float(c),
        ks=ks_two_sample(g / g.mean(), sim),
        gamma_ks=gamma_ks,
        gaps=emp,
    )


BAND_MIN_INSTANTS = 200
"""A rate-level band needs at least this many arrival instants of the trace."""

BAND_COUNTS = (2, 3, 4)
"""Numbers of rate-level bands that :func:`fit_bands` tries."""

BAND_REALIZATIONS = 2
"""Synthetic realizations that score each band candidate (and the single renewal)."""


def bin_rates(rate: RateCurve, first: int, stop: int) -> np.ndarray:
    """Unscaled rate (instants/s) of absolute bins ``first..stop-1`` from the trace start.

    ``levels[k mod len(levels)]`` times the trend factor of bin ``k``'s day (the last
    factor after the trend's end), as :func:`operational_time` integrates it.
    """
    k = np.arange(first, stop, dtype=np.int64)
    lv = np.asarray(rate.levels, dtype=np.float64)[k % len(rate.levels)]
    if rate.trend is None or rate.trend_bin_s is None:
        return lv
    per_day = round(rate.trend_bin_s / rate.bin_s)
    tr = np.asarray(rate.trend, dtype=np.float64)
    return lv * tr[np.minimum(k // per_day, tr.size - 1)]


def band_of(rates: np.ndarray, uppers: list[float]) -> np.ndarray:
    """Band index of each bin rate: the first band whose ``upper`` exceeds it."""
    return np.searchsorted(np.asarray(uppers, dtype=np.float64), rates, side="right")


def day_bins(rate: RateCurve) -> int:
    """Rate-curve bins per day (the window within which band factors move events)."""
    return round(trend_step(rate.bin_s) / rate.bin_s)


def bin_factors(
    band: np.ndarray, lens: np.ndarray, factors: np.ndarray, day: np.ndarray
) -> np.ndarray:
    """Per-bin intensity factors of a banded renewal: ``factors[band]``, renormalised per day.

    Within each day (``day``: the day index of each bin), the curve's expected events
    ``lens`` keep their total and are moved between the bands in proportion to the
    band factors; so the trend's day-to-day load is kept and only the split between
    quiet and busy hours changes.
    """
    f = factors[band]
    num = np.bincount(day, weights=lens)
    den = np.bincount(day, weights=lens * f)
    return f * np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)[day]


def band_local_times(
    t: np.ndarray,
    rate: RateCurve,
    uppers: list[float],
    duration: float,
    factors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band of each time in ``t`` and its band-local operational time, and band lengths.

    The band-local time of band ``b`` counts the expected events of band-``b`` bins
    only (the other bands' bins are skipped), times the per-bin factors of
    :func:`bin_factors` when band ``factors`` are given, so each band's instants can be
    a renewal process of their own. Returns ``(band, local, lengths)``, ``lengths[b]``
    the band-local time the trace's ``[0, duration]`` covers.
    """
    n_abs = max(1, math.ceil(duration / rate.bin_s - 1e-9))
    r = bin_rates(rate, 0, n_abs)
    bands = band_of(r, uppers)
    starts = np.arange(n_abs) * rate.bin_s
    covered = np.clip(duration - starts, 0.0, rate.bin_s)
    if factors is not None:
        r = r * bin_factors(bands, r * covered, factors, np.arange(n_abs) // day_bins(rate))
    lens = r * covered
    k = np.minimum((t // rate.bin_s).astype(np.int64), n_abs - 1)
    into = (t - starts[k]) * r[k]  # expected events from the bin start to t
    local = np.empty(t.size)
    n_bands = len(uppers) + 1
    lengths = np.zeros(n_bands)
    for b in range(n_bands):
        mine = np.where(bands == b, lens, 0.0)
        cum = np.concatenate([[0.0], np.cumsum(mine)])
        sel = bands[k] == b
        local[sel] = cum[k[sel]] + into[sel]
        lengths[b] = cum[-1]
    return bands[k], local, lengths


def level_thresholds(rate: RateCurve, duration: float, n_bands: int) -> list[float] | None:
    """The ``n_bands - 1`` rate thresholds that split the trace's time into equal parts.

    Quantiles of the bins' unscaled rate weighted by the time the trace covers them
    (equal shares of wall-clock time per band); a bin at a quantile goes to the band
    below (the threshold is midway to the next higher rate). None when ties leave
    fewer bands.
    """
    n_abs = max(1, math.ceil(duration / rate.bin_s - 1e-9))
    r = bin_rates(rate, 0, n_abs)
    starts = np.arange(n_abs) * rate.bin_s
    covered = np.clip(duration - starts, 0.0, rate.bin_s)
    keep = (r > 0) & (covered > 0)
    if keep.sum() < n_bands:
        return None
    order = np.argsort(r[keep], kind="stable")
    rs, w = r[keep][order], covered[keep][order]
    cum = np.cumsum(w) / w.sum()
    uppers = []
    for i in range(1, n_bands):
        cut = float(rs[min(int(np.searchsorted(cum, i / n_bands - 1e-12)), rs.size - 1)])
        above = rs[rs > cut]
        if above.size == 0:
            return None
        uppers.append(float(f"{(cut + float(above[0])) / 2:.9g}"))
    if np.any(np.diff(uppers) <= 0):
        return None
    return uppers


def fit_bands(
    t: np.ndarray,
    rate: RateCurve,
    renewal: Renewal,
    duration: float,
    *,
    n_bands: int,
    ks_threshold: float,
    rng: np.random.Generator,
) -> tuple[list[Band] | None, dict[str, Any]]:
    """A rate-level-dependent renewal with ``n_bands`` bands, or None with the reason.

    The bins are split at the rate quantiles that give each band an equal share of
    the trace's time (:func:`level_thresholds`); each band's instants, in band-local
    operational time (:func:`band_local_times`), get their own renewal (Gamma or
    empirical, as :func:`renewal_from_gaps`) and intensity ``factor`` (instants per
    expected instant). The bands are a candidate only when every band has
    ``BAND_MIN_INSTANTS`` instants and the bands differ beyond what one renewal
    explains: the band counts against the curve's expectation give a chi-square
    ``sum (n_b - E_b)^2 / (cv^2 E_b)`` (a renewal count's variance is about
    ``cv^2 x mean``) above its 1 % critical value, or the band CVs differ by more
    than 15 % (the fidelity threshold of a CV) and beyond their sampling error (a
    chi-square of the log CVs around their weighted mean above its 1 % critical value,
    each with the delta-method variance ``(mu4 - v^2) / (4 v^2) + v / m^2 - mu3 / (v m)``
    over its ``n`` gaps).
    """
    from scipy import stats

    uppers = level_thresholds(rate, duration, n_bands)
    info: dict[str, Any] = {"bands": n_bands}
    if uppers is None:
        return None, {**info, "reason": "ties in the rate curve leave fewer bands"}
    band, local, lengths = band_local_times(t, rate, uppers, duration)
    n = np.bincount(band, minlength=n_bands).astype(np.float64)
    info["events"] = [int(x) for x in n]
    if n.min() < BAND_MIN_INSTANTS or lengths.min() <= 0:
        return None, {**info, "reason": f"a band has < {BAND_MIN_INSTANTS} instants"}
    expected = lengths * (n.sum() / lengths.sum())
    chi2 = float(np.sum((n - expected) ** 2 / (renewal.cv**2 * expected)))
    p_value = float(stats.chi2.sf(chi2, n_bands - 1))
    # band factors: the band's instants per expected instant (unit mean over the trace),
    # applied within each day (see bin_factors), so the trend's daily load is kept
    factors = (n / lengths) / (n.sum() / lengths.sum())
    band, local, _ = band_local_times(t, rate, uppers, duration, factors)
    info["factors"] = [float(x) for x in factors]
    out: list[Band] = []
    cvs = []
    log_var = []
    for b in range(n_bands):
        s = np.sort(local[band == b])
        gaps = np.diff(s)
        fitted = renewal_from_gaps(gaps, ks_threshold=ks_threshold, rng=rng)
        cvs.append(fitted.cv)
        log_var.append(log_cv_variance(gaps))
        out.append(
            Band(
                upper=uppers[b] if b < n_bands - 1 else None,
                factor=float(f"{factors[b]:.6g}"),
                renewal=fitted,
                events=int(n[b]),
            )
        )
    spread = max(cvs) / min(cvs) - 1.0
    lc, wt = np.log(cvs), 1.0 / np.maximum(np.asarray(log_var), 1e-12)
    cv_chi2 = float(np.sum(wt * (lc - np.sum(wt * lc) / np.sum(wt)) ** 2))
    cv_p = float(stats.chi2.sf(cv_chi2, n_bands - 1))
    info.update(chi2=chi2, p_value=p_value, cv_spread=spread, cvs=cvs, cv_p_value=cv_p)
    if p_value >= 0.01 and (spread <= 0.15 or cv_p >= 0.01):
        return None, {**info, "reason": "the bands do not differ beyond one renewal's noise"}
    return out, info


def log_cv_variance(gaps: np.ndarray) -> float:
    """Delta-method sampling variance of the log CV of ``gaps`` (from their moments)."""
    if gaps.size < 3:
        return math.inf
    m = float(gaps.mean())
    d = gaps - m
    v = float(np.mean(d**2))
    if m <= 0 or v <= 0:
        return math.inf
    mu3, mu4 = float(np.mean(d**3)), float(np.mean(d**4))
    return max((mu4 - v * v) / (4 * v * v) + v / (m * m) - mu3 / (v * m), 1e-12) / gaps.size
