"""Fitting and sampling one-dimensional marginals.

Fitting: each parametric family is fitted by maximum likelihood on a seeded sample of
at most ``FIT_SAMPLE`` positive values (integer fields are de-quantised with uniform
jitter of +-0.5 first), the family with the lowest AIC wins, and its KS distance is
measured on up to ``KS_SAMPLE`` values. When even the winner's KS distance exceeds the
threshold the marginal falls back to an empirical quantile function.

Sampling: every marginal becomes a table of knots ``(z, x)`` with x = F^-1(Phi(z)), so
one ``numpy.interp`` turns Gaussian-copula scores into values, whatever the family.
"""

from __future__ import annotations

import math
import warnings
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import ndtr, ndtri

from fleetlab.workload._model import Family, Marginal

FIT_SAMPLE = 5_000
MAX_DISCRETE = 64
KS_SAMPLE = 200_000
EMPIRICAL_KNOTS = 257
Z_LIMIT = 8.0

_SCIPY = MappingProxyType(
    {
        "lognormal": stats.lognorm,
        "gamma": stats.gamma,
        "weibull": stats.weibull_min,
        "burr12": stats.burr12,
        "exponential": stats.expon,
    }
)
_SHAPES = MappingProxyType(
    {
        "lognormal": ("s",),
        "gamma": ("a",),
        "weibull": ("c",),
        "burr12": ("c", "d"),
        "exponential": (),
    }
)
FAMILIES: tuple[Family, ...] = ("lognormal", "gamma", "weibull", "burr12", "exponential")


def _frozen(family: str, params: dict[str, float]) -> Any:
    dist = _SCIPY[family]
    shapes = [params[k] for k in _SHAPES[family]]
    return dist(*shapes, loc=params.get("loc", 0.0), scale=params.get("scale", 1.0))


def _fit_family(family: str, x: np.ndarray) -> dict[str, float]:
    if family == "lognormal":
        logs = np.log(x)
        return {"s": float(max(logs.std(), 1e-9)), "loc": 0.0, "scale": float(np.exp(logs.mean()))}
    if family == "exponential":
        return {"loc": 0.0, "scale": float(x.mean())}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fitted = _SCIPY[family].fit(x, floc=0.0)
    names = (*_SHAPES[family], "loc", "scale")
    return {k: float(v) for k, v in zip(names, fitted, strict=True)}


def ks_one_sample(sorted_x: np.ndarray, cdf: np.ndarray) -> float:
    """KS distance between the empirical CDF of ``sorted_x`` and model CDF values at it."""
    n = sorted_x.size
    i = np.arange(1, n + 1)
    return float(np.max(np.maximum(np.abs(cdf - i / n), np.abs(cdf - (i - 1) / n))))


def fit_candidates(
    values: np.ndarray, *, integer: bool, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Fit every family to the positive ``values``; one row per family with AIC and KS.

    Rows are sorted by AIC (the stated criterion); families whose fit fails are listed
    with ``error`` set and AIC infinite.
    """
    pos = values[values > 0].astype(np.float64)
    if pos.size < 10:
        return []
    fit_x = pos if pos.size <= FIT_SAMPLE else rng.choice(pos, FIT_SAMPLE, replace=False)
    ks_x = pos if pos.size <= KS_SAMPLE else rng.choice(pos, KS_SAMPLE, replace=False)
    if integer:
        fit_x = np.maximum(fit_x + rng.uniform(-0.5, 0.5, fit_x.size), 1e-3)
        ks_x = np.maximum(ks_x + rng.uniform(-0.5, 0.5, ks_x.size), 1e-3)
    ks_x = np.sort(ks_x)
    rows: list[dict[str, Any]] = []
    for family in FAMILIES:
        try:
            params = _fit_family(family, fit_x)
            dist = _frozen(family, params)
            with np.errstate(all="ignore"):
                loglik = float(np.sum(dist.logpdf(fit_x)))
                cdf = dist.cdf(ks_x)
            if not math.isfinite(loglik):
                raise ValueError("non-finite likelihood")
            k = len(params) - 1  # loc is fixed at 0
            rows.append(
                {
                    "family": family,
                    "params": params,
                    "aic": 2 * k - 2 * loglik,
                    "ks": ks_one_sample(ks_x, cdf),
                    "error": None,
                }
            )
        except Exception as exc:  # a family that cannot describe the data is just not chosen
            rows.append(
                {
                    "family": family,
                    "params": {},
                    "aic": math.inf,
                    "ks": math.nan,
                    "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                }
            )
    rows.sort(key=lambda r: r["aic"])
    return rows


def empirical(values: np.ndarray, *, integer: bool, ks: float | None = None) -> Marginal:
    """An empirical quantile-function marginal with knots dense in both tails."""
    n = values.size
    zmax = min(Z_LIMIT, float(ndtri(1.0 - 0.5 / max(n, 2))))
    probs = np.concatenate([[0.0], ndtr(np.linspace(-zmax, zmax, EMPIRICAL_KNOTS - 2)), [1.0]])
    q = np.quantile(values, probs)
    return Marginal(
        kind="empirical",
        probs=[_sig(p) for p in probs],
        quantiles=[_sig(v) for v in q],
        integer=integer,
        lower=float(values.min()),
        upper=float(values.max()),
        ks=ks,
        n=int(n),
    )


def fit_marginal(
    values: np.ndarray,
    *,
    integer: bool,
    rng: np.random.Generator,
    ks_threshold: float = 0.02,
    upper_factor: float = 10.0,
    parametric: bool = True,
) -> tuple[Marginal, list[dict[str, Any]]]:
    """Fit the marginal of ``values`` (finite numbers); returns it and the candidate table.

    Discrete (the observed values and their frequencies) when there are at most
    ``MAX_DISCRETE`` distinct values; parametric when the AIC winner's KS distance is at most ``ks_threshold`` and the
    values are non-negative; otherwise empirical (always, when ``parametric`` is
    false). Parametric draws are clipped at ``upper_factor`` times the largest value seen.
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values to fit")
    lo, hi = float(values.min()), float(values.max())
    probe = values if values.size <= 100_000 else rng.choice(values, 100_000, replace=False)
    few = np.unique(probe).size <= MAX_DISCRETE
    distinct, freq = np.unique(values, return_counts=True) if few else (probe, None)
    if lo != hi and freq is not None and distinct.size <= MAX_DISCRETE:
        probs = freq / freq.sum()
        m = Marginal(
            kind="discrete",
            values=[float(v) for v in distinct],
            probs=[_sig(p, 9) for p in probs],
            integer=integer,
            lower=lo,
            upper=hi,
            ks=0.0,
            n=int(values.size),
        )
        return m, []
    if lo == hi:
        return Marginal(
            kind="constant",
            value=lo,
            integer=integer,
            lower=lo,
            upper=hi,
            ks=0.0,
            n=int(values.size),
        ), []
    candidates = fit_candidates(values, integer=integer, rng=rng) if lo >= 0 and parametric else []
    best = candidates[0] if candidates else None
    if best is not None and math.isfinite(best["aic"]) and best["ks"] <= ks_threshold:
        zero = float(np.mean(values == 0))
        return Marginal(
            kind="parametric",
            family=best["family"],
            params=best["params"],
            zero_fraction=zero,
            integer=integer,
            lower=lo,
            upper=hi * upper_factor,
            ks=best["ks"],
            n=int(values.size),
        ), candidates
    sample = values if values.size <= 1_000_000 else rng.choice(values, 1_000_000, replace=False)
    m = empirical(sample, integer=integer)
    return m.model_copy(
        update={"ks": _empirical_ks(m, sample, rng), "n": int(values.size)}
    ), candidates


def _empirical_ks(m: Marginal, values: np.ndarray, rng: np.random.Generator) -> float:
    from fleetlab.workload._stats import ks_two_sample

    n = min(values.size, 50_000)
    z = rng.standard_normal(n)
    ref = values if values.size <= n else rng.choice(values, n, replace=False)
    return ks_two_sample(ref, draw(m, z))


GRID_POINTS = 4097


def knots(m: Marginal) -> tuple[np.ndarray, np.ndarray]:
    """The knot table of ``m``: x = F^-1(Phi(z)) on a uniform z grid over [-8, 8].

    The grid is uniform so :func:`draw` can index it directly instead of searching.
    """
    if m.kind == "discrete":
        assert m.values is not None and m.probs is not None
        cum = np.cumsum(m.probs)
        return cum / cum[-1], np.asarray(m.values, dtype=np.float64)
    z = np.linspace(-Z_LIMIT, Z_LIMIT, GRID_POINTS)
    if m.kind == "constant":
        return z, np.full(GRID_POINTS, float(m.value or 0.0))
    if m.kind == "empirical":
        assert m.probs is not None and m.quantiles is not None
        p = np.clip(np.asarray(m.probs), ndtr(-Z_LIMIT), ndtr(Z_LIMIT))
        return z, np.interp(z, ndtri(p), np.asarray(m.quantiles, dtype=np.float64))
    assert m.family is not None
    u = ndtr(z)
    p0 = m.zero_fraction
    dist = _frozen(m.family, m.params)
    with np.errstate(all="ignore"):
        x = np.where(u <= p0, 0.0, dist.ppf(np.clip((u - p0) / max(1.0 - p0, 1e-12), 0.0, 1.0)))
    x = np.nan_to_num(x, nan=0.0, posinf=m.upper if m.upper is not None else np.finfo(float).max)
    return z, np.maximum.accumulate(x)


def draw(
    m: Marginal, z: np.ndarray, table: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Values of ``m`` for standard-normal scores ``z`` (clipped; integers rounded).

    Linear interpolation on the uniform grid of :func:`knots`, by direct indexing.
    """
    zk, xk = table if table is not None else knots(m)
    if m.kind == "discrete":  # zk is the cumulative probability of each value
        idx = np.searchsorted(zk, ndtr(z), side="right")
        return xk[np.minimum(idx, xk.size - 1)]
    n = zk.size
    step = (n - 1) / (zk[-1] - zk[0])
    pos = z - zk[0]
    pos *= step
    np.clip(pos, 0.0, n - 1.000001, out=pos)
    i = pos.astype(np.intp)
    pos -= i
    slope = np.diff(xk)
    x = xk[i]
    x += pos * slope[i]
    np.clip(x, m.lower, m.upper, out=x)
    if m.integer:
        np.rint(x, out=x)
    return x


def _sig(x: float, digits: int = 7) -> float:
    """``x`` rounded to ``digits`` significant digits (keeps model files readable)."""
    return float(f"{float(x):.{digits}g}")


def km_marginal(durations: np.ndarray, observed: np.ndarray) -> Marginal:
    """Empirical lifetime marginal from the Kaplan-Meier curve of right-censored data.

    Quantiles come from the inverse of S(t); the probability mass the trace never saw
    end (S at the last observed end) is put at the longest duration seen, censored or
    not: a lower bound, so synthetic instances with it outlive a trace as long as the
    source.
    """
    from fleetlab.workload._stats import kaplan_meier

    times, surv = kaplan_meier(durations, observed)
    longest = float(durations.max())
    n = durations.size
    zmax = min(Z_LIMIT, float(ndtri(1.0 - 0.5 / max(n, 2))))
    probs = np.concatenate([[0.0], ndtr(np.linspace(-zmax, zmax, EMPIRICAL_KNOTS - 2)), [1.0]])
    if times.size == 0:
        q = np.full(probs.size, longest)
    else:
        cdf = 1.0 - surv
        idx = np.searchsorted(cdf, probs, side="left")
        q = np.where(idx < times.size, times[np.minimum(idx, times.size - 1)], longest)
        q[0] = float(durations.min())
    q = np.maximum.accumulate(q)
    return Marginal(
        kind="empirical",
        probs=[_sig(p) for p in probs],
        quantiles=[_sig(v) for v in q],
        lower=float(durations.min()),
        upper=longest,
        n=int(n),
    )
