"""HTML reports of experiments and explorations (built outside the runs themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from fleetlab.chaos._experiment import ExperimentResult
from fleetlab.chaos._explore import ExploreResult
from fleetlab.report import Report

if TYPE_CHECKING:
    import plotly.graph_objects as go


def experiment_report(result: ExperimentResult) -> Report:
    """A report of one experiment: verdict, phases, latency/error series with faults shaded.

    Returns
    -------
    Report
        Render with ``.to_html()`` or ``.write(path)``.
    """
    j = result.journal
    report = Report(f"chaos experiment: {j['title']}", f"status: {j['status']}")
    sec = report.section("Verdict")
    sec.metrics({k: v for k, v in result.metrics.items() if not isinstance(v, bool)})
    if j.get("abort"):
        sec.text(f"Aborted: {j['abort'].get('reason')} at {j['abort'].get('at_s', 0):.2f} s.")
    rows = []
    for name, p in j["phases"].items():
        rows.append(
            {
                "phase": name,
                "ok": p.get("ok"),
                "requests": p.get("requests"),
                "error_rate": p.get("error_rate"),
                "p50_ms": p.get("p50_ms"),
                "p99_ms": p.get("p99_ms"),
                "breaches": "; ".join(b["slo"] for b in p.get("breaches", [])),
            }
        )
    if rows:
        sec.table(rows)
    report.section("Latency and errors over time").figure(
        timeline_figure(result.windows, j["faults"])
    )
    faults = report.section("Faults and rollbacks")
    if j["faults"]:
        faults.table(
            [
                {k: f.get(k) for k in ("name", "proxy", "type", "start_s", "end_s")}
                for f in j["faults"]
            ]
        )
    faults.table(j["rollbacks"] or [{"what": "nothing to roll back", "ok": True}])
    return report


def timeline_figure(windows: pl.DataFrame, faults: list[dict[str, Any]]) -> go.Figure:
    """p50/p99 latency and error rate per window, with fault windows shaded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("latency (ms)", "error rate"),
    )
    if windows.height:
        fig.add_trace(go.Scatter(x=windows["t_s"], y=windows["p50_ms"], name="p50 ms"), 1, 1)
        fig.add_trace(go.Scatter(x=windows["t_s"], y=windows["p99_ms"], name="p99 ms"), 1, 1)
        fig.add_trace(
            go.Scatter(x=windows["t_s"], y=windows["error_rate"], name="error rate"), 2, 1
        )
    for f in faults:
        if f.get("start_s") is not None:
            fig.add_vrect(
                x0=f["start_s"],
                x1=f.get("end_s") or f["start_s"],
                fillcolor="red",
                opacity=0.12,
                line_width=0,
                annotation_text=f.get("name", "fault"),
                annotation_position="top left",
            )
    fig.update_layout(height=480, margin={"t": 40, "b": 40}, xaxis2_title="time (s)")
    return fig


def explore_report(result: ExploreResult, *, title: str = "graph-guided fault search") -> Report:
    """A report of an exploration: findings, minimal failing sets, the resilience matrix."""
    report = Report(
        f"chaos explore: {title}",
        f"{result.metrics['runs']} runs, {result.metrics['runs_saved']} saved by pruning",
    )
    sec = report.section("Resilience findings")
    m = result.metrics
    sec.metrics(
        {
            "runs": m["runs"],
            "candidate fault sets": m["candidates"],
            "runs saved by pruning": m["runs_saved"],
            "minimal failing sets": m["minimal_failing_sets"],
            "baseline p99 (ms)": m["baseline_p99_ms"],
            "elapsed (s)": m["elapsed_s"],
        }
    )
    sec.table(result.findings or [{"service": "-", "finding": "none", "evidence": ""}])
    sec.heading("Minimal failing fault sets")
    sec.table(
        [{"faults": " + ".join(s), "size": len(s)} for s in result.minimal_failing]
        or [{"faults": "none", "size": 0}]
    )
    order = report.section("Exploration order (largest blast radius first)")
    order.table(result.order)
    mat = report.section("Resilience matrix")
    mat.text(
        "One row per run: the faults injected, what the entry saw under open-loop load, "
        "and which SLO term held. Pruned sets (implied by a smaller failing set, or on "
        "calls that never happen) were not run."
    )
    mat.figure(matrix_figure(result.matrix))
    mat.table(result.matrix, max_rows=200)
    return report


def matrix_figure(matrix: pl.DataFrame) -> go.Figure:
    """A pass/fail heat map: fault sets (rows) by SLO terms (columns)."""
    import plotly.graph_objects as go

    cols = [c for c in matrix.columns if c.startswith("slo_")]
    z = [[1 if v == "fail" else 0 for v in row] for row in matrix.select(cols).iter_rows()]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[c.removeprefix("slo_") for c in cols],
            y=matrix["faults"].to_list(),
            colorscale=[[0, "#2e7d32"], [1, "#c62828"]],
            showscale=False,
            xgap=2,
            ygap=2,
        )
    )
    fig.update_layout(
        height=max(260, 22 * matrix.height + 80),
        margin={"t": 30, "l": 220},
        title="SLO held (green) / broken (red)",
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def availability_report(
    windows: pl.DataFrame,
    *,
    nodes: list[str],
    horizon_s: float,
    target: float = 0.999,
    title: str = "availability under faults",
) -> tuple[Report, dict[str, Any]]:
    """Availability and SLO attainment of a fleet from simulated fault windows.

    Parameters
    ----------
    windows
        A ``fleetlab.sim.draw_faults`` (or ``failure_timeline``) table.
    nodes
        Every node of the fleet.
    horizon_s
        Length of the simulated period, seconds.
    target
        Per-node availability SLO (0..1).

    Returns
    -------
    (Report, dict)
        The report and :func:`fleetlab.sim.slo_attainment` numbers plus downtime by cause.
    """
    import plotly.graph_objects as go

    from fleetlab.sim import availability, slo_attainment

    avail = availability(windows, nodes=nodes, horizon_s=horizon_s)
    stats: dict[str, Any] = slo_attainment(avail, target=target)
    start, end = ("down_s", "up_s") if "down_s" in windows.columns else ("start_s", "end_s")
    by_cause = (
        windows.with_columns(
            cause=pl.col("cause").str.split(":").list.first(),
            dur_s=pl.col(end) - pl.col(start),
        )
        .group_by([c for c in ("kind", "cause") if c in windows.columns])
        .agg(windows=pl.len(), node_seconds=pl.col("dur_s").sum())
        .sort("node_seconds", descending=True)
    )
    report = Report(f"faults: {title}", f"{len(nodes)} nodes over {horizon_s / 86400:.3g} days")
    sec = report.section("Availability and SLO attainment")
    sec.metrics(
        {
            "fleet availability": stats["fleet_availability"],
            f"nodes meeting {target:g}": stats["attainment"],
            "worst node": stats["min_availability"],
            "downtime (node-hours)": stats["total_downtime_s"] / 3600,
        }
    )
    fig = go.Figure(go.Histogram(x=avail["availability"], nbinsx=40))
    fig.add_vline(x=target, line_dash="dash", annotation_text=f"target {target:g}")
    fig.update_layout(
        title="Per-node availability",
        xaxis_title="availability",
        yaxis_title="nodes",
        height=320,
        margin={"t": 40, "b": 40},
    )
    sec.figure(fig)
    sec.heading("Fault windows by kind and cause")
    sec.table(by_cause)
    stats["by_cause"] = by_cause.to_dicts()
    return report, stats
