"""Utilization models of usage tables: VM classes, profiles, AR(1) residuals.

A usage table is a grid of samples (``vm_id``, ``ts_s``, ``cpu_avg`` [, ``cpu_max``,
``cpu_min``]), not an event stream, so its model is of another kind (see
docs/workload.md, "Usage"). In logit space, ``x = logit(cpu / 100)``, a VM of class
``c`` is ``x_t = mu + a * (daily_c[t mod day] + weekly_c[day of week]) + r_t`` with a
residual ``r`` that is the sum of a fast and a slow AR(1); ``(mu, log sd, a, slow share,
gap scale, gap CV)`` is drawn per VM from the class's kernel density over its VMs' vectors,
where ``mu``, ``sd`` and the gap scale are calibrated so that the model reproduces each
source VM's mean CPU, P95 and mean cpu_max (:func:`calibrate_spread`,
:func:`calibrate_gap`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams
from fleetlab.traces import canonical
from fleetlab.workload._model import (
    Arrival,
    RateCurve,
    Renewal,
    Source,
    UsageClass,
    UsageModel,
    WorkloadModel,
)
from fleetlab.workload._stats import ks_critical, ks_two_sample

DAY = 86400.0
WEEK = 7 * DAY
EPS = 1e-3
"""CPU fractions are clipped to [EPS, 1 - EPS] before the logit (0 % and 100 % samples)."""
MAX_K = 6
MAX_POINTS = 256
KDE_FACTOR = 0.3
"""The level density's bandwidth as a share of Silverman's rule for its dimension.

The per-VM vectors lie near a lower-dimensional set (correlations up to -0.73 between
the level and the sd, -0.71 between the gap and its CV on Azure VM 2017), where the
d-dimensional rule over-smooths: at scale 10, the worst per-VM KS over seeds 1-6 was
0.17 (cpu_max mean) with the full rule, 0.16 at 0.7, 0.147 at 0.5 and 0.12 at 0.3,
against the critical value 0.143.
"""
"""Per-VM parameter vectors kept per class as the support of the level density."""
THRESHOLDS_PCT = (10.0, 25.0, 50.0)


def logit(cpu_pct: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of CPU percent ``cpu_pct`` as a fraction, clipped to [EPS, 1-EPS]."""
    p = np.clip(np.asarray(cpu_pct, dtype=np.float64) / 100.0, EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def inv_logit(x: np.ndarray) -> np.ndarray:
    """CPU percent of logit values ``x`` (the inverse of :func:`logit`)."""
    return 100.0 / (1.0 + np.exp(-x))


def _grid(df: pl.DataFrame, column: str = "cpu_avg") -> tuple[np.ndarray, list[str], float]:
    """The samples as a [VM, step] matrix (NaN where missing), the VM ids, the interval.

    Steps count sampling intervals from the table's first timestamp; the interval is
    the most common gap between a VM's consecutive samples.

    Raises
    ------
    ConfigError
        No sample with a time and a value, or no VM with two samples.
    """
    u = df.filter(
        pl.col("ts_s").is_not_null() & pl.col(column).is_not_null() & pl.col("vm_id").is_not_null()
    ).select("vm_id", pl.col("ts_s").cast(pl.Float64), pl.col(column).cast(pl.Float64))
    if u.height == 0:
        raise ConfigError(f"usage table: no rows with vm_id, ts_s and {column} (expected samples)")
    d = (
        u.sort("vm_id", "ts_s")
        .select(pl.col("ts_s").diff().over("vm_id").alias("d"))
        .filter(pl.col("d") > 0)["d"]
    )
    if d.len() == 0:
        raise ConfigError(
            "usage table: no VM has two samples at different ts_s (expected a time series per VM)"
        )
    interval = float(d.mode().sort()[0])
    t0 = float(np.min(u["ts_s"].to_numpy()))
    ids = u["vm_id"].unique().sort().to_list()
    vm = u["vm_id"].cast(pl.Enum(ids)).to_physical().to_numpy().astype(np.int64)
    step = np.rint((u["ts_s"].to_numpy() - t0) / interval).astype(np.int64)
    n_steps = int(step.max()) + 1
    mat = np.full((len(ids), n_steps), np.nan)
    mat[vm, step] = u[column].to_numpy()
    return mat, [str(x) for x in ids], interval


def _fill(x: np.ndarray) -> np.ndarray:
    """Missing samples get their VM's mean (stated: the model sees no gaps)."""
    mean = np.nanmean(x, axis=1, keepdims=True)
    return np.where(np.isnan(x), mean, x)


def _period_steps(interval: float) -> int:
    return max(1, round(DAY / interval))


def _profiles(x: np.ndarray, per_day: int) -> np.ndarray:
    """Each VM's mean time-of-day profile around its mean (logit units), [VM, per_day]."""
    n, t = x.shape
    idx = np.arange(t) % per_day
    dev = x - x.mean(axis=1, keepdims=True)
    sums = np.zeros((n, per_day))
    np.add.at(sums.T, idx, dev.T)
    cnt = np.bincount(idx, minlength=per_day)
    return sums / np.maximum(cnt, 1)


def _smooth(p: np.ndarray, width: int) -> np.ndarray:
    """Circular moving average of ``p`` over ``width`` bins (last axis)."""
    if width <= 1 or p.shape[-1] < width:
        return p
    k = np.ones(width) / width
    pad = width // 2
    ext = np.concatenate([p[..., -pad:], p, p[..., : width - 1 - pad]], axis=-1)
    return np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), -1, ext)


def _kmeans(
    feats: np.ndarray, k: int, rng: np.random.Generator, iters: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding from ``rng``; (labels, centres)."""
    n = feats.shape[0]
    centres = [feats[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([np.sum((feats - c) ** 2, axis=1) for c in centres], axis=0)
        total = d2.sum()
        pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres.append(feats[pick])
    c = np.asarray(centres)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        d = ((feats[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        new = np.argmin(d, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                c[j] = feats[labels == j].mean(axis=0)
    return labels, c


def _silhouette(feats: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width (VMs alone in their class count 0)."""
    d = np.sqrt(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(axis=2))
    ks = np.unique(labels)
    if ks.size < 2:
        return -1.0
    s = np.zeros(labels.size)
    for i in range(labels.size):
        own = labels == labels[i]
        if own.sum() <= 1:
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == j].mean() for j in ks if j != labels[i])
        s[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(s.mean())


def vm_features(x: np.ndarray, per_day: int) -> np.ndarray:
    """Clustering features per VM: standardized [mean level, P95, daily-profile shape].

    Level and P95 are of the logit CPU; the 24 hourly means of the daily profile are
    scaled so that the whole block weighs as much as one standardized feature.
    """
    mu = x.mean(axis=1)
    p95 = np.quantile(x, 0.95, axis=1)
    prof = _profiles(x, per_day)
    hours = np.array_split(np.arange(per_day), min(24, per_day))
    hourly = np.stack([prof[:, h].mean(axis=1) for h in hours], axis=1)

    def z(v: np.ndarray) -> np.ndarray:
        s = v.std()
        return (v - v.mean()) / s if s > 0 else v * 0.0

    block = hourly - hourly.mean(axis=0)
    tot = math.sqrt(float(np.sum(block.var(axis=0))))
    block = block / tot if tot > 0 else block * 0.0
    return np.column_stack([z(mu), z(p95), block])


def choose_classes(feats: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
    """k-means labels for k in 2..min(6, VMs / 5), k with the highest mean silhouette.

    Fewer than 10 VMs: one class (no silhouette).
    """
    n = feats.shape[0]
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, min(MAX_K, n // 5) + 1):
        labels, _ = _kmeans(feats, k, rng)
        if np.unique(labels).size < k:
            continue
        s = _silhouette(feats, labels)
        if best is None or s > best[0]:
            best = (s, labels)
    if best is None:
        return np.zeros(n, dtype=np.int64), None
    # classes ranked by size (largest first), so the file reads in order
    labels = best[1]
    order = np.argsort(-np.bincount(labels), kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    return remap[labels], best[0]


def _acf1(r: np.ndarray) -> np.ndarray:
    a = r[:, :-1] - r[:, :-1].mean(axis=1, keepdims=True)
    b = r[:, 1:] - r[:, 1:].mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-300), 0.0)


ACF_LAGS = (1, 2, 3, 4, 6, 8, 12, 18, 24, 36, 48, 72, 96, 144, 216, 288, 432, 576, 864, 1152)
"""Lags (samples) whose mean residual ACF the two AR(1) components are fitted to."""


def fit_two_ar1(resid: np.ndarray) -> tuple[float, float, float]:
    """``(phi, phi_slow, slow_share)`` of a fast plus a slow AR(1) matching the residual ACF.

    Least squares on the VMs' mean ACF at :data:`ACF_LAGS` (those under a quarter of
    the series) of ``(1 - w) phi^k + w phi_slow^k``, with ``0 <= phi <= phi_slow < 1``.
    A single AR(1) (``w = 0``) lost the day-long memory of the Azure VMs (ACF at one
    day 0.25 real vs 0.03).
    """
    from scipy.optimize import least_squares

    lags = np.asarray([k for k in ACF_LAGS if k < resid.shape[1] // 4])
    a1 = float(np.clip(np.median(_acf1(resid)), 0.0, 0.99))
    if lags.size < 3:
        return a1, 0.0, 0.0
    target = np.asarray([_acf_at(resid, int(k)) for k in lags])

    def err(p: np.ndarray) -> np.ndarray:
        f, g, w = p
        return (1 - w) * f**lags + w * g**lags - target

    fit = least_squares(err, x0=[a1, 0.995, 0.2], bounds=([0.0, 0.0, 0.0], [0.999, 0.99999, 1.0]))
    f, g, w = (float(v) for v in fit.x)
    if f > g:
        f, g, w = g, f, 1.0 - w
    return round(f, 6), round(g, 6), round(w, 6)


CAL_STEPS = 256
"""Samples per VM (evenly spaced over the trace) on which its levels are calibrated."""
CAL_NODES = 12
"""Gauss-Hermite nodes per noise dimension (the residual, the gap's own noise)."""
CAL_OUTER = 18
"""Bisection steps on a VM's log residual sd (:func:`calibrate_spread`)."""


def _nodes() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (summing to 1) for expectations over N(0, 1).

    (Mid-point normal quantiles understate the variance: 8 of them have 0.90, which
    put the calibrated mean cpu_max 2-3 % high.)
    """
    x, w = np.polynomial.hermite_e.hermegauss(CAL_NODES)
    return x, w / w.sum()


def _newton(
    f: Any, start: np.ndarray, target: np.ndarray, *, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Solve the increasing ``f(v) = target`` per VM by safeguarded Newton steps in [lo, hi]."""
    v = start.copy()
    for _ in range(30):
        val, slope = f(v)
        err = val - target
        lo = np.where(err < 0, v, lo)
        hi = np.where(err > 0, v, hi)
        step = -err / np.maximum(slope, 1e-9)
        nxt = v + np.clip(step, -2.0, 2.0)
        bad = (nxt <= lo) | (nxt >= hi)
        v = np.where(bad, 0.5 * (lo + hi), nxt)
        if np.all(np.abs(err) < 1e-4 * np.maximum(target, 1e-3)):
            break
    return v


def calibrate_level(
    shape: np.ndarray, mu: np.ndarray, sd: np.ndarray, amp: np.ndarray, target_pct: np.ndarray
) -> np.ndarray:
    """Per VM, the logit level ``mu`` whose synthetic mean CPU equals the real one.

    Synthesis draws ``x_t = mu + amp * shape_t + r_t`` with a Gaussian ``r`` of
    standard deviation ``sd`` and reports ``inv_logit(x_t)``; the mean of that is not
    ``inv_logit`` of the mean logit (Jensen: the logit is convex below 50 %), and the
    real residuals are not Gaussian, so the VM's mean logit as ``mu`` put its mean CPU
    off by -15 % .. +6 % (5th-95th percentile of the Azure VM 2017 VMs). ``mu`` is
    solved for (Newton, on ``CAL_STEPS`` samples of the profile and ``CAL_NODES``
    normal quantiles for ``r``) so that the expected mean is ``target_pct``.
    """
    step = max(1, shape.size // CAL_STEPS)
    z, w = _nodes()
    base = (amp[:, None] * shape[None, ::step])[:, :, None] + sd[:, None, None] * z

    def f(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = inv_logit(v[:, None, None] + base)
        return (p @ w).mean(axis=1), ((p * (1 - p / 100.0)) @ w).mean(axis=1)

    return _newton(f, mu, target_pct, lo=mu - 8.0, hi=mu + 8.0)


def calibrate_spread(
    shape: np.ndarray,
    mu: np.ndarray,
    sd: np.ndarray,
    amp: np.ndarray,
    target_pct: np.ndarray,
    target_p95: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per VM, ``(mu, sd)`` whose synthetic mean CPU and P95 (logit) equal the real ones.

    The residual is Gaussian in logit space, the real ones are not (VMs that idle and
    burst, VMs on two levels), so the VM's mean logit and residual sd put its mean CPU
    off by -15 % .. +6 % and its P95 by more. ``sd`` is found by bisection on its log
    (from 1/20 to 7 times the residual's) so that the model's P95 equals ``target_p95``
    (the VM's real P95 in logit units; the model's is the 95 % point of the mixture
    over the profile of ``N(mu + amp shape_t, sd^2)``), with ``mu`` solved for the
    mean at each step (:func:`calibrate_level`).
    """
    from scipy.special import ndtr

    step = max(1, shape.size // CAL_STEPS)
    prof = amp[:, None] * shape[None, ::step]
    lo, hi = np.log(sd) - 3.0, np.log(sd) + 2.0
    m = mu
    for _ in range(CAL_OUTER):
        mid = 0.5 * (lo + hi)
        s_ = np.exp(mid)
        m = calibrate_level(shape, m, s_, amp, target_pct)
        # the mixture's 95 % point, by bisection on q
        ql = (m + prof.min(axis=1)) - 4.0 * s_
        qh = (m + prof.max(axis=1)) + 4.0 * s_
        for _ in range(40):
            q = 0.5 * (ql + qh)
            cdf = ndtr((q[:, None] - m[:, None] - prof) / s_[:, None]).mean(axis=1)
            ql = np.where(cdf < 0.95, q, ql)
            qh = np.where(cdf < 0.95, qh, q)
        too_wide = 0.5 * (ql + qh) > target_p95
        hi = np.where(too_wide, mid, hi)
        lo = np.where(too_wide, lo, mid)
    s_ = np.exp(0.5 * (lo + hi))
    return calibrate_level(shape, m, s_, amp, target_pct), s_


def calibrate_gap(
    shape: np.ndarray,
    mu: np.ndarray,
    sd: np.ndarray,
    amp: np.ndarray,
    log_gap: np.ndarray,
    gap_cv: np.ndarray,
    rho: float,
    target_pct: np.ndarray,
    *,
    sign: float,
) -> np.ndarray:
    """Per VM, the log gap scale whose synthetic mean bound (``cpu_max``/``cpu_min``) is real.

    Synthesis reports ``inv_logit(x_t + sign * g_t)`` with ``x_t`` as in
    :func:`calibrate_level` and a lognormal gap ``g_t`` (scale ``exp(log_gap)``, CV
    ``gap_cv``, normal score ``rho z_t + sqrt(1 - rho^2) e``, ``z_t = r_t / sd``).
    With the VM's mean logit gap as the scale, the mean of ``cpu_max`` came back off by
    -20 % .. +20 % per VM even on the VM's own avg series (the logit's curvature, gaps
    that are not lognormal), which widened the per-VM distribution: 9 % of the
    synthetic Azure VMs under a mean cpu_max of 10 % vs 1 % of the real ones. The
    scale is solved for on the model's own avg distribution (``CAL_NODES`` x
    ``CAL_NODES`` quantiles for ``z`` and ``e``) so that the expected mean is
    ``target_pct``, the real mean of the column.
    """
    e, w = _nodes()
    w2 = (w[:, None] * w[None, :])[None, None]
    step = max(1, shape.size // CAL_STEPS)
    z = e[:, None]
    x = (
        mu[:, None, None, None]
        + (amp[:, None] * shape[None, ::step])[:, :, None, None]
        + sd[:, None, None, None] * z[None, None]
    )
    sig = np.sqrt(np.log1p(gap_cv**2))[:, None, None, None]
    noise = rho * z + math.sqrt(max(0.0, 1.0 - rho * rho)) * e[None, :]
    unit = np.exp(sig * noise[None, None] - 0.5 * sig**2)  # [VM, 1, z, e]

    def f(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.exp(v)[:, None, None, None] * unit
        p = inv_logit(x + sign * g)
        dp = (p * (1 - p / 100.0)) * g
        return sign * (p * w2).sum(axis=(2, 3)).mean(axis=1), (dp * w2).sum(axis=(2, 3)).mean(
            axis=1
        )

    return _newton(f, log_gap, sign * target_pct, lo=log_gap - 8.0, hi=log_gap + 8.0)


def vm_slow_shares(resid: np.ndarray, phi: float, phi_slow: float, slow: float) -> np.ndarray:
    """Each VM's share of residual variance in the slow AR(1), from its own ACF.

    The class's two AR(1) components are fitted to the VMs' mean ACF, but VMs differ:
    on Azure VM 2017 most are steady from week to week (the sd of their weekly mean
    logit CPU 0.01-0.04) while a few wander for days (0.3-0.5). One class-wide slow
    share gave every synthetic VM the wandering of the average VM, so the per-VM
    means, P95s and cpu_max means spread wider than the real ones (9 % of synthetic
    VMs under a mean cpu_max of 10 %, 1 % real). Per VM, the ACF at the lag where
    the fast component has died out (``(1 - w) phi^k < 0.01``, at most a quarter of
    the series) is divided by ``phi_slow^k``; clipped to [0, 1]. The VMs' mean stays
    near the class's ``slow_share`` (the fleet's ACF is kept).
    """
    if slow <= 0 or phi_slow <= 0:
        return np.zeros(resid.shape[0])
    k = 1
    while (1 - slow) * phi**k >= 0.01 and k < resid.shape[1] // 4:
        k *= 2
    k = max(1, min(k, resid.shape[1] // 4))
    a = resid[:, :-k] - resid.mean(axis=1, keepdims=True)
    b = resid[:, k:] - resid.mean(axis=1, keepdims=True)
    var = np.maximum((resid - resid.mean(axis=1, keepdims=True)).var(axis=1), 1e-12)
    acf = (a * b).mean(axis=1) / var
    return np.clip(acf / phi_slow**k, 0.0, 1.0)


def fit_usage(
    df: pl.DataFrame, *, seed: int = 0, source_path: str | None = None
) -> tuple[WorkloadModel, dict[str, Any]]:
    """Fit a :class:`UsageModel` to a canonical usage table (see :func:`fleetlab.workload.fit`).

    Raises
    ------
    ConfigError
        No usable samples, or fewer than 2 steps or 2 VMs... (the message says which).
    """
    raw, _, interval = _grid(df)
    n_vm, n_steps = raw.shape
    if n_steps < 3:
        raise ConfigError(
            f"usage table: {n_steps} sampling step(s) of {interval:g} s (expected at least 3)"
        )
    missing = float(np.isnan(raw).mean())
    x = _fill(logit(raw))
    per_day = _period_steps(interval)
    duration = (n_steps - 1) * interval
    streams = Streams(seed)
    labels, sil = choose_classes(vm_features(x, per_day), streams.get("fit.usage.kmeans"))
    weekly_ok = duration >= 14 * DAY
    idx_day = np.arange(n_steps) % per_day
    dow = (np.arange(n_steps) // per_day) % 7
    bounds_raw: dict[str, np.ndarray] = {}
    bounds_pct: dict[str, np.ndarray] = {}
    for col in ("cpu_max", "cpu_min"):
        if col in df.columns and df[col].null_count() < df.height:
            m, _, _ = _grid(df, col)
            if m.shape == raw.shape:
                bounds_raw[col] = np.abs(logit(m) - logit(raw))
                bounds_pct[col] = m
    classes: list[UsageClass] = []
    diag: dict[str, Any] = {"k": int(labels.max()) + 1, "silhouette": sil, "missing": missing}
    per_vm_phi: list[float] = []
    for c in range(int(labels.max()) + 1):
        sel = labels == c
        xc = x[sel]
        mu = xc.mean(axis=1)
        dev = xc - mu[:, None]
        daily = _smooth(_profiles(xc, per_day).mean(axis=0), 3)
        daily = daily - daily.mean()
        shape = daily[idx_day]
        weekly = None
        if weekly_ok:
            rest = dev - shape[None, :]
            w = np.array([rest[:, dow == d].mean() for d in range(7)])
            weekly = w - w.mean()
            shape = shape + weekly[dow]
        ss = float(np.sum(shape * shape))
        amp = (dev @ shape) / ss if ss > 0 else np.zeros(xc.shape[0])
        resid = dev - amp[:, None] * shape[None, :]
        sd = np.maximum(resid.std(axis=1), 1e-3)
        phi, phi_slow, slow = fit_two_ar1(resid)
        vm_slow = vm_slow_shares(resid, phi, phi_slow, slow)
        per_vm_phi.extend(np.clip(_acf1(resid), -0.99, 0.99).tolist())
        names = ["mu", "log_sd", "amp", "slow_share"]
        real_mean = np.nanmean(np.clip(raw[sel], 100 * EPS, 100 * (1 - EPS)), axis=1)
        p95 = np.quantile(xc, 0.95, axis=1)
        mu, sd = calibrate_spread(shape, mu, sd, amp, real_mean, p95)
        cols = [mu, np.log(sd), amp, vm_slow]
        gap_corr: dict[str, float] = {}
        z = resid / sd[:, None]
        for col, gaps in bounds_raw.items():
            gs = gaps[sel]
            gbar = np.maximum(np.nanmean(gs, axis=1), 1e-4)
            gcv = np.maximum(np.nanstd(gs, axis=1) / gbar, 1e-3)
            lg = np.log(np.maximum(gs, 1e-4))
            d = np.nan_to_num(lg - np.nanmean(lg, axis=1)[:, None])
            rho = np.mean(z * d, axis=1) / np.maximum(z.std(axis=1) * d.std(axis=1), 1e-12)
            gap_corr[col] = round(float(np.clip(np.median(rho), -0.99, 0.99)), 6)
            names += [f"log_gap.{col}", f"log_gap_cv.{col}"]
            target = np.nanmean(np.clip(bounds_pct[col][sel], 100 * EPS, 100 * (1 - EPS)), axis=1)
            scale = calibrate_gap(
                shape,
                mu,
                sd,
                amp,
                np.log(gbar),
                gcv,
                gap_corr[col],
                target,
                sign=1.0 if col == "cpu_max" else -1.0,
            )
            cols += [scale, np.log(gcv)]
        pars = np.column_stack(cols)
        mean = pars.mean(axis=0)
        k = len(names)
        cov = np.cov(pars, rowvar=False) if pars.shape[0] > 1 else np.zeros((k, k))
        cov = np.atleast_2d(cov) + np.eye(k) * 1e-6
        rng_p = streams.get(f"fit.usage.points.{c}")
        points = (
            pars
            if pars.shape[0] <= MAX_POINTS
            else pars[rng_p.choice(pars.shape[0], MAX_POINTS, replace=False)]
        )
        n_p = pars.shape[0]
        bw = KDE_FACTOR * (4.0 / (n_p * (k + 2))) ** (1.0 / (k + 4))  # x Silverman's rule
        classes.append(
            UsageClass(
                share=float(sel.mean()),
                vms=int(sel.sum()),
                level_names=names,
                level_mean=[float(f"{v:.6g}") for v in mean],
                level_cov=[[float(f"{v:.6g}") for v in row] for row in cov],
                level_points=[[float(f"{v:.6g}") for v in row] for row in points],
                bandwidth=round(bw, 6),
                phi=phi,
                phi_slow=phi_slow,
                slow_share=slow,
                daily=[float(f"{v:.5g}") for v in daily],
                weekly=[float(f"{v:.5g}") for v in weekly] if weekly is not None else None,
                gap_corr=gap_corr,
            )
        )
    shares = np.asarray([c.share for c in classes])
    shares = shares / shares.sum()
    classes = [
        c.model_copy(update={"share": float(s)}) for c, s in zip(classes, shares, strict=True)
    ]
    usage = UsageModel(interval_s=interval, vms=n_vm, classes=classes, silhouette=sil)
    rate = n_vm / interval
    clock = Arrival(
        rate=RateCurve(bin_s=interval, period_s=interval, levels=[rate], mean_rate_per_s=rate),
        renewal=Renewal(cv=1e-6),
    )
    model = WorkloadModel(
        table="usage",
        time_column="ts_s",
        source=Source(table="usage", rows=df.height, duration_s=duration, path=source_path),
        arrival=clock,
        usage=usage,
    )
    diag["class_sizes"] = [c.vms for c in classes]
    diag["phi_median"] = float(np.median(per_vm_phi))
    return model, diag


def _vm_names(n: int) -> list[str]:
    width = len(str(max(n - 1, 0)))
    return [f"vm-{i:0{width}d}" for i in range(n)]


def _allocate(shares: np.ndarray, n: int) -> np.ndarray:
    """Class of each of ``n`` VMs: counts by largest remainder (exact shares), in order."""
    exact = shares * n
    base = np.floor(exact).astype(np.int64)
    left = n - int(base.sum())
    base[np.argsort(-(exact - base), kind="stable")[:left]] += 1
    return np.repeat(np.arange(shares.size), base)


class _Vms:
    """The synthetic VMs of a usage model: class, level, amplitude, residual parameters."""

    def __init__(self, um: UsageModel, scale: float, streams: Streams) -> None:
        self.n = max(1, round(um.vms * scale))
        self.cls = _allocate(np.asarray([c.share for c in um.classes]), self.n)
        rng = streams.get("usage.vms")
        self.mu = np.empty(self.n)
        self.sd = np.empty(self.n)
        self.slow = np.empty(self.n)
        self.amp = np.empty(self.n)
        cols = list(um.classes[0].gap_corr)
        self.gap_mean = {col: np.zeros(self.n) for col in cols}
        self.gap_sd = {col: np.zeros(self.n) for col in cols}
        self.gap_rho = {col: np.zeros(self.n) for col in cols}
        for j, c in enumerate(um.classes):
            sel = self.cls == j
            if not sel.any():
                continue
            pars = _draw_levels(c, int(sel.sum()), rng)
            self.mu[sel], self.sd[sel], self.amp[sel] = pars[:, 0], np.exp(pars[:, 1]), pars[:, 2]
            self.slow[sel] = (
                np.clip(pars[:, c.level_names.index("slow_share")], 0.0, 1.0)
                if "slow_share" in c.level_names
                else c.slow_share
            )
            for col in cols:
                self.gap_mean[col][sel] = pars[:, c.level_names.index(f"log_gap.{col}")]
                cv = np.exp(pars[:, c.level_names.index(f"log_gap_cv.{col}")])
                self.gap_sd[col][sel] = np.sqrt(np.log1p(cv**2))
                self.gap_rho[col][sel] = c.gap_corr.get(col, 0.0)
        self.names = _vm_names(self.n)


def _draw_levels(c: UsageClass, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` level vectors of class ``c``: its kernel density (or its Gaussian)."""
    cov = np.asarray(c.level_cov)
    if c.level_points is None:
        return rng.multivariate_normal(np.asarray(c.level_mean), cov, n)
    pts = np.asarray(c.level_points)
    pick = pts[rng.integers(0, pts.shape[0], n)]
    noise = rng.multivariate_normal(np.zeros(cov.shape[0]), cov * c.bandwidth**2, n)
    # shrunk smoothed bootstrap: the kernel noise does not widen the levels' spread
    mean = np.asarray(c.level_mean)
    return mean + (pick - mean + noise) / math.sqrt(1.0 + c.bandwidth**2)


def usage_vms(model: WorkloadModel, *, scale: float = 1.0, seed: int = 0) -> pl.DataFrame:
    """The vms table matching a usage model's synthetic trace (same ``scale`` and ``seed``).

    One row per synthetic VM, the ``vm_id`` of its usage rows, created at 0 and alive to
    the end (``deleted_s`` null), with the model's ``vm_cores`` and ``vm_memory_gb``
    (the usage table has no sizes: a documented default every VM shares).

    Raises
    ------
    ConfigError
        ``model`` is not a usage model, or ``scale`` is not positive.
    """
    um = _usage_of(model)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number (found {scale!r})")
    vms = _Vms(um, scale, Streams(seed))
    frame = pl.DataFrame(
        {
            "vm_id": vms.names,
            "created_s": np.zeros(vms.n),
            "deleted_s": pl.Series([None] * vms.n, dtype=pl.Float64),
            "cores": np.full(vms.n, um.vm_cores),
            "memory_gb": np.full(vms.n, um.vm_memory_gb),
        }
    )
    return canonical(frame.lazy(), "vms").collect()


def _usage_of(model: WorkloadModel) -> UsageModel:
    if model.table != "usage" or model.usage is None:
        raise ConfigError(
            f"expected a usage model with its 'usage' section (found a {model.table} model)"
        )
    return model.usage


def usage_chunks(
    model: WorkloadModel, *, duration_s: float, scale: float, seed: int, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield the synthetic usage table in time blocks of about ``chunk_rows`` rows.

    ``scale`` multiplies the number of VMs; ``duration_s`` sets the number of samples
    per VM (one every ``interval_s`` from 0). Draws are time-major (all VMs of one step,
    then the next), so the output does not depend on the chunk size.
    """
    from scipy.signal import lfilter

    um = _usage_of(model)
    streams = Streams(seed)
    vms = _Vms(um, scale, streams)
    rng = streams.get("usage.residual")
    rng_b = {col: streams.get(f"usage.bounds.{col}") for col in ("cpu_max", "cpu_min")}
    n_steps = math.floor(duration_s / um.interval_s + 1e-9) + 1
    per_day = len(um.classes[0].daily)
    daily = np.asarray([c.daily for c in um.classes])
    weekly = np.asarray([c.weekly if c.weekly is not None else [0.0] * 7 for c in um.classes])
    # two AR(1) components per class: fast (phi) and slow (phi_slow, slow_share of variance)
    comps = []
    for j, c in enumerate(um.classes):
        sel = np.flatnonzero(vms.cls == j)
        slow = vms.slow[sel]
        for phi, share in ((c.phi, 1.0 - slow), (c.phi_slow, slow)):
            if sel.size and np.any(share > 0):
                sd = vms.sd[sel] * np.sqrt(share)
                comps.append((sel, phi, sd * math.sqrt(1.0 - phi**2), sd))
    states = [rng.standard_normal(sel.size) * sd for sel, _, _, sd in comps]  # stationary
    offsets = np.concatenate([[0], np.cumsum([sel.size for sel, _, _, _ in comps])])
    width = int(offsets[-1])
    bound_cols = list(um.classes[0].gap_corr)
    ids = pl.Series("vm_id", vms.names, dtype=pl.String)
    block = max(1, chunk_rows // vms.n)
    for start in range(0, n_steps, block):
        b = min(block, n_steps - start)
        steps = np.arange(start, start + b)
        r = np.zeros((vms.n, b))
        draws = rng.standard_normal((b, width)).T  # time-major: independent of the block size
        for i, (sel, phi, inn, _sd) in enumerate(comps):
            e = draws[offsets[i] : offsets[i] + sel.size] * inn[:, None]
            y, _ = lfilter([1.0], [1.0, -phi], e, axis=1, zi=phi * states[i][:, None])
            states[i] = y[:, -1].copy()
            r[sel] += y
        prof = daily[:, steps % per_day] + weekly[:, (steps // per_day) % 7]
        x = vms.mu[:, None] + vms.amp[:, None] * prof[vms.cls] + r
        cols: dict[str, Any] = {
            "vm_id": pl.concat([ids] * b),
            "ts_s": np.repeat(steps * um.interval_s, vms.n),
            "cpu_avg": inv_logit(x.T).ravel(),
        }
        for col in bound_cols:  # lognormal gap with the VM's mean and CV, tied to r_t / sd
            rho = vms.gap_rho[col][:, None]
            sig = vms.gap_sd[col][:, None]
            z = rng_b[col].standard_normal((b, vms.n)).T
            n = rho * (r / vms.sd[:, None]) + np.sqrt(1.0 - rho**2) * z
            gap = np.exp(vms.gap_mean[col][:, None] + sig * n - 0.5 * sig**2)
            sign = 1.0 if col == "cpu_max" else -1.0
            cols[col] = inv_logit((x + sign * gap).T).ravel()
        yield canonical(pl.DataFrame(cols).lazy(), "usage").collect()


# --- compare ----------------------------------------------------------------------------


def _per_vm(df: pl.DataFrame) -> pl.DataFrame:
    return (
        df.filter(pl.col("cpu_avg").is_not_null())
        .group_by("vm_id")
        .agg(
            pl.col("cpu_avg").mean().alias("mean"),
            pl.col("cpu_avg").quantile(0.95).alias("p95"),
            *(
                [pl.col("cpu_max").mean().alias("max_mean")]
                if "cpu_max" in df.columns and df["cpu_max"].null_count() < df.height
                else []
            ),
        )
    )


def _acf_at(x: np.ndarray, lag: int) -> float:
    """Mean over VMs of the autocorrelation of their series at ``lag`` steps."""
    if lag <= 0 or lag >= x.shape[1] - 1:
        return math.nan
    a = x[:, :-lag] - x.mean(axis=1, keepdims=True)
    b = x[:, lag:] - x.mean(axis=1, keepdims=True)
    var = ((x - x.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    ok = var > 0
    return float(np.mean((a * b).mean(axis=1)[ok] / var[ok])) if ok.any() else math.nan


def _hour_profile(x: np.ndarray, interval: float) -> np.ndarray:
    """Fleet-mean CPU per hour of day, divided by its mean (the shape, not the level)."""
    hour = ((np.arange(x.shape[1]) * interval) // 3600 % 24).astype(np.int64)
    fleet = np.nanmean(x, axis=0)
    prof = np.bincount(hour, weights=fleet, minlength=24) / np.maximum(
        np.bincount(hour, minlength=24), 1
    )
    return prof / prof.mean() if prof.mean() > 0 else prof


def usage_rows(
    r: pl.DataFrame,
    s: pl.DataFrame,
    th: Any,
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
    row: Any,
    judge: Any,
    *,
    seed: int = 0,
) -> None:
    """Fidelity rows of a synthetic usage table against the real one (see docs/workload.md).

    Per-VM mean and P95 CPU (KS), fractions of VMs whose mean CPU is under 10/25/50 %,
    the mean ACF at lag 1 and one day, the fleet's hour-of-day shape, the shares of the
    real trace's VM classes (synthetic VMs go to the nearest real class centre) and,
    when both have it, the per-VM mean of ``cpu_max``.
    """

    pr, ps = _per_vm(r), _per_vm(s)
    n, m = pr.height, ps.height
    crit = max(th.ks, ks_critical(n, m))
    cols = [("mean", "cpu_avg mean"), ("p95", "cpu_avg p95")]
    if "max_mean" in pr.columns and "max_mean" in ps.columns:
        cols.append(("max_mean", "cpu_max mean"))
    for col, label in cols:
        a, b = pr[col].to_numpy(), ps[col].to_numpy()
        d = ks_two_sample(a, b)
        rows.append(
            row(
                "ks_per_vm",
                label,
                float(np.median(a)),
                float(np.median(b)),
                d,
                crit,
                judge(d, crit),
                f"{n} vs {m} VMs; threshold max(ks, 5 % critical value); real/synth: medians",
            )
        )
        q = np.linspace(0, 1, 101)
        curves[f"per_vm.{col}"] = pl.DataFrame(
            {"p": q, "real": np.quantile(a, q), "synth": np.quantile(b, q)}
        )
    for t in THRESHOLDS_PCT:
        fa = float(np.mean(pr["mean"].to_numpy() < t))
        fb = float(np.mean(ps["mean"].to_numpy() < t))
        p = (fa * n + fb * m) / (n + m)
        tol = max(th.share_abs, 1.96 * math.sqrt(max(p * (1 - p), 1e-12) * (1 / n + 1 / m)))
        d = abs(fa - fb)
        rows.append(
            row(
                "vms_under",
                f"{t:g}%",
                fa,
                fb,
                d,
                tol,
                judge(d, tol),
                "share of VMs whose mean CPU is under the threshold; "
                "threshold max(share_abs, 95 % two-proportion bound)",
            )
        )
    xr, _, interval = _grid(r)
    xs, _, interval_s = _grid(s)
    xr, xs = _fill(xr), _fill(xs)
    day = _period_steps(interval)
    for lag, label in ((1, "lag 1"), (day, "lag 1 day")):
        ar, as_ = _acf_at(xr, lag), _acf_at(xs, round(lag * interval / interval_s))
        d = abs(ar - as_)
        rows.append(
            row(
                "acf_usage", label, ar, as_, d, th.acf, judge(d, th.acf), "mean ACF of VMs' cpu_avg"
            )
        )
    hr, hs = _hour_profile(xr, interval), _hour_profile(xs, interval_s)
    if xr.shape[1] * interval >= DAY and xs.shape[1] * interval_s >= DAY:
        err = float(np.mean(np.abs(hs - hr)))
        rows.append(
            row(
                "daily_profile",
                "cpu_avg",
                float(hr.max() / max(hr.min(), 1e-12)),
                float(hs.max() / max(hs.min(), 1e-12)),
                err,
                th.rate_curve,
                judge(err, th.rate_curve),
                "mean |error| of the fleet's hour-of-day shape (unit mean); real/synth: peak/trough",
            )
        )
        curves["daily_profile"] = pl.DataFrame({"hour": np.arange(24), "real": hr, "synth": hs})
    else:
        rows.append(row("daily_profile", "cpu_avg", None, None, None, None, "skipped", "< 1 day"))
    _class_rows(xr, xs, interval, th, rows, row, judge, seed)


def _class_rows(
    xr: np.ndarray,
    xs: np.ndarray,
    interval: float,
    th: Any,
    rows: list[dict[str, Any]],
    row: Any,
    judge: Any,
    seed: int,
) -> None:
    lr, ls = logit(xr), logit(xs)
    day = _period_steps(interval)
    if lr.shape[0] < 10:
        rows.append(row("class_shares", "", None, None, None, None, "skipped", "< 10 real VMs"))
        return
    both = np.vstack(
        [lr[:, : min(lr.shape[1], ls.shape[1])], ls[:, : min(lr.shape[1], ls.shape[1])]]
    )
    feats = vm_features(both, day)  # standardized together, so one scale for both
    fr, fs = feats[: lr.shape[0]], feats[lr.shape[0] :]
    labels, _ = choose_classes(fr, np.random.default_rng(seed))
    k = int(labels.max()) + 1
    centres = np.stack([fr[labels == j].mean(axis=0) for j in range(k)])
    near = np.argmin(((fs[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    a = np.bincount(labels, minlength=k) / labels.size
    b = np.bincount(near, minlength=k) / near.size
    tv = 0.5 * float(np.abs(a - b).sum())
    rows.append(
        row(
            "class_shares",
            f"k={k}",
            float(a.max()),
            float(b.max()),
            tv,
            th.class_tv,
            judge(tv, th.class_tv),
            "total variation of the real VM classes' shares (synthetic VMs to the nearest "
            "real centre); real/synth: the largest class",
        )
    )
