"""Fitting a :class:`WorkloadModel` to a canonical table."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams
from fleetlab.workload._marginals import draw, fit_marginal, km_marginal, knots
from fleetlab.workload._model import (
    Arrival,
    Copula,
    Entity,
    Marginal,
    RateCurve,
    Renewal,
    Source,
    WorkloadModel,
)
from fleetlab.workload._stats import (
    BIN_CANDIDATES_S,
    cv,
    normal_scores,
    spearman_matrix,
    time_quantum,
    zipf_exponent,
)
from fleetlab.workload._views import event_frame, resolve_table, view_of

DAY = 86400.0
WEEK = 7 * DAY


class FitOptions(BaseModel):
    """Options of :func:`fit` (defaults are the documented choices).

    ``min_events_per_bin``: the rate curve uses the smallest candidate bin with at
    least this many events per bin on average (so bins are not Poisson noise);
    ``max_levels``: at most this many bins per period; ``ks_threshold``: a parametric
    family must reach this KS distance or the marginal is empirical (and
    ``renewal_ks_threshold`` the same for Gamma inter-arrivals);
    ``entity_top``: entities whose shares are stored explicitly; ``entity_own_sizes``:
    how many of the biggest entities get their own size marginals, each needing at
    least ``entity_min_events`` events; ``copula_sample``: rows used for the copula.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_events_per_bin: float = Field(32.0, gt=0)
    max_levels: int = Field(2048, ge=1)
    ks_threshold: float = Field(0.02, gt=0, le=1)
    renewal_ks_threshold: float = Field(0.05, gt=0, le=1)
    entity_top: int = Field(1000, ge=1)
    entity_own_sizes: int = Field(8, ge=0)
    entity_min_events: int = Field(500, ge=10)
    copula_sample: int = Field(200_000, ge=100)


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
    )


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
    """Lambda(t): expected events in [0, t) under the rate curve times ``scale``."""
    lv = np.asarray(rate.levels) * scale
    cum = np.concatenate([[0.0], np.cumsum(lv * rate.bin_s)])
    per_cycle = cum[-1]
    cycles = np.floor(t / rate.period_s)
    rem = t - cycles * rate.period_s
    return cycles * per_cycle + np.interp(rem, np.arange(lv.size + 1) * rate.bin_s, cum)


def fit_renewal(
    t: np.ndarray, rate: RateCurve, *, ks_threshold: float, rng: np.random.Generator
) -> Renewal:
    """Renewal burstiness: the inter-arrivals after dividing out the rate curve.

    Gamma with their CV when its KS distance is within ``ks_threshold``; otherwise the
    empirical distribution of the unit-mean gaps (so the CV is kept either way).
    """
    from scipy import stats

    from fleetlab.workload._marginals import empirical, ks_one_sample

    u = operational_time(t, rate)
    gaps = np.diff(u)
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
    from fleetlab.workload._marginals import draw
    from fleetlab.workload._stats import ks_two_sample

    sim = draw(emp, rng.standard_normal(min(g.size, 50_000)))
    return Renewal(
        family="empirical",
        cv=float(c),
        ks=ks_two_sample(g / g.mean(), sim),
        gamma_ks=gamma_ks,
        gaps=emp,
    )


def fit(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    table: str | None = None,
    seed: int = 0,
    options: FitOptions | None = None,
    source_path: str | None = None,
) -> tuple[WorkloadModel, dict[str, Any]]:
    """Fit a generative workload model to a canonical table.

    Parameters
    ----------
    frame
        A canonical requests, invocations, vms, spans or flows table (see
        ``fleetlab.traces.TABLES``); lazy frames are collected.
    table
        The canonical table name; detected from the columns when omitted.
    seed
        Seed of the samples the fits are made on (fits are deterministic for a seed).
    options
        :class:`FitOptions`; the defaults are the documented choices.
    source_path
        Recorded in the model's ``source`` (no data from the file is kept).

    Returns
    -------
    model, diagnostics
        The model and a dict with each field's candidate families (AIC, KS) and the
        renewal fit, for reports.

    Raises
    ------
    ConfigError
        The table is not an event stream, or has fewer than 2 timed events.
    """
    opts = options or FitOptions()
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    name = resolve_table(df, table)
    view = view_of(name)
    every, fields, _ = event_frame(df, view, expand_seed=seed)
    ev = every.filter(pl.col("_t").is_not_null() & pl.col("_t").is_finite())
    if ev.height < 2:
        raise ConfigError(
            f"cannot fit a workload model: {name} table has {ev.height} event(s) with a time in "
            f"{view.time!r} (expected at least 2)"
        )
    streams = Streams(seed)
    t_raw = ev["_t"].to_numpy()
    t = t_raw - t_raw[0]
    duration = float(t[-1])
    if duration <= 0:
        raise ConfigError(
            f"cannot fit a workload model: all {ev.height} events share one time in {view.time!r} "
            "(expected a time span > 0)"
        )
    quantum = time_quantum(t)
    if quantum is not None:
        jitter = streams.get("fit.quantum").uniform(0.0, quantum, t.size)
        t = np.sort(t + jitter)
        duration = float(t[-1])
    raw = fit_rate_curve(t, duration, opts, quantum_s=quantum)
    first = fit_renewal(
        t, raw, ks_threshold=opts.renewal_ks_threshold, rng=streams.get("fit.renewal0")
    )
    rate = fit_rate_curve(t, duration, opts, quantum_s=quantum, noise_cv=first.cv)
    renewal = fit_renewal(
        t, rate, ks_threshold=opts.renewal_ks_threshold, rng=streams.get("fit.renewal")
    )
    integer = dict(view.fields)
    marginals: dict[str, Marginal] = {}
    diagnostics: dict[str, Any] = {"candidates": {}, "renewal": renewal.model_dump()}
    for f in fields:
        values = every[f].drop_nulls().to_numpy()
        if f == "lifetime_s":
            values = values[values >= 0]
        if values.size == 0:
            continue
        m, cands = fit_marginal(
            values, integer=integer[f], rng=streams.get(f"fit.{f}"), ks_threshold=opts.ks_threshold
        )
        if f == "lifetime_s":
            m = _censored_lifetimes(df, m)
        marginals[f] = m
        diagnostics["candidates"][f] = cands
    copula = _fit_copula(every, marginals, opts, streams.get("fit.copula"))
    own_fields = [f for f in marginals if f != "lifetime_s"]  # lifetimes: pooled Kaplan-Meier
    entity = _fit_entity(every, view.entity, view.parent, own_fields, integer, opts, streams)
    model = WorkloadModel(
        table=name,
        time_column=view.time,
        source=Source(table=name, rows=df.height, duration_s=duration, path=source_path),
        arrival=Arrival(rate=rate, renewal=renewal, quantum_s=quantum),
        fields=marginals,
        copula=copula,
        entity=entity,
        lifetime_column="lifetime_s" if "lifetime_s" in marginals else None,
    )
    return model, diagnostics


def _censored_lifetimes(df: pl.DataFrame, fitted: Marginal) -> Marginal:
    """Lifetimes from Kaplan-Meier when some VMs outlive the trace (deleted_s null/at the end)."""
    d = df.select(
        pl.col("created_s").cast(pl.Float64), pl.col("deleted_s").cast(pl.Float64)
    ).filter(
        pl.col("created_s").is_not_null()
        & (pl.col("deleted_s").is_null() | (pl.col("deleted_s") >= pl.col("created_s")))
    )
    end = d.select(pl.max_horizontal(pl.col("deleted_s").max(), pl.col("created_s").max())).item()
    censored = (d["deleted_s"].is_null() | (d["deleted_s"] >= end)).to_numpy()
    if not censored.any():
        return fitted
    life = (d["deleted_s"].fill_null(end) - d["created_s"]).to_numpy()
    m = km_marginal(life, ~censored)
    return m.model_copy(update={"ks": None})


def _fit_copula(
    ev: pl.DataFrame, marginals: dict[str, Marginal], opts: FitOptions, rng: np.random.Generator
) -> Copula | None:
    """Gaussian copula: correlations of normal scores, calibrated to the rank correlations.

    With ties (discrete fields such as GPU counts) the normal-score correlation
    understates the dependence a Gaussian copula must carry; each pair whose simulated
    Spearman correlation misses the observed one by more than 0.02 gets its latent
    correlation found by bisection (common random numbers, 20,000 draws).
    """
    fields = list(marginals)
    if len(fields) < 2:
        return None
    rows = ev.select(fields).drop_nulls()
    if rows.height < 3:
        return None
    if rows.height > opts.copula_sample:
        idx = np.sort(rng.choice(rows.height, opts.copula_sample, replace=False))
        rows = rows[idx]
    cols = [rows[f].to_numpy() for f in fields]
    scores = np.vstack([normal_scores(c) for c in cols])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.atleast_2d(np.corrcoef(scores))
    corr = np.nan_to_num(corr, nan=0.0)
    target = np.nan_to_num(spearman_matrix(cols), nan=0.0)
    z = rng.standard_normal((2, 20_000))
    tables = {f: knots(m) for f, m in marginals.items()}
    for i in range(len(fields)):
        for j in range(i + 1, len(fields)):
            mi, mj = marginals[fields[i]], marginals[fields[j]]
            if "constant" in (mi.kind, mj.kind):
                continue

            def simulated(
                rho: float, mi: Marginal = mi, mj: Marginal = mj, i: int = i, j: int = j
            ) -> float:
                a = draw(mi, z[0], tables[fields[i]])
                b = draw(
                    mj, rho * z[0] + math.sqrt(max(0.0, 1 - rho * rho)) * z[1], tables[fields[j]]
                )
                return float(spearman_matrix([a, b])[0, 1])

            want = float(target[i, j])
            if abs(simulated(float(corr[i, j])) - want) <= 0.02:
                continue
            lo, hi = -0.999, 0.999
            for _ in range(18):
                mid = (lo + hi) / 2
                if simulated(mid) < want:
                    lo = mid
                else:
                    hi = mid
            corr[i, j] = corr[j, i] = (lo + hi) / 2
    np.fill_diagonal(corr, 1.0)
    corr = _nearest_psd(corr)
    return Copula(fields=fields, correlation=[[float(x) for x in row] for row in corr])


def _nearest_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    if w.min() > 1e-10:
        return c
    w = np.maximum(w, 1e-10)
    out = (v * w) @ v.T
    d = np.sqrt(np.diag(out))
    return out / np.outer(d, d)


def _fit_entity(
    ev: pl.DataFrame,
    column: str | None,
    parent: str | None,
    fields: list[str],
    integer: dict[str, bool],
    opts: FitOptions,
    streams: Streams,
) -> Entity | None:
    if column is None or column not in ev.columns:
        return None
    keys = [column] if parent is None or parent not in ev.columns else [column, parent]
    weight = pl.col("_count").sum() if "_count" in ev.columns else pl.len()
    per = (
        ev.filter(pl.col(column).is_not_null())
        .group_by(keys)
        .agg(weight.alias("n"))
        .sort(["n", column], descending=[True, False])
    )
    if per.height == 0:
        return None
    n = per["n"].to_numpy().astype(np.float64)
    total = n.sum()
    top = per.head(opts.entity_top)
    shares = (top["n"].to_numpy() / total).tolist()
    parents = None
    if len(keys) == 2:
        codes = top[parent].cast(pl.Categorical).to_physical().to_numpy()
        parents = [int(x) for x in codes]
    own: dict[str, dict[str, Marginal]] = {}
    if fields and opts.entity_own_sizes > 0:
        big = per.head(opts.entity_own_sizes).filter(pl.col("n") >= opts.entity_min_events)
        for rank, key in enumerate(big[column].to_list()):
            sub = ev.filter(pl.col(column) == key)
            own[str(rank)] = {
                f: fit_marginal(
                    v,
                    integer=integer[f],
                    rng=streams.get(f"fit.entity.{rank}.{f}"),
                    parametric=False,
                )[0]
                for f in fields
                if (v := sub[f].drop_nulls().to_numpy()).size
            }
        if own:
            rest = ev.filter(~pl.col(column).is_in(big[column].implode()))
            own["rest"] = {
                f: fit_marginal(
                    v,
                    integer=integer[f],
                    rng=streams.get(f"fit.entity.rest.{f}"),
                    parametric=False,
                )[0]
                for f in fields
                if (v := rest[f].drop_nulls().to_numpy()).size
            }
    return Entity(
        column=column,
        count=per.height,
        shares=[float(s) for s in shares],
        tail_share=float(max(0.0, 1.0 - sum(shares))),
        zipf_exponent=_finite(zipf_exponent(n)),
        parent_column=parent if parents is not None else None,
        parents=parents,
        fields=own,
    )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
