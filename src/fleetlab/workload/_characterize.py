"""Characterization of any canonical table: the analyses that apply, as numbers.

Heavy statistics run on the whole table with polars expressions or numpy vectorised
code (sorting, differences, ``bincount``); the distribution fits run on seeded
samples (MLE on 5,000 values, KS on up to 200,000, correlations on up to 200,000
rows), as documented in docs/workload.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from fleetlab.sim import Streams
from fleetlab.traces import TABLES
from fleetlab.workload._arrival_fit import fit_rate_curve, fit_renewal
from fleetlab.workload._marginals import fit_candidates
from fleetlab.workload._options import FitOptions
from fleetlab.workload._stats import (
    BIN_CANDIDATES_S,
    acf,
    as_float,
    count_cache,
    cv,
    dominant_periods,
    gini,
    hill_tail_index,
    index_of_dispersion,
    kaplan_meier,
    km_quantile,
    kmeans,
    sorted_quantiles,
    spearman_matrix,
    survival_at,
    time_quantum,
    top_share,
    zipf_exponent,
)
from fleetlab.workload._views import VIEWS, event_frame, resolve_table

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY


@dataclass
class Characterization:
    """Result of :func:`characterize`.

    ``metrics``: nested dict of numbers by analysis (JSON-ready, no NaN: a missing
    number is None and the reason is in ``skipped``); ``tables``: polars frames behind
    the plots (rate curves, IDC, CDFs, survival, clusters); ``skipped``: analyses that
    did not apply, with the reason; ``anomalies``: known problems found in the data
    (reported, never silently dropped).
    """

    table: str
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Metrics, skipped analyses and anomalies as one JSON-ready dict."""
        return {
            "table": self.table,
            **_clean(self.metrics),
            "skipped": self.skipped,
            "anomalies": _clean(self.anomalies),
        }


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def characterize(
    frame: pl.DataFrame | pl.LazyFrame, *, table: str | None = None, seed: int = 0
) -> Characterization:
    """Characterize a canonical table with every analysis that applies to it.

    Parameters
    ----------
    frame
        Any canonical table (requests, invocations, vms, usage, spans, flows,
        client_profiles, nodes); lazy frames are collected.
    table
        The canonical table name; detected from the columns when omitted.
    seed
        Seed for the samples the fits and clusters run on.

    Returns
    -------
    Characterization
        Arrivals (rate at several bin sizes, inter-arrival distribution and CV, index
        of dispersion vs window, bursts), periodicity, sizes (best family by AIC, KS,
        tail index), lifetimes with censoring, popularity, correlations, utilization;
        plus the skipped analyses with reasons and the anomalies found.

    Raises
    ------
    ConfigError
        The columns match no canonical table.
    """
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    name = resolve_table(df, table)
    ch = Characterization(table=name)
    ch.metrics["overview"] = {"rows": df.height, "columns": df.columns}
    streams = Streams(seed)
    if df.height == 0:
        ch.skipped.append({"analysis": "all", "reason": "the table is empty (0 rows)"})
        return ch
    _null_anomalies(df, name, ch)
    if name == "usage":
        _utilization(df, ch, streams)
        return ch
    if name == "client_profiles":
        _client_profiles(df, ch)
        return ch
    if name not in VIEWS:
        ch.skipped.append({"analysis": "arrivals/sizes", "reason": f"{name} rows are not events"})
        _sizes_plain(df, ch, streams)
        return ch
    view = VIEWS[name]
    ev, fields, skipped = event_frame(df, view)
    ch.skipped.extend(skipped)
    _arrivals(ev, view.time, ch, streams)
    if name == "vms":
        _lifetimes(df, ch)
    integer = dict(view.fields)
    sizes: dict[str, Any] = {}
    for f in fields:
        sizes[f] = _size(ev[f], f, integer[f], ch, streams)
    if sizes:
        ch.metrics["sizes"] = sizes
    _correlations(ev, fields, ch, streams)
    for col in (view.entity, view.parent):
        if col:
            _popularity(ev if col in ev.columns else df, col, ch)
    if name == "invocations" and "trigger" in df.columns:
        _shares(df, "trigger", ch)
    if name == "vms" and "priority" in df.columns:
        _shares(df, "priority", ch)
    return ch


# --- anomalies -------------------------------------------------------------------------


def _null_anomalies(df: pl.DataFrame, name: str, ch: Characterization) -> None:
    schema = TABLES[name]
    nulls = df.select([pl.col(c).null_count() for c in schema.required if c in df.columns]).row(
        0, named=True
    )
    for col, n in nulls.items():
        if n and n < df.height:
            ch.anomalies.append(
                {
                    "kind": "null_values",
                    "column": col,
                    "rows": n,
                    "note": "rows kept; each analysis ignores the nulls of its column",
                }
            )


# --- arrivals and periodicity ----------------------------------------------------------


def _arrivals(ev: pl.DataFrame, column: str, ch: Characterization, streams: Streams) -> None:
    if "_count" in ev.columns and ev.height and as_float(ev["_count"].max(), what="_count max") > 1:
        _minute_counts(ev, ch)
        return
    timed = ev.filter(pl.col("_t").is_not_null() & pl.col("_t").is_finite())
    t = timed["_t"].to_numpy()
    if t.size < 2:
        ch.skipped.append(
            {
                "analysis": "arrivals",
                "reason": f"{t.size} event(s) with a time in {column!r}; need at least 2",
            }
        )
        return
    negative = int(np.sum(t < 0))
    if negative:
        ch.anomalies.append(
            {
                "kind": "negative_times",
                "column": column,
                "rows": negative,
                "note": "events before the trace start (e.g. VMs created before it); kept",
            }
        )
    raw = ev["_t"]
    unsorted = int(((raw.diff() < 0).sum()) or 0)
    if unsorted:
        ch.anomalies.append(
            {
                "kind": "unsorted_times",
                "column": column,
                "rows": unsorted,
                "note": "rows out of time order; analyses sort by time",
            }
        )
    start = float(t[0])
    t = t - start
    duration = float(t[-1])
    if duration <= 0:
        ch.skipped.append({"analysis": "arrivals", "reason": f"all {t.size} events share one time"})
        return
    gaps = np.diff(t)
    ties = float(np.mean(gaps == 0))
    quantum = time_quantum(t)
    if quantum is not None:
        ch.anomalies.append(
            {
                "kind": "timestamps_on_grid",
                "column": column,
                "grid_s": quantum,
                "tie_fraction": ties,
                "note": "arrivals come in batches on a regular grid; the model fits "
                "within-step times and puts synthetic times back on the grid",
            }
        )
    elif ties > 0.01:
        ch.anomalies.append(
            {
                "kind": "duplicate_times",
                "column": column,
                "tie_fraction": ties,
                "note": "many events share a timestamp (batches or coarse clock)",
            }
        )
    sorted_gaps = np.sort(gaps)
    q = sorted_quantiles(sorted_gaps, [0.5, 0.9, 0.99]) if gaps.size else [math.nan] * 3
    rate = t.size / duration
    arrivals: dict[str, Any] = {
        "events": int(t.size),
        "start_s": start,
        "duration_s": duration,
        "mean_rate_per_s": rate,
        "iat_mean_s": float(gaps.mean()),
        "iat_median_s": float(q[0]),
        "iat_p90_s": float(q[1]),
        "iat_p99_s": float(q[2]),
        "iat_max_s": float(gaps.max()),
        "iat_cv": cv(gaps),
        "tie_fraction": ties,
        "grid_s": quantum,
    }
    curve = fit_rate_curve(t, duration, FitOptions(), quantum_s=quantum)
    renewal = fit_renewal(t, curve, ks_threshold=0.05, rng=streams.get("char.renewal"))
    arrivals["renewal_cv"] = renewal.cv
    arrivals["renewal_gamma_ks"] = renewal.gamma_ks
    counter = count_cache(t, duration)
    idc = index_of_dispersion(t, end=duration, counter=counter)
    arrivals["idc"] = idc
    if idc:
        ch.tables["idc"] = pl.DataFrame(idc)
    else:
        ch.skipped.append(
            {"analysis": "arrivals.idc", "reason": "trace shorter than 10 windows of 0.1 s"}
        )
    ch.tables["iat_quantiles"] = pl.DataFrame(
        {
            "p": np.linspace(0, 1, 201),
            "iat_s": sorted_quantiles(sorted_gaps, np.linspace(0, 1, 201)),
        }
    )
    bins = [b for b in (1.0, 10.0, 60.0, 300.0, HOUR, DAY) if 10 <= duration / b <= 20_000]
    rates = []
    for b in bins:
        c = counter(b)
        rates.append(pl.DataFrame({"bin_s": b, "t_s": np.arange(c.size) * b, "rate_per_s": c / b}))
    if rates:
        ch.tables["rate"] = pl.concat(rates)
        arrivals["rate_bins_s"] = bins
    else:
        ch.skipped.append({"analysis": "arrivals.rate", "reason": "trace shorter than 10 s"})
    arrivals["bursts"] = _bursts(t, duration, rate, ch, counter)
    ch.metrics["arrivals"] = arrivals
    _periodicity(t, duration, ch, counter)


def _minute_counts(ev: pl.DataFrame, ch: Characterization) -> None:
    """Arrivals of a per-minute count table: rate, IDC (windows of whole minutes), periods."""
    ch.skipped.append(
        {
            "analysis": "arrivals.inter_arrival",
            "reason": "per-minute counts have no individual arrival times",
        }
    )
    m = ev.filter(pl.col("_t").is_not_null())
    if m.height == 0:
        ch.skipped.append({"analysis": "arrivals", "reason": "no minute values"})
        return
    minute = ((m["_t"] - m["_t"].min()) // 60).cast(pl.Int64).to_numpy()
    c = np.bincount(minute, weights=m["_count"].fill_null(0).to_numpy()).astype(np.float64)
    duration = c.size * 60.0
    out: dict[str, Any] = {
        "events": float(c.sum()),
        "duration_s": duration,
        "mean_rate_per_s": float(c.sum() / duration),
        "resolution_s": 60.0,
    }
    idc = []
    for k in (1, 10, 60, 1440):
        if c.size // k >= 10:
            agg = c[: c.size // k * k].reshape(-1, k).sum(1)
            if agg.mean() > 0:
                idc.append(
                    {
                        "window_s": 60.0 * k,
                        "idc": float(agg.var() / agg.mean()),
                        "mean_count": float(agg.mean()),
                    }
                )
    out["idc"] = idc
    if idc:
        ch.tables["idc"] = pl.DataFrame(idc)
    ch.tables["rate"] = pl.DataFrame(
        {"bin_s": 60.0, "t_s": np.arange(c.size) * 60.0, "rate_per_s": c / 60}
    )
    out["minute_count_cv"] = cv(c)
    ch.metrics["arrivals"] = out
    t = np.repeat(np.arange(c.size) * 60.0 + 30.0, c.astype(np.int64))
    if t.size >= 2:
        _periodicity(t, duration, ch)


def _bursts(
    t: np.ndarray,
    duration: float,
    rate: float,
    ch: Characterization,
    counter: Callable[[float], np.ndarray],
) -> dict[str, Any]:
    """Windows with at least twice the local rate and 3 sigma (Poisson) above it."""
    w = next((b for b in BIN_CANDIDATES_S if b * rate >= 5), BIN_CANDIDATES_S[-1])
    c = counter(w).astype(np.float64)
    if c.size < 30:
        return {"window_s": w, "detected": None, "note": "fewer than 30 windows"}
    base = pl.Series(c).rolling_median(window_size=61, center=True, min_samples=1).to_numpy()
    base = np.maximum(base, c.mean() * 0.1)
    hot = (c >= 2 * base) & (c > base + 3 * np.sqrt(base))
    if not hot.any():
        return {"window_s": w, "detected": 0, "events_in_bursts": 0.0}
    edges = np.diff(np.concatenate([[0], hot.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    ev_in = np.add.reduceat(c, starts)[: starts.size] if starts.size else np.zeros(0)
    ev_in = np.array([c[s:e].sum() for s, e in zip(starts, ends, strict=True)])
    peak = np.array([np.max(c[s:e] / base[s:e]) for s, e in zip(starts, ends, strict=True)])
    table = pl.DataFrame(
        {
            "start_s": starts * w,
            "duration_s": (ends - starts) * w,
            "events": ev_in,
            "peak_over_local": peak,
        }
    ).sort("events", descending=True)
    ch.tables["bursts"] = table
    return {
        "window_s": w,
        "detected": int(starts.size),
        "events_in_bursts": float(ev_in.sum() / max(c.sum(), 1)),
        "largest_events": float(ev_in.max()),
    }


def _periodicity(
    t: np.ndarray,
    duration: float,
    ch: Characterization,
    counter: Callable[[float], np.ndarray] | None = None,
) -> None:
    if counter is None:
        counter = count_cache(t, duration)
    out: dict[str, Any] = {}
    b = next((x for x in BIN_CANDIDATES_S if duration / x <= 8192), BIN_CANDIDATES_S[-1])
    c = counter(b).astype(np.float64)
    if c.size < 16:
        ch.skipped.append({"analysis": "periodicity", "reason": "fewer than 16 bins"})
        return
    out["bin_s"] = b
    out["dominant"] = dominant_periods(c, b)
    candidates = {"hourly": HOUR, "daily": DAY, "weekly": WEEK}
    strength = {}
    for label, p in candidates.items():
        lag = round(p / b)
        if duration >= 2 * p and lag < c.size:
            strength[label] = float(acf(c, lag)[lag])
        else:
            ch.skipped.append(
                {
                    "analysis": f"periodicity.{label}",
                    "reason": f"trace shorter than two {label} cycles ({2 * p:.0f} s)",
                }
            )
    out["acf_at_period"] = strength
    if duration >= DAY:
        hours = counter(HOUR).astype(np.float64)
        hour = np.arange(hours.size) % 24
        total = np.bincount(hour, weights=hours, minlength=24)
        n = np.bincount(hour, minlength=24)
        prof = total / np.maximum(n, 1)
        out["hour_of_day_profile"] = prof.tolist()
        out["peak_to_trough"] = float(prof.max() / prof.min()) if prof.min() > 0 else None
        if prof.min() == 0:
            ch.skipped.append(
                {"analysis": "periodicity.peak_to_trough", "reason": "an hour with no events"}
            )
    else:
        ch.skipped.append(
            {"analysis": "periodicity.peak_to_trough", "reason": "trace shorter than one day"}
        )
    if duration >= WEEK:
        days = counter(DAY).astype(np.float64)
        dow = np.arange(days.size) % 7
        per = np.bincount(dow, weights=days, minlength=7) / np.maximum(
            np.bincount(dow, minlength=7), 1
        )
        out["day_of_trace_week_profile"] = per.tolist()
        low2 = np.sort(per)[:2].mean()
        out["weekday_weekend_ratio"] = float(np.sort(per)[2:].mean() / low2) if low2 > 0 else None
        out["weekend_note"] = (
            "canonical times start at the trace start: the two quietest days of the week are taken as the weekend"
        )
    else:
        ch.skipped.append(
            {"analysis": "periodicity.weekday_weekend", "reason": "trace shorter than one week"}
        )
    ch.metrics["periodicity"] = out


# --- sizes, lifetimes, correlations, popularity ----------------------------------------


def _size(
    s: pl.Series, name: str, integer: bool, ch: Characterization, streams: Streams
) -> dict[str, Any]:
    s = s.drop_nulls()
    x = s.to_numpy().astype(np.float64)
    finite = np.sort(x[np.isfinite(x)])
    out: dict[str, Any] = {"count": int(finite.size)}
    if finite.size == 0:
        ch.skipped.append({"analysis": f"sizes.{name}", "reason": "no finite values"})
        return out
    q = sorted_quantiles(finite, [0.5, 0.9, 0.99])
    out.update(
        mean=float(finite.mean()),
        median=float(q[0]),
        p90=float(q[1]),
        p99=float(q[2]),
        min=float(finite.min()),
        max=float(finite.max()),
        cv=cv(finite),
    )
    zeros = int(np.sum(finite == 0))
    negatives = int(np.sum(finite < 0))
    if zeros:
        ch.anomalies.append(
            {
                "kind": "zero_values",
                "column": name,
                "rows": zeros,
                "note": "kept; parametric families fit the positive values and the model "
                "keeps the zero fraction",
            }
        )
    if negatives:
        ch.anomalies.append(
            {
                "kind": "negative_values",
                "column": name,
                "rows": negatives,
                "note": "kept; no parametric family is fitted (empirical only)",
            }
        )
    if finite.min() == finite.max():
        ch.skipped.append(
            {"analysis": f"sizes.{name}.fit", "reason": f"constant column (all {finite[0]:g})"}
        )
        return out
    if negatives:
        ch.skipped.append({"analysis": f"sizes.{name}.fit", "reason": "negative values"})
        return out
    cands = fit_candidates(finite, integer=integer, rng=streams.get(f"char.{name}"))
    if not cands:
        ch.skipped.append(
            {"analysis": f"sizes.{name}.fit", "reason": "fewer than 10 positive values"}
        )
    else:
        best = cands[0]
        out["best_family"] = best["family"]
        out["best_params"] = best["params"]
        out["best_ks"] = best["ks"]
        out["criterion"] = "lowest AIC (MLE on a 5,000-value sample); KS on up to 200,000"
        ch.tables[f"fits.{name}"] = pl.DataFrame(
            [
                {
                    "family": c["family"],
                    "aic": c["aic"] if math.isfinite(c["aic"]) else None,
                    "ks": c["ks"] if math.isfinite(c["ks"]) else None,
                    "error": c["error"] or "",
                }
                for c in cands
            ]
        )
    k = max(10, math.ceil(0.02 * finite.size))
    top = finite[-k:]
    at_max = int(np.sum(finite >= 0.99 * finite.max()))
    if finite.size > 2 * k and np.median(top) >= 0.99 * finite.max():
        ch.anomalies.append(
            {
                "kind": "values_at_max",
                "column": name,
                "rows": at_max,
                "max": float(finite.max()),
                "note": "the top 2% sit within 1% of the maximum: the column looks capped (e.g. a "
                "context limit); the tail index is not reported",
            }
        )
        out["tail_index_hill"] = None
        ch.skipped.append(
            {"analysis": f"sizes.{name}.tail_index", "reason": "values capped at the maximum"}
        )
        out["capped_at"] = float(finite.max())
    else:
        out["tail_index_hill"] = hill_tail_index(finite)
    if out["tail_index_hill"] is not None and not math.isfinite(out["tail_index_hill"]):
        ch.skipped.append(
            {"analysis": f"sizes.{name}.tail_index", "reason": "too few distinct positive values"}
        )
    grid = np.linspace(0, 1, 201)
    ch.tables[f"quantiles.{name}"] = pl.DataFrame(
        {"p": grid, "value": sorted_quantiles(finite, grid)}
    )
    return out


def _sizes_plain(df: pl.DataFrame, ch: Characterization, streams: Streams) -> None:
    sizes = {}
    for name, dtype in df.schema.items():
        if dtype.is_numeric() and df[name].null_count() < df.height:
            sizes[name] = _size(df[name].cast(pl.Float64), name, dtype.is_integer(), ch, streams)
    if sizes:
        ch.metrics["sizes"] = sizes


def _lifetimes(df: pl.DataFrame, ch: Characterization) -> None:
    d = df.select(pl.col("created_s").cast(pl.Float64), pl.col("deleted_s").cast(pl.Float64))
    d = d.filter(pl.col("created_s").is_not_null())
    if d.height == 0:
        ch.skipped.append({"analysis": "lifetimes", "reason": "no created_s values"})
        return
    end = float(
        d.select(pl.max_horizontal(pl.col("deleted_s").max(), pl.col("created_s").max())).item()
    )
    bad = int(d.filter(pl.col("deleted_s") < pl.col("created_s")).height)
    if bad:
        ch.anomalies.append(
            {
                "kind": "deleted_before_created",
                "rows": bad,
                "note": "excluded from the lifetime analysis",
            }
        )
    d = d.filter(pl.col("deleted_s").is_null() | (pl.col("deleted_s") >= pl.col("created_s")))
    censored = d["deleted_s"].is_null() | (d["deleted_s"] >= end)
    life = (d["deleted_s"].fill_null(end) - d["created_s"]).to_numpy()
    observed = ~censored.to_numpy()
    zero = int(np.sum(life == 0))
    if zero:
        ch.anomalies.append({"kind": "zero_lifetimes", "rows": zero, "note": "kept"})
    times, surv = kaplan_meier(life, observed)
    out: dict[str, Any] = {
        "vms": int(life.size),
        "censored_fraction": float(1 - observed.mean()),
        "censoring": "alive at the trace end (deleted_s null or at the last timestamp)",
        "median_s": km_quantile(times, surv, 0.5),
        "p90_s": km_quantile(times, surv, 0.9),
        "survival_1h": survival_at(times, surv, HOUR),
        "survival_1d": survival_at(times, surv, DAY),
        "method": "Kaplan-Meier",
    }
    if not math.isfinite(out["median_s"]):
        ch.skipped.append(
            {
                "analysis": "lifetimes.median_s",
                "reason": "more than half the VMs outlive the trace (censored)",
            }
        )
    ch.metrics["lifetimes"] = out
    if times.size:
        keep = np.unique(np.linspace(0, times.size - 1, min(times.size, 2000)).astype(int))
        ch.tables["survival"] = pl.DataFrame({"t_s": times[keep], "survival": surv[keep]})


def _correlations(
    ev: pl.DataFrame, fields: list[str], ch: Characterization, streams: Streams
) -> None:
    if len(fields) < 2:
        ch.skipped.append({"analysis": "correlations", "reason": "fewer than 2 numeric fields"})
        return
    sub = ev.select(fields).drop_nulls()
    if sub.height < 3:
        ch.skipped.append({"analysis": "correlations", "reason": "fewer than 3 complete rows"})
        return
    if sub.height > 200_000:
        rng = streams.get("char.corr")
        sub = sub[np.sort(rng.choice(sub.height, 200_000, replace=False))]
    m = spearman_matrix([sub[f].to_numpy() for f in fields])
    pairs = []
    for i in range(len(fields)):
        for j in range(i + 1, len(fields)):
            v = float(m[i, j])
            pairs.append(
                {"a": fields[i], "b": fields[j], "spearman": v if math.isfinite(v) else None}
            )
            if not math.isfinite(v):
                ch.skipped.append(
                    {
                        "analysis": f"correlations.{fields[i]}~{fields[j]}",
                        "reason": "a constant column has no rank correlation",
                    }
                )
    ch.metrics["correlations"] = {"method": "Spearman rank correlation", "pairs": pairs}


def _popularity(ev: pl.DataFrame, column: str, ch: Characterization) -> None:
    if column not in ev.columns or ev[column].null_count() == ev.height:
        ch.skipped.append({"analysis": f"popularity.{column}", "reason": "column absent or empty"})
        return
    w = pl.col("_count").sum() if "_count" in ev.columns else pl.len()
    per = ev.filter(pl.col(column).is_not_null()).group_by(column).agg(w.alias("n"))
    n = np.sort(per["n"].to_numpy())[::-1].astype(np.float64)
    out = {
        "entities": int(n.size),
        "top1pct_share": top_share(n, 0.01),
        "top10pct_share": top_share(n, 0.10),
        "zipf_exponent": zipf_exponent(n),
        "gini": gini(n),
    }
    if n.size < 3:
        ch.skipped.append(
            {"analysis": f"popularity.{column}.zipf", "reason": "fewer than 3 entities"}
        )
    ch.metrics.setdefault("popularity", {})[column] = out
    k = min(n.size, 2000)
    ch.tables[f"popularity.{column}"] = pl.DataFrame(
        {"rank": np.arange(1, k + 1), "share": n[:k] / n.sum()}
    )


def _shares(df: pl.DataFrame, column: str, ch: Characterization) -> None:
    if df[column].null_count() == df.height:
        ch.skipped.append({"analysis": f"{column}_shares", "reason": "column empty"})
        return
    w = pl.col("count").sum() if "count" in df.columns and column == "trigger" else pl.len()
    per = df.group_by(column).agg(w.alias("n")).sort("n", descending=True)
    total = per["n"].sum()
    ch.metrics[f"{column}_shares"] = {
        str(k): v / total for k, v in zip(per[column], per["n"], strict=True)
    }


# --- usage and client profiles ---------------------------------------------------------


def _utilization(df: pl.DataFrame, ch: Characterization, streams: Streams) -> None:
    u = df.filter(pl.col("cpu_avg").is_not_null() & pl.col("ts_s").is_not_null())
    if u.height == 0:
        ch.skipped.append({"analysis": "utilization", "reason": "no cpu_avg samples with a time"})
        return
    per = u.group_by("vm_id").agg(
        pl.col("cpu_avg").mean().alias("avg"),
        pl.col("cpu_avg").quantile(0.95).alias("p95"),
        pl.len().alias("samples"),
    )
    out: dict[str, Any] = {
        "vms": per.height,
        "samples": u.height,
        "avg_cpu_median": as_float(per["avg"].median(), what="cpu_per_vm.avg median"),
        "p95_cpu_median": as_float(per["p95"].median(), what="cpu_per_vm.p95 median"),
    }
    for th in (20, 50, 80):
        out[f"vms_p95_under_{th}"] = as_float((per["p95"] < th).mean(), what="p95 share")
    ch.tables["cpu_per_vm"] = per.sort("vm_id")
    # sampling regularity
    steps = (
        u.sort("vm_id", "ts_s")
        .group_by("vm_id", maintain_order=True)
        .agg(pl.col("ts_s").diff().drop_nulls().alias("d"))
        .explode("d")
        .drop_nulls()
    )
    if steps.height:
        mode = float(steps["d"].mode().sort()[0])
        irregular = ~((steps["d"] - mode).abs() <= 1e-6 * max(mode, 1))
        off = as_float(irregular.mean(), what="irregular interval share")
        out["sampling_interval_s"] = mode
        out["irregular_intervals"] = off
        if off > 0.01:
            ch.anomalies.append(
                {
                    "kind": "irregular_sampling",
                    "fraction": off,
                    "interval_s": mode,
                    "note": "samples not on the usual interval (gaps or duplicates); kept",
                }
            )
    t0 = as_float(u["ts_s"].min(), what="usage.ts_s min")
    span = as_float(u["ts_s"].max(), what="usage.ts_s max") - t0
    if span >= DAY:
        hourly = (
            u.with_columns((((pl.col("ts_s") - t0) % DAY) // HOUR).cast(pl.Int64).alias("h"))
            .group_by("vm_id", "h")
            .agg(pl.col("cpu_avg").mean().alias("cpu"))
        )
        prof = hourly.group_by("h").agg(pl.col("cpu").mean()).sort("h")
        out["hour_of_day_cpu"] = prof["cpu"].to_list()
        wide = hourly.pivot(on="h", index="vm_id", values="cpu").sort("vm_id")
        cols = [str(h) for h in range(24) if str(h) in wide.columns]
        mat = wide.select(cols).fill_null(strategy="mean").to_numpy()
        mat = np.nan_to_num(mat, nan=0.0)
        within = mat.var(axis=1)
        vm_var = (
            u.group_by("vm_id")
            .agg(pl.col("cpu_avg").var().alias("v"))
            .sort("vm_id")["v"]
            .to_numpy()
        )
        strength = np.where(vm_var > 0, within / np.maximum(vm_var, 1e-12), np.nan)
        out["diurnal_strength_median"] = (
            float(np.nanmedian(strength)) if np.isfinite(strength).any() else None
        )
        out["diurnal_strength_note"] = (
            "variance of a VM's hour-of-day means over its total variance"
        )
        norm = (mat - mat.mean(1, keepdims=True)) / np.maximum(mat.std(1, keepdims=True), 1e-9)
        k = min(4, norm.shape[0])
        if k >= 2:
            labels, centers = kmeans(norm, k, rng=streams.get("char.kmeans"))
            sizes = np.bincount(labels, minlength=k)
            out["clusters"] = [
                {"cluster": j, "vms": int(sizes[j]), "peak_hour": int(np.argmax(centers[j]))}
                for j in range(k)
            ]
            ch.tables["cluster_profiles"] = pl.DataFrame(
                {
                    "hour": np.tile(np.arange(len(cols)), k),
                    "cluster": np.repeat(np.arange(k), len(cols)),
                    "z": centers.reshape(-1),
                }
            )
    else:
        ch.skipped.append(
            {"analysis": "utilization.diurnal", "reason": "samples span less than one day"}
        )
    ch.metrics["utilization"] = out


def _client_profiles(df: pl.DataFrame, ch: Characterization) -> None:
    per = df.group_by("client").agg((pl.col("rate_per_s") * pl.col("window_s")).sum().alias("n"))
    n = np.sort(per["n"].to_numpy())[::-1].astype(np.float64)
    ch.metrics.setdefault("popularity", {})["client"] = {
        "entities": int(n.size),
        "top1pct_share": top_share(n, 0.01),
        "top10pct_share": top_share(n, 0.10),
        "zipf_exponent": zipf_exponent(n),
        "gini": gini(n),
    }
    if "cv" in df.columns and df["cv"].null_count() < df.height:
        c = df["cv"].drop_nulls()
        ch.metrics["client_cv"] = {
            "median": as_float(c.median(), what="client_profiles.cv median"),
            "p90": as_float(c.quantile(0.9), what="client_profiles.cv p90"),
        }
    if "pattern" in df.columns:
        _shares(df, "pattern", ch)
    ch.skipped.append(
        {"analysis": "arrivals", "reason": "client profiles hold rates per window, not events"}
    )
