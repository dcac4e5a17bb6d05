"""Fidelity of a synthetic trace to a real one: per-statistic distances and verdicts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleetlab.errors import ConfigError, DataNotFoundError
from fleetlab.workload._arrival_fit import choose_period, fit_rate_curve, operational_time
from fleetlab.workload._options import FitOptions
from fleetlab.workload._stats import (
    BIN_CANDIDATES_S,
    IDC_WINDOWS_S,
    acf,
    counts,
    cv,
    index_of_dispersion,
    ks_critical,
    ks_two_sample,
    spearman_matrix,
    time_quantum,
    top_share,
    wasserstein,
    zipf_exponent,
)
from fleetlab.workload._views import PAIR, event_frame, resolve_table, view_of

Verdict = Literal["pass", "fail", "info", "skipped"]


class Thresholds(BaseModel):
    """The thresholds of :func:`compare` (the issue's targets are the defaults).

    ``ks``: KS distance per size field; ``cv_rel``: relative error of the inter-arrival
    CV and of the renewal CV; ``rate_curve``: mean absolute error of the rate curve
    relative to the mean rate (bins of at least ``rate_min_events`` real events);
    ``count_rel``: relative error of the event count (after scale); ``acf``: mean
    absolute difference of the ACF of counts over lags 1..20; ``idc_log``: largest
    |log(IDC_synth / IDC_real)| over the window sizes that fit at least 30 times (the
    sampling error of a variance from n windows is about sqrt(2/n): 26 % at 30); ``top_share``: absolute
    difference of the top-1% entities' share; ``zipf_rel``: relative error of the Zipf
    exponent (not judged when the real one is below 0.1: flat popularity); ``spearman``: absolute difference of each pair's rank correlation.
    Every KS row uses ``ks`` or the two-sample KS critical value at 5 % for the two sample
    sizes, whichever is larger (the same for traces above ~1,500 values).
    Spans: ``template_tv``: total variation distance between the call-tree template
    frequencies (the real trace's top templates plus "other"); ``error_rate``:
    absolute difference of the share of spans with status error. Usage: ``share_abs``:
    absolute difference of the share of VMs under a CPU threshold (or the 95 %
    two-proportion bound, if larger); ``class_tv``: total variation of the VM class
    shares; the per-VM KS rows use ``ks`` or the KS critical value, the ACF rows
    ``acf`` and the daily profile ``rate_curve``. The trace-level KS
    rows (spans per trace, depth, per-service durations) use ``ks`` or the two-sample
    KS critical value at 5 % for the two sample sizes, whichever is larger.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ks: float = Field(0.05, gt=0)
    cv_rel: float = Field(0.15, gt=0)
    rate_curve: float = Field(0.10, gt=0)
    rate_min_events: int = Field(1000, ge=1)
    count_rel: float = Field(0.10, gt=0)
    acf: float = Field(0.15, gt=0)
    idc_log: float = Field(0.7, gt=0)
    top_share: float = Field(0.05, gt=0)
    zipf_rel: float = Field(0.15, gt=0)
    spearman: float = Field(0.10, gt=0)
    template_tv: float = Field(0.10, gt=0)
    error_rate: float = Field(0.01, gt=0)
    share_abs: float = Field(0.10, gt=0)
    class_tv: float = Field(0.15, gt=0)
    min_data: Literal["noise", "off"] = Field(
        "noise",
        description="skip arrival rows whose real trace is too small to judge them"
        " (noise: the rule of min_data_count), or judge every row (off)",
    )


def min_data_count(threshold: float) -> int:
    """Events, gaps, windows or events per bin an arrival statistic needs to be judged.

    Two independent realizations of one process differ by chance: for a quantity
    estimated from ``m`` roughly independent Poisson-like counts (or gaps, or ACF
    windows), the relative difference is about normal with sd ``2 / sqrt(m)``, so its
    mean absolute value is ``2 / sqrt(pi m)`` (a Poisson count of ``m``: relative sd
    ``sqrt(1 / m)`` each; an ACF from ``m`` windows: sd ``1 / sqrt(m)`` per lag; the CV
    of ``m`` exponential gaps: sd about ``1 / sqrt(m)``). A row is judged when that
    chance difference is at most half its threshold: ``m >= 16 / (pi threshold^2)``,
    510 at 0.10 (real events per rate-curve bin), 227 at 0.15 (ACF windows). It
    depends only on the real trace's size (and the threshold).
    """
    return math.ceil(16.0 / (math.pi * threshold**2))


def _data_verdict(
    verdict: Verdict, have: float, need: int, what: str, th: Thresholds
) -> tuple[Verdict, str]:
    """``skipped`` with the reason when ``have < need`` (and the rule is on), else as is."""
    if th.min_data == "off" or have >= need:
        return verdict, ""
    return "skipped", (
        f"too little real data to judge: {have:.0f} {what} < {need} (two realizations of one"
        " process differ by chance by more than half the threshold)"
    )


def load_thresholds(path: str | os.PathLike[str]) -> Thresholds:
    """Read :class:`Thresholds` from a YAML/JSON file (missing keys keep their defaults).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    ConfigError
        It is not a mapping of known thresholds to positive numbers.
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"{p}: no such thresholds file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return Thresholds.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not YAML: {str(exc).splitlines()[0]}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"{p}: field {where!r}: {first['msg']} (found {first.get('input')!r})"
        ) from exc


@dataclass
class Comparison:
    """Result of :func:`compare`.

    ``table`` has one row per statistic (statistic, field, real, synth, distance,
    threshold, verdict, note); ``curves`` holds the side-by-side series for plots;
    ``metrics`` the counts of verdicts and the overall verdict.
    """

    table: pl.DataFrame
    curves: dict[str, pl.DataFrame] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no statistic failed."""
        return bool(self.metrics.get("passed", False))


def _row(
    statistic: str,
    fld: str | None,
    real: float | None,
    synth: float | None,
    distance: float | None,
    threshold: float | None,
    verdict: Verdict,
    note: str = "",
) -> dict[str, Any]:
    def clean(x: float | None) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "statistic": statistic,
        "field": fld or "",
        "real": clean(real),
        "synth": clean(synth),
        "distance": clean(distance),
        "threshold": threshold,
        "verdict": verdict,
        "note": note,
    }


def _judge(distance: float, threshold: float) -> Verdict:
    if not math.isfinite(distance):
        return "skipped"
    return "pass" if distance <= threshold else "fail"


def _rel(a: float, b: float) -> float:
    return abs(b - a) / abs(a) if a and math.isfinite(a) and math.isfinite(b) else math.nan


def compare(
    real: pl.DataFrame | pl.LazyFrame,
    synth: pl.DataFrame | pl.LazyFrame,
    *,
    table: str | None = None,
    scale: float = 1.0,
    thresholds: Thresholds | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare a synthetic trace with the real one it imitates.

    Parameters
    ----------
    real, synth
        Canonical tables of the same kind (requests, invocations, vms, ...).
    table
        The canonical table name; detected from ``real``'s columns when omitted.
    scale
        The scale factor ``synth`` was made with: counts and rates of ``synth`` are
        divided by it; the raw inter-arrival CV, which idle periods make depend on the
        rate, is then reported for information only (see docs/workload.md).
    thresholds
        :class:`Thresholds` (defaults: KS <= 0.05, CV within 15 %, rate curve within 10 %).
    seed
        Seed for the subsamples of very large tables (at most 1M values per field).

    Returns
    -------
    Comparison
        One verdict per statistic with the threshold used; ``passed`` when none failed.

    Raises
    ------
    ConfigError
        The two tables are of different kinds or not event streams.
    """
    th = thresholds or Thresholds()
    r = real.collect() if isinstance(real, pl.LazyFrame) else real
    s = synth.collect() if isinstance(synth, pl.LazyFrame) else synth
    name = resolve_table(r, table)
    sname = resolve_table(s, None if name == "client_profiles" else table)
    if name == "client_profiles" and sname == "requests":  # profiles vs their synthetic requests
        from fleetlab.workload._clients import client_rows

        rows_c: list[dict[str, Any]] = []
        curves_c: dict[str, pl.DataFrame] = {}
        client_rows(r, s, th, rows_c, curves_c, _row, _judge, scale=scale)
        return _result(rows_c, curves_c, name, scale, r, s)
    if sname != name:
        raise ConfigError(
            f"cannot compare a {name} table with a {sname} table (expected two {name} tables)"
        )
    if name == "usage":
        from fleetlab.workload._usage import usage_rows

        rows_u: list[dict[str, Any]] = []
        curves_u: dict[str, pl.DataFrame] = {}
        usage_rows(r, s, th, rows_u, curves_u, _row, _judge, seed=seed)
        return _result(rows_u, curves_u, name, scale, r, s)
    view = view_of(name)
    er, fields_r, _ = event_frame(r, view, expand_seed=seed)
    es, fields_s, _ = event_frame(s, view, expand_seed=seed + 1)
    rows: list[dict[str, Any]] = []
    curves: dict[str, pl.DataFrame] = {}
    rng = np.random.default_rng(seed)

    if name == "spans":  # arrivals are traces: their root spans' start times
        from fleetlab.workload._spans import root_frame

        tr, ts = _times(root_frame(r)), _times(root_frame(s))
    else:
        tr, ts = _times(er), _times(es)
    if tr.size >= 3 and ts.size >= 3:
        _arrival_rows(tr, ts, scale, th, rows, curves)
    else:
        rows.append(
            _row(
                "arrivals",
                None,
                tr.size,
                ts.size,
                None,
                None,
                "skipped",
                "fewer than 3 timed events in one of the traces",
            )
        )

    for f in fields_r:
        if f not in fields_s:
            rows.append(_row("ks", f, None, None, None, th.ks, "skipped", "field absent in synth"))
            continue
        a = _sample(er[f].drop_nulls().to_numpy(), rng)
        b = _sample(es[f].drop_nulls().to_numpy(), rng)
        if a.size == 0 or b.size == 0:
            rows.append(_row("ks", f, a.size, b.size, None, th.ks, "skipped", "no values"))
            continue
        d = ks_two_sample(a, b)
        # below the two samples' own KS critical value a distance is sampling noise
        limit = max(th.ks, ks_critical(a.size, b.size))
        rows.append(_row("ks", f, None, None, d, limit, _judge(d, limit)))
        w = wasserstein(a, b)
        mean = float(np.mean(a))
        rows.append(
            _row(
                "wasserstein",
                f,
                mean,
                float(np.mean(b)),
                w,
                None,
                "info",
                f"relative to the real mean: {w / mean:.3g}" if mean else "",
            )
        )
        rows.append(_row("median", f, float(np.median(a)), float(np.median(b)), None, None, "info"))
        q = np.linspace(0, 1, 101)
        curves[f"quantiles.{f}"] = pl.DataFrame(
            {"p": q, "real": np.quantile(a, q), "synth": np.quantile(b, q)}
        )

    common = [f for f in fields_r if f in fields_s]
    if len(common) >= 2:
        _corr_rows(er, es, common, th, rows, rng)
    if view.entity and view.entity in er.columns and view.entity in es.columns:
        _popularity_rows(er, es, view.entity, th, rows, curves)
    if name == "spans":
        from fleetlab.workload._spans import span_rows

        span_rows(r, s, th, rows, curves)
    if name == "flows" and PAIR in er.columns and PAIR in es.columns:
        _popularity_rows(er, es, PAIR, th, rows, curves)  # the entity a flows model keeps

    return _result(rows, curves, name, scale, r, s)


def _result(
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
    name: str,
    scale: float,
    r: pl.DataFrame,
    s: pl.DataFrame,
) -> Comparison:
    out = pl.DataFrame(
        rows,
        schema={
            "statistic": pl.String,
            "field": pl.String,
            "real": pl.Float64,
            "synth": pl.Float64,
            "distance": pl.Float64,
            "threshold": pl.Float64,
            "verdict": pl.String,
            "note": pl.String,
        },
        orient="row",
    )
    verdicts = out["verdict"].value_counts()
    tally = dict(zip(verdicts["verdict"].to_list(), verdicts["count"].to_list(), strict=True))
    metrics = {
        "table": name,
        "scale": scale,
        "real_rows": r.height,
        "synth_rows": s.height,
        "passed": tally.get("fail", 0) == 0 and tally.get("pass", 0) > 0,
        "pass": tally.get("pass", 0),
        "fail": tally.get("fail", 0),
        "skipped": tally.get("skipped", 0),
        "failed": out.filter(pl.col("verdict") == "fail")
        .select(pl.concat_str([pl.col("statistic"), pl.col("field")], separator=" "))
        .to_series()
        .str.strip_chars()
        .to_list(),
    }
    return Comparison(table=out, curves=curves, metrics=metrics)


def _times(ev: pl.DataFrame) -> np.ndarray:
    t = ev.filter(pl.col("_t").is_not_null() & pl.col("_t").is_finite())["_t"].to_numpy()
    return t - t[0] if t.size else t


def _sample(x: np.ndarray, rng: np.random.Generator, n: int = 1_000_000) -> np.ndarray:
    x = x[np.isfinite(x)]
    return x if x.size <= n else rng.choice(x, n, replace=False)


def _arrival_rows(
    tr: np.ndarray,
    ts: np.ndarray,
    scale: float,
    th: Thresholds,
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
) -> None:
    dr, ds = float(tr[-1]), float(ts[-1])
    horizon = min(dr, ds)
    # counts and rate curve over the common horizon
    n_r = int(np.searchsorted(tr, horizon, side="right"))
    n_s = int(np.searchsorted(ts, horizon, side="right")) / scale
    d = _rel(n_r, n_s)
    rows.append(
        _row(
            "event_count",
            None,
            n_r,
            n_s,
            d,
            th.count_rel,
            _judge(d, th.count_rel),
            f"over the common {horizon:.0f} s, synth divided by scale {scale:g}",
        )
    )
    period = choose_period(dr)
    span = period if period < horizon else horizon
    rate_r = n_r / horizon
    width = next((b for b in BIN_CANDIDATES_S if n_r * b / span >= th.rate_min_events), span)
    width = min(width, span / 6)
    nb = max(1, int(span // width))
    cr = _folded(tr[tr < horizon], width, nb, span) / (horizon / span)
    cs = _folded(ts[ts < horizon], width, nb, span) / (horizon / span) / scale
    mean = float(cr.mean())
    err = float(np.mean(np.abs(cs - cr)) / mean) if mean > 0 else math.nan
    folded = " folded by one day" if span < horizon else ""
    per_bin = float(np.count_nonzero(tr < horizon)) / nb  # real events per bin, all cycles
    verdict, why = _data_verdict(
        _judge(err, th.rate_curve),
        per_bin,
        min_data_count(th.rate_curve),
        "real events per bin",
        th,
    )
    rows.append(
        _row(
            "rate_curve",
            None,
            mean / width,
            float(cs.mean()) / width,
            err,
            th.rate_curve,
            verdict,
            f"{nb} bins of {width:g} s{folded}" + (f"; {why}" if why else ""),
        )
    )
    curves["rate_curve"] = pl.DataFrame(
        {"t_s": np.arange(nb) * width, "real_per_s": cr / width, "synth_per_s": cs / width}
    )
    # inter-arrival CV, raw and with the rate curve divided out
    cr_raw, cs_raw = cv(np.diff(tr)), cv(np.diff(ts))
    d = _rel(cr_raw, cs_raw)
    raw_verdict: Verdict = _judge(d, th.cv_rel) if scale == 1.0 else "info"
    rows.append(
        _row(
            "iat_cv",
            None,
            cr_raw,
            cs_raw,
            d,
            th.cv_rel,
            raw_verdict,
            "" if scale == 1.0 else "raw CV depends on the rate when there are idle periods",
        )
    )
    curve = fit_rate_curve(tr, dr, FitOptions())
    ur = np.diff(operational_time(tr, curve))
    us = np.diff(operational_time(ts, curve, scale))
    c1, c2 = cv(ur), cv(us)
    d = _rel(c1, c2)
    quantum = time_quantum(tr)
    grid = quantum is not None and scale != 1.0
    rows.append(
        _row(
            "renewal_cv",
            None,
            c1,
            c2,
            d,
            th.cv_rel,
            "info" if grid else _judge(d, th.cv_rel),
            "CV of gaps after dividing out the real trace's rate curve"
            + (
                f"; times on a {quantum:g} s grid, so more events per step add zero gaps"
                if grid
                else ""
            ),
        )
    )
    # ACF of counts in fine windows (whole grid steps when the times are on a grid)
    fine = next((b for b in BIN_CANDIDATES_S if b * rate_r >= 5), BIN_CANDIDATES_S[-1])
    shift = 0.0
    if quantum is not None:  # whole grid steps, with the grid points mid-window
        fine = quantum * max(1, math.ceil(fine / quantum))
        shift = quantum / 2
    kr = counts(tr + shift, fine, end=horizon).astype(np.float64)
    ks_ = counts(ts + shift, fine, end=horizon).astype(np.float64)
    lags = min(20, kr.size // 4)
    if lags >= 2:
        ar, as_ = acf(kr, lags), acf(ks_, lags)
        dist = float(np.nanmean(np.abs(ar[1:] - as_[1:])))
        acf_verdict, why = _data_verdict(
            _judge(dist, th.acf) if scale == 1.0 else "info",
            kr.size,
            min_data_count(th.acf),
            f"real windows of {fine:g} s",
            th,
        )
        rows.append(
            _row(
                "acf_counts",
                None,
                float(ar[1]),
                float(as_[1]),
                dist,
                th.acf,
                acf_verdict,
                f"lags 1..{lags} of {fine:g} s counts; real/synth show lag 1"
                + (f"; {why}" if why else "")
                + (
                    ""
                    if scale == 1.0
                    else "; more events per window strengthen the rate curve's share of the ACF"
                ),
            )
        )
        curves["acf"] = pl.DataFrame(
            {"lag": np.arange(lags + 1), "window_s": fine, "real": ar, "synth": as_}
        )
    # index of dispersion vs window
    ir = {x["window_s"]: x["idc"] for x in index_of_dispersion(tr, end=horizon, min_windows=30)}
    is_ = {x["window_s"]: x["idc"] for x in index_of_dispersion(ts, end=horizon, min_windows=30)}
    common = [w for w in ir if w in is_ and ir[w] > 0 and is_[w] > 0]
    if common:
        logs = [abs(math.log(is_[w] / ir[w])) for w in common]
        worst = float(max(logs))
        rows.append(
            _row(
                "idc",
                None,
                None,
                None,
                worst,
                th.idc_log,
                _judge(worst, th.idc_log) if scale == 1.0 else "info",
                "max |log(IDC ratio)| over windows " + ", ".join(f"{w:g}s" for w in common),
            )
        )
        curves["idc"] = pl.DataFrame(
            {"window_s": common, "real": [ir[w] for w in common], "synth": [is_[w] for w in common]}
        )
    else:
        rows.append(
            _row(
                "idc",
                None,
                None,
                None,
                None,
                th.idc_log,
                "skipped",
                "too little real data to judge: no window size of "
                + ", ".join(f"{w:g}s" for w in IDC_WINDOWS_S)
                + " fits 30 times in both traces with events in each",
            )
        )


def _folded(t: np.ndarray, width: float, nb: int, span: float) -> np.ndarray:
    idx = np.floor((t % span) / width).astype(np.int64)
    idx = idx[idx < nb]
    return np.bincount(idx, minlength=nb).astype(np.float64)


def _corr_rows(
    er: pl.DataFrame,
    es: pl.DataFrame,
    fields: list[str],
    th: Thresholds,
    rows: list[dict[str, Any]],
    rng: np.random.Generator,
) -> None:
    def mat(ev: pl.DataFrame) -> np.ndarray:
        sub = ev.select(fields).drop_nulls()
        if sub.height > 200_000:
            sub = sub[np.sort(rng.choice(sub.height, 200_000, replace=False))]
        return spearman_matrix([sub[f].to_numpy() for f in fields])

    mr, ms = mat(er), mat(es)
    for i in range(len(fields)):
        for j in range(i + 1, len(fields)):
            d = abs(float(ms[i, j]) - float(mr[i, j]))
            rows.append(
                _row(
                    "spearman",
                    f"{fields[i]}~{fields[j]}",
                    float(mr[i, j]),
                    float(ms[i, j]),
                    d,
                    th.spearman,
                    _judge(d, th.spearman),
                )
            )


def _popularity_rows(
    er: pl.DataFrame,
    es: pl.DataFrame,
    column: str,
    th: Thresholds,
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
) -> None:
    def ranked(ev: pl.DataFrame) -> np.ndarray:
        w = pl.col("_count").sum() if "_count" in ev.columns else pl.len()
        g = ev.filter(pl.col(column).is_not_null()).group_by(column).agg(w.alias("n"))
        return np.sort(g["n"].to_numpy())[::-1].astype(np.float64)

    a, b = ranked(er), ranked(es)
    if a.size < 2 or b.size < 2:
        rows.append(
            _row(
                "top1pct_share",
                column,
                None,
                None,
                None,
                th.top_share,
                "skipped",
                "fewer than 2 entities",
            )
        )
        return
    ta, tb = top_share(a, 0.01), top_share(b, 0.01)
    rows.append(
        _row(
            "top1pct_share",
            column,
            ta,
            tb,
            abs(ta - tb),
            th.top_share,
            _judge(abs(ta - tb), th.top_share),
        )
    )
    za, zb = zipf_exponent(a), zipf_exponent(b)
    d = _rel(za, zb)
    flat = math.isfinite(za) and abs(za) < 0.1  # equally popular: an exponent of noise
    rows.append(
        _row(
            "zipf_exponent",
            column,
            za,
            zb,
            d,
            th.zipf_rel,
            "info" if flat else _judge(d, th.zipf_rel),
            "real exponent below 0.1 (entities about equally popular): not judged" if flat else "",
        )
    )
    n = min(a.size, b.size, 1000)
    curves["popularity" if column != PAIR else "popularity.pairs"] = pl.DataFrame(
        {"rank": np.arange(1, n + 1), "real_share": a[:n] / a.sum(), "synth_share": b[:n] / b.sum()}
    )
