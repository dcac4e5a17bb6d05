"""HTML reports for characterization, models and fidelity comparisons."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import plotly.graph_objects as go
import polars as pl

from fleetlab.report import Report, Section
from fleetlab.workload._characterize import Characterization
from fleetlab.workload._compare import Comparison
from fleetlab.workload._model import WorkloadModel
from fleetlab.workload._stats import as_float

_LAYOUT = MappingProxyType({"height": 320, "margin": {"t": 40, "b": 40, "l": 50, "r": 20}})


def _fig(title: str, x: str, y: str, *, log_x: bool = False, log_y: bool = False) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, **_LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str)) or v is None}


def characterization_report(
    ch: Characterization, *, title: str = "Workload characterization", subtitle: str = ""
) -> Report:
    """A self-contained HTML report of a :class:`Characterization` (plots and tables)."""
    rep = Report(title, subtitle)
    m = ch.to_dict()
    sec = rep.section(f"Overview: {ch.table} table")
    sec.metrics(
        {
            "rows": m["overview"]["rows"],
            **{
                k: v
                for k, v in _flat(m.get("arrivals", {})).items()
                if k in ("duration_s", "mean_rate_per_s", "iat_cv")
            },
        }
    )
    notes = rep.section("Anomalies and skipped analyses")
    if ch.anomalies:
        notes.heading("Anomalies found (reported, not dropped)")
        notes.table([{k: str(v) for k, v in a.items()} for a in m["anomalies"]])
    else:
        notes.text(
            "No known anomaly found (nulls, negative or unsorted times, zero values, "
            "timestamp grids, capped values, irregular sampling, censoring problems)."
        )
    if ch.skipped:
        notes.heading("Analyses skipped, and why")
        notes.table(ch.skipped)
    if "arrivals" in m:
        _arrivals_section(rep.section("Arrivals"), ch, m["arrivals"])
    if "periodicity" in m:
        p = m["periodicity"]
        sec = rep.section("Periodicity")
        sec.text(
            f"Periodogram of counts in {p['bin_s']:g} s bins; strength = share of the variance."
        )
        if p.get("dominant"):
            sec.table(p["dominant"])
        sec.metrics(
            {f"ACF at {k} period": v for k, v in p.get("acf_at_period", {}).items()}
            | {k: p[k] for k in ("peak_to_trough", "weekday_weekend_ratio") if p.get(k) is not None}
        )
        if p.get("hour_of_day_profile"):
            fig = _fig("Mean events per hour of day", "hour", "events")
            fig.add_bar(y=p["hour_of_day_profile"])
            sec.figure(fig)
    if "sizes" in m:
        sec = rep.section("Sizes")
        sec.table(
            [
                {"field": f, **{k: v for k, v in _flat(s).items() if k != "criterion"}}
                for f, s in m["sizes"].items()
            ]
        )
        sec.text(
            "Best family: lowest AIC of lognormal, gamma, Weibull, Burr XII and exponential "
            "(MLE on a 5,000-value seeded sample), with its KS distance on up to 200,000 values."
        )
        for f in m["sizes"]:
            if f"fits.{f}" in ch.tables:
                sec.heading(f"{f}: candidate families")
                sec.table(ch.tables[f"fits.{f}"])
            if f"quantiles.{f}" in ch.tables:
                q = ch.tables[f"quantiles.{f}"]
                fig = _fig(
                    f"CDF of {f}",
                    f,
                    "P(X <= x)",
                    log_x=as_float(q["value"].min(), what=f"quantiles.{f} min") > 0,
                )
                fig.add_scatter(x=q["value"], y=q["p"], mode="lines", name=f)
                sec.figure(fig)
    if "lifetimes" in m:
        sec = rep.section("Lifetimes (Kaplan-Meier, censored at the trace end)")
        sec.metrics(_flat(m["lifetimes"]))
        if "survival" in ch.tables:
            s = ch.tables["survival"]
            fig = _fig("Survival S(t)", "lifetime (s)", "S(t)", log_x=True)
            fig.add_scatter(x=s["t_s"], y=s["survival"], mode="lines", line_shape="hv")
            sec.figure(fig)
    if "popularity" in m:
        sec = rep.section("Popularity")
        sec.table([{"column": c, **v} for c, v in m["popularity"].items()])
        for c in m["popularity"]:
            if f"popularity.{c}" in ch.tables:
                t = ch.tables[f"popularity.{c}"]
                fig = _fig(f"Rank vs share of load: {c}", "rank", "share", log_x=True, log_y=True)
                fig.add_scatter(x=t["rank"], y=t["share"], mode="lines")
                sec.figure(fig)
    for key in ("trigger_shares", "priority_shares", "pattern_shares"):
        if key in m:
            rep.section(key.replace("_", " ").capitalize()).table(
                [{"value": k, "share": v} for k, v in m[key].items()]
            )
    if "correlations" in m:
        sec = rep.section("Correlations between fields")
        sec.table(m["correlations"]["pairs"])
        sec.text(m["correlations"]["method"])
    if "utilization" in m:
        _utilization_section(rep.section("Utilization"), ch, m["utilization"])
    return rep


def _arrivals_section(sec: Section, ch: Characterization, a: dict[str, Any]) -> None:
    sec.metrics({k: v for k, v in _flat(a).items() if v is not None})
    if "rate" in ch.tables:
        rate = ch.tables["rate"]
        for b in rate["bin_s"].unique().sort().to_list()[-2:]:
            r = rate.filter(pl.col("bin_s") == b)
            fig = _fig(f"Arrival rate, {b:g} s bins", "time (s)", "events/s")
            fig.add_scatter(x=r["t_s"], y=r["rate_per_s"], mode="lines", line_shape="hv")
            sec.figure(fig)
    if "idc" in ch.tables:
        i = ch.tables["idc"]
        fig = _fig(
            "Index of dispersion for counts vs window",
            "window (s)",
            "IDC = var/mean",
            log_x=True,
            log_y=True,
        )
        fig.add_scatter(x=i["window_s"], y=i["idc"], mode="lines+markers", name="trace")
        fig.add_scatter(
            x=i["window_s"], y=[1.0] * i.height, mode="lines", name="Poisson", line={"dash": "dot"}
        )
        sec.figure(fig)
    if "iat_quantiles" in ch.tables:
        q = ch.tables["iat_quantiles"].filter(pl.col("iat_s") > 0)
        fig = _fig("Inter-arrival time CDF", "inter-arrival (s)", "P(X <= x)", log_x=True)
        fig.add_scatter(x=q["iat_s"], y=q["p"], mode="lines")
        sec.figure(fig)
    if "bursts" in ch.tables:
        sec.heading(
            "Largest bursts (windows at least 2x the local median rate and 3 sigma above it)"
        )
        sec.table(ch.tables["bursts"].head(10))


def _utilization_section(sec: Section, ch: Characterization, u: dict[str, Any]) -> None:
    sec.metrics({k: v for k, v in _flat(u).items() if v is not None and not k.endswith("note")})
    if "cpu_per_vm" in ch.tables:
        per = ch.tables["cpu_per_vm"]
        fig = _fig("Per-VM CPU", "CPU %", "VMs")
        fig.add_histogram(x=per["avg"], name="average", opacity=0.6)
        fig.add_histogram(x=per["p95"], name="P95", opacity=0.6)
        fig.update_layout(barmode="overlay")
        sec.figure(fig)
    if u.get("hour_of_day_cpu"):
        fig = _fig("Mean CPU by hour of day (from the trace start)", "hour", "CPU %")
        fig.add_scatter(y=u["hour_of_day_cpu"], mode="lines+markers")
        sec.figure(fig)
    if "cluster_profiles" in ch.tables:
        c = ch.tables["cluster_profiles"]
        fig = _fig("Clusters of VMs by normalised daily profile (k-means)", "hour", "z-score")
        for k in c["cluster"].unique().sort().to_list():
            r = c.filter(pl.col("cluster") == k)
            fig.add_scatter(x=r["hour"], y=r["z"], mode="lines", name=f"cluster {k}")
        sec.figure(fig)


def model_section(
    rep: Report, model: WorkloadModel, diagnostics: dict[str, Any] | None = None
) -> Report:
    """Add a section describing a fitted model (arrival process, marginals, copula, entities)."""
    sec = rep.section("Fitted workload model")
    a = model.arrival
    sec.metrics(
        {
            "rate bin (s)": a.rate.bin_s,
            "period (s)": a.rate.period_s,
            "mean rate (1/s)": a.rate.mean_rate_per_s,
            "renewal": a.renewal.family,
            "renewal CV": a.renewal.cv,
            "burstiness used": a.process
            + (f" ({len(a.mmpp.rates)} states)" if a.process == "mmpp" and a.mmpp else ""),
            "trend (days)": len(a.rate.trend) if a.rate.trend else "none",
            "batches": "per instant, " + a.batch.kind if a.batch else "none",
            "grid (s)": a.quantum_s or "none",
        }
    )
    fig = _fig("Fitted rate curve (one period)", "time (s)", "events/s")
    fig.add_scatter(
        x=[i * a.rate.bin_s for i in range(len(a.rate.levels))],
        y=a.rate.levels,
        mode="lines",
        line_shape="hv",
    )
    sec.figure(fig)
    sec.table(
        [
            {
                "field": f,
                "kind": m.kind,
                "family": m.family or "",
                "KS": m.ks,
                "zero fraction": m.zero_fraction,
                "integer": m.integer,
            }
            for f, m in model.fields.items()
        ]
    )
    if model.copula:
        sec.text(
            "Gaussian copula correlation (normal scores): "
            + "; ".join(
                f"{model.copula.fields[i]}~{model.copula.fields[j]} = "
                f"{model.copula.correlation[i][j]:.3f}"
                for i in range(len(model.copula.fields))
                for j in range(i + 1, len(model.copula.fields))
            )
        )
    if model.entity:
        e = model.entity
        sec.text(
            f"Entities ({e.column}): {e.count} with Zipf exponent "
            f"{e.zipf_exponent if e.zipf_exponent is not None else 'n/a'}; the top "
            f"{len(e.shares)} shares are stored, {len(e.fields) - ('rest' in e.fields)} "
            "entities have their own size marginals."
        )
    return rep


def comparison_report(
    cmp: Comparison, *, title: str = "Workload fidelity", subtitle: str = ""
) -> Report:
    """A self-contained HTML report of a :class:`Comparison`: verdicts and side-by-side plots."""
    rep = Report(title, subtitle)
    add_comparison(rep, cmp)
    return rep


def add_comparison(rep: Report, cmp: Comparison) -> Report:
    """Append the verdict table and the side-by-side plots of ``cmp`` to ``rep``."""
    sec = rep.section("Fidelity: synthetic vs real")
    m = cmp.metrics
    sec.metrics(
        {
            "overall": "PASS" if m["passed"] else "FAIL",
            "passed": m["pass"],
            "failed": m["fail"],
            "real rows": m["real_rows"],
            "synth rows": m["synth_rows"],
            "scale": m["scale"],
        }
    )
    sec.table(cmp.table, max_rows=200)
    c = cmp.curves
    if "rate_curve" in c:
        r = c["rate_curve"]
        fig = _fig("Rate curve", "time (s)", "events/s (synth / scale)")
        fig.add_scatter(x=r["t_s"], y=r["real_per_s"], name="real", mode="lines", line_shape="hv")
        fig.add_scatter(x=r["t_s"], y=r["synth_per_s"], name="synth", mode="lines", line_shape="hv")
        sec.figure(fig)
    if "idc" in c:
        r = c["idc"]
        fig = _fig("Index of dispersion vs window", "window (s)", "IDC", log_x=True, log_y=True)
        fig.add_scatter(x=r["window_s"], y=r["real"], name="real")
        fig.add_scatter(x=r["window_s"], y=r["synth"], name="synth")
        sec.figure(fig)
    if "acf" in c:
        r = c["acf"]
        fig = _fig("ACF of counts", "lag (windows)", "autocorrelation")
        fig.add_scatter(x=r["lag"], y=r["real"], name="real")
        fig.add_scatter(x=r["lag"], y=r["synth"], name="synth")
        sec.figure(fig)
    for key, q in c.items():
        if key.startswith("quantiles."):
            f = key.split(".", 1)[1]
            fig = _fig(f"Q-Q plot: {f}", "real quantile", "synthetic quantile")
            fig.add_scatter(x=q["real"], y=q["synth"], mode="markers", name=f)
            lo = as_float(q["real"].min(), what=f"{key}.real min")
            hi = as_float(q["real"].max(), what=f"{key}.real max")
            fig.add_scatter(
                x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"dash": "dot"}
            )
            sec.figure(fig)
    if "popularity" in c:
        r = c["popularity"]
        fig = _fig("Popularity", "rank", "share", log_x=True, log_y=True)
        fig.add_scatter(x=r["rank"], y=r["real_share"], name="real")
        fig.add_scatter(x=r["rank"], y=r["synth_share"], name="synth")
        sec.figure(fig)
    return rep
