"""Vectorised statistics shared by characterization, fitting and comparison.

Everything here works on numpy arrays and is free of Python loops over rows: the
caller collects the column it needs from a polars frame (or a seeded sample of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: window sizes (s) at which the index of dispersion for counts is reported
IDC_WINDOWS_S: tuple[float, ...] = (0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)

#: rate-curve bin sizes (s) the fitter may choose from
BIN_CANDIDATES_S: tuple[float, ...] = (
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
)


def cv(values: np.ndarray) -> float:
    """Coefficient of variation (std / mean, population std); NaN for fewer than 2 values."""
    if values.size < 2:
        return math.nan
    mean = float(values.mean())
    return float(values.std() / mean) if mean > 0 else math.nan


def counts(
    times: np.ndarray, width: float, *, start: float = 0.0, end: float | None = None
) -> np.ndarray:
    """Event counts in consecutive windows of ``width`` seconds over ``[start, end)``.

    Only whole windows are returned (a partial last window would bias rates down).
    """
    if end is None:
        end = float(times.max()) if times.size else start
    n_bins = math.floor((end - start) / width + 1e-9)
    if n_bins <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.floor((times - start) / width).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < n_bins)]
    return np.bincount(idx, minlength=n_bins)


def index_of_dispersion(
    times: np.ndarray,
    windows: tuple[float, ...] = IDC_WINDOWS_S,
    *,
    end: float | None = None,
    min_windows: int = 10,
    counter: Callable[[float], np.ndarray] | None = None,
) -> list[dict[str, float]]:
    """Index of dispersion for counts (variance / mean of counts) at each window size.

    Window sizes that fit fewer than ``min_windows`` times into the trace are skipped.
    A Poisson process has IDC 1 at every window; renewal processes tend to CV^2.
    ``counter`` (from :func:`count_cache`) reuses one pass over the events. Without
    it, windows far more numerous than the events (0.1 s over months) are summed from
    the non-empty windows only (the same variance, without the zeros in memory).
    """
    out = []
    span = (float(times.max()) if end is None else end) if times.size else 0.0
    for w in windows:
        if span / w < min_windows:
            continue
        n_bins = math.floor(span / w + 1e-9)
        if counter is None and n_bins > 4 * times.size:  # sparse: only the non-empty windows
            idx = np.floor(times / w).astype(np.int64)
            _, k = np.unique(idx[(idx >= 0) & (idx < n_bins)], return_counts=True)
            k = k.astype(np.float64)
            m = float(k.sum()) / n_bins
            var = float(np.sum(k * k)) / n_bins - m * m
        else:
            c = counter(w) if counter is not None else counts(times, w, end=span)
            m = float(c.mean())
            var = float(c.var())
        if m > 0:
            out.append({"window_s": w, "idc": max(var, 0.0) / m, "mean_count": m})
    return out


def acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation of ``x`` at lags 0..max_lag (FFT, biased estimator)."""
    n = x.size
    if n < 2:
        return np.full(max_lag + 1, np.nan)
    y = x - x.mean()
    var = float(np.dot(y, y))
    if var == 0:
        return np.full(max_lag + 1, np.nan)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(y, size)
    r = np.fft.irfft(f * np.conj(f), size)[: max_lag + 1] / var
    if r.size < max_lag + 1:
        r = np.concatenate([r, np.full(max_lag + 1 - r.size, np.nan)])
    return r


def dominant_periods(series: np.ndarray, bin_s: float, *, top: int = 3) -> list[dict[str, float]]:
    """The strongest periods of a count series from its periodogram.

    Returns up to ``top`` peaks with ``period_s`` and ``strength`` (the share of the
    series' variance at that frequency). Periods longer than half the series are
    ignored (fewer than two cycles cannot be called periodic).
    """
    n = series.size
    if n < 8:
        return []
    y = series - series.mean()
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(n, d=bin_s)
    total = float(power[1:].sum())
    if total <= 0:
        return []
    keep = (freqs > 0) & (freqs >= 2.0 / (n * bin_s))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    # local maxima only, so one broad peak does not fill the list
    p = power[idx]
    left = np.concatenate([[-np.inf], p[:-1]])
    right = np.concatenate([p[1:], [-np.inf]])
    peaks = idx[(p >= left) & (p >= right)]
    peaks = peaks[np.argsort(power[peaks])[::-1][:top]]
    return [{"period_s": float(1.0 / freqs[i]), "strength": float(power[i] / total)} for i in peaks]


def hill_tail_index(values: np.ndarray, *, fraction: float = 0.02, min_k: int = 10) -> float:
    """Hill estimator of the tail index alpha on the top ``fraction`` of positive values.

    Smaller alpha means a heavier tail (alpha < 2: infinite variance). NaN when there
    are too few positive values (fewer than ``min_k`` + 1) or the top values are equal.
    """
    x = np.sort(values[values > 0])
    n = x.size
    k = max(min_k, math.ceil(fraction * n))
    if n <= k:
        return math.nan
    top = x[n - k :]
    threshold = x[n - k - 1]
    logs = np.log(top / threshold)
    m = float(logs.mean())
    return float(1.0 / m) if m > 0 else math.nan


def zipf_exponent(sorted_counts: np.ndarray, *, max_rank: int = 1000) -> float:
    """Zipf exponent s of a rank-frequency curve (count ~ rank^-s).

    Least squares on log(count) vs log(rank) over ranks 1..``max_rank``; NaN for fewer
    than 3 entities. ``sorted_counts`` must be in descending order.
    """
    c = sorted_counts[:max_rank].astype(np.float64)
    c = c[c > 0]
    if c.size < 3:
        return math.nan
    r = np.log(np.arange(1, c.size + 1))
    slope = np.polyfit(r, np.log(c), 1)[0]
    return float(-slope)


def top_share(sorted_counts: np.ndarray, fraction: float) -> float:
    """Share of all events from the top ``fraction`` of entities (at least one entity)."""
    total = float(sorted_counts.sum())
    if total <= 0 or sorted_counts.size == 0:
        return math.nan
    k = max(1, math.ceil(fraction * sorted_counts.size))
    return float(sorted_counts[:k].sum() / total)


def gini(sorted_counts: np.ndarray) -> float:
    """Gini coefficient of entity load (0: all equal, towards 1: one entity has it all)."""
    x = np.sort(sorted_counts.astype(np.float64))
    n = x.size
    if n == 0 or x.sum() <= 0:
        return math.nan
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum.sum() / cum[-1])) / n)


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance sup |F_a - F_b| (exact for ties)."""
    if a.size == 0 or b.size == 0:
        return math.nan
    a = np.sort(a)
    b = np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def ks_critical(n: int, m: int, *, alpha: float = 0.05) -> float:
    """Two-sample KS critical value (asymptotic) for sample sizes ``n`` and ``m``.

    Two samples of one distribution differ by more than this in a share ``alpha`` of
    draws; a KS threshold below it judges sampling noise, not the model (inf when a
    sample is empty).
    """
    if n <= 0 or m <= 0:
        return math.inf
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def wasserstein(a: np.ndarray, b: np.ndarray, *, points: int = 2048) -> float:
    """First Wasserstein distance between two samples (on a quantile grid; units of x)."""
    if a.size == 0 or b.size == 0:
        return math.nan
    q = (np.arange(points) + 0.5) / points
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def spearman_matrix(columns: list[np.ndarray]) -> np.ndarray:
    """Spearman rank correlation matrix of equally long columns (average ranks for ties)."""
    from scipy.stats import rankdata

    ranks = np.vstack([rankdata(c) for c in columns])
    if ranks.shape[1] < 3:
        return np.full((len(columns), len(columns)), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.atleast_2d(np.corrcoef(ranks))


def normal_scores(values: np.ndarray) -> np.ndarray:
    """Gaussian-copula scores: Phi^-1 of mid-ranks / (n + 1), ties share their average rank."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    return ndtri(rankdata(values) / (values.size + 1))


def kaplan_meier(durations: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival curve for right-censored durations.

    Parameters
    ----------
    durations
        Time to the event or to censoring (s).
    observed
        True where the event (deletion) was seen, False where censored.

    Returns
    -------
    times, survival
        The distinct event times and S(t) just after each of them.
    """
    order = np.argsort(durations, kind="stable")
    d = durations[order]
    e = observed[order].astype(np.int64)
    uniq, first = np.unique(d, return_index=True)
    at_risk = d.size - first
    events = np.add.reduceat(e, first) if d.size else np.zeros(0, dtype=np.int64)
    mask = events > 0
    factors = 1.0 - events[mask] / at_risk[mask]
    return uniq[mask], np.cumprod(factors)


def survival_at(times: np.ndarray, survival: np.ndarray, t: float) -> float:
    """S(t) from a Kaplan-Meier curve (1 before the first event)."""
    i = np.searchsorted(times, t, side="right")
    return 1.0 if i == 0 else float(survival[i - 1])


def km_quantile(times: np.ndarray, survival: np.ndarray, p: float) -> float:
    """The time by which a fraction ``p`` has ended (NaN if the curve never gets there)."""
    hit = np.flatnonzero(survival <= 1.0 - p)
    return float(times[hit[0]]) if hit.size else math.nan


def kmeans(
    x: np.ndarray, k: int, *, rng: np.random.Generator, iters: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means (k-means++ start) on the rows of ``x``; returns (labels, centers)."""
    n = x.shape[0]
    k = min(k, n)
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centers.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
    c = np.array(centers)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if members.size:
                c[j] = members.mean(0)
    return labels, c


def time_quantum(
    times: np.ndarray, *, min_ties: float = 0.3, tolerance: float = 0.01
) -> float | None:
    """The grid spacing (s) of timestamps that arrive in batches on a regular grid, or None.

    Returns q when at least ``min_ties`` of the gaps are zero and 95 % of the others
    are within ``tolerance`` * q of a multiple of q (q: the 10th percentile of the
    non-zero gaps, at least 1 ms). The Mooncake trace, for example, is on a 3 s grid.
    """
    if times.size < 20:
        return None
    gaps = np.diff(np.sort(times))
    if np.mean(gaps == 0) < min_ties:
        return None
    nz = gaps[gaps > 0]
    if nz.size < 5:
        return None
    q = float(np.quantile(nz, 0.1))
    if q < 1e-3:
        return None
    ratio = nz / q
    steps = np.maximum(np.rint(ratio), 1)
    on_grid = np.abs(ratio - steps) <= tolerance * steps
    if np.mean(on_grid) < 0.95:
        return None
    return float(np.sum(nz[on_grid]) / np.sum(steps[on_grid]))  # the mean step, not the 10th pct


def sorted_quantiles(sorted_x: np.ndarray, probs: np.ndarray | list[float]) -> np.ndarray:
    """Quantiles (numpy's default linear method) of an already sorted array, in O(len(probs))."""
    p = np.asarray(probs, dtype=np.float64)
    pos = p * (sorted_x.size - 1)
    return np.interp(pos, np.arange(sorted_x.size, dtype=np.float64), sorted_x)


def count_cache(
    times: np.ndarray, end: float, *, base: float = 0.1, max_bins: int = 20_000_000
) -> Callable[[float], np.ndarray]:
    """A ``counts(times, width, end=end)`` that bins the events once.

    Counts at ``base`` seconds (or the smallest power-of-ten multiple with at most
    ``max_bins`` bins) are computed in one pass; a width that is a whole multiple of the
    base is summed from them, any other width is counted directly. Gives the same
    numbers as :func:`counts`, at one pass over the events instead of one per width.
    """
    while end / base > max_bins:
        base *= 10
    fine = counts(times, base, end=end)

    def get(width: float) -> np.ndarray:
        k = width / base
        if k >= 1 and abs(k - round(k)) < 1e-9:
            k = round(k)
            n = fine.size // k
            return fine[: n * k].reshape(n, k).sum(axis=1)
        return counts(times, width, end=end)

    return get


def as_float(value: object, *, what: str) -> float:
    """A number from a Polars or NumPy scalar (``.max()``, ``.median()``, ``.item()``).

    Polars types those results as a wide union (dates, strings, lists, ``None``) because
    it cannot know the column's dtype; the workload columns they are taken from are
    numeric. This narrows the value to ``float`` at that boundary and fails loudly
    rather than letting a ``None`` or a string flow into the arithmetic.

    Parameters
    ----------
    value
        The scalar (a Python or NumPy int, float or bool).
    what
        What the value is (column and statistic), named in the error.

    Returns
    -------
    float
        ``float(value)``.

    Raises
    ------
    TypeError
        If ``value`` is not a number (e.g. ``None`` from an all-null column).
    """
    if isinstance(value, int | float | np.integer | np.floating | np.bool_):
        return float(value)
    raise TypeError(f"{what}: expected a number, found {value!r} ({type(value).__name__})")
