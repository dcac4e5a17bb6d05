"""HTML report sections for placement runs (figures built with plotly)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl

from fleetlab.report import Report


def _lines(
    timeline: pl.DataFrame,
    column: str,
    title: str,
    ytitle: str,
    hline: float | None = None,
    hname: str = "",
) -> go.Figure:
    fig = go.Figure()
    for (name,), part in timeline.group_by("policy", maintain_order=True):
        fig.add_trace(
            go.Scatter(x=part["t_s"] / 3600.0, y=part[column], mode="lines", name=str(name))
        )
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dash", annotation_text=hname)
    fig.update_layout(
        title=title,
        xaxis_title="time (h)",
        yaxis_title=ytitle,
        height=340,
        margin={"t": 40, "b": 40},
    )
    return fig


def simulation_report(
    summary: pl.DataFrame,
    timeline: pl.DataFrame,
    *,
    bound: dict[str, Any] | None = None,
    title: str = "Placement policy comparison",
    note: str = "",
) -> Report:
    """A report comparing policies: totals, allocation, density, failures over time.

    Parameters
    ----------
    summary, timeline
        As returned by :func:`compare`.
    bound
        Lower bounds from :func:`bounds` (drawn on the used-servers plot).
    title
        Report title.
    note
        A paragraph describing the inputs (data source, cluster).

    Returns
    -------
    fleetlab.report.Report
    """
    report = Report(title)
    sec = report.section("Policies side by side")
    if note:
        sec.text(note)
    sec.table(summary)
    if bound is not None:
        sec.metrics(
            {
                "fluid lower bound (servers)": bound["fluid"]["servers"],
                "LP lower bound (servers)": bound["lp"].get("servers"),
                "VMs active at the LP snapshot": bound["lp"].get("active"),
            }
        )
    if timeline.height == 0:
        return report
    sec = report.section("Over time")
    dims = [c.removeprefix("alloc_") for c in timeline.columns if c.startswith("alloc_")]
    for d in dims:
        sec.figure(_lines(timeline, f"alloc_{d}", f"Allocated {d} (share of capacity)", "share"))
    for d in dims:
        sec.figure(
            _lines(timeline, f"density_{d}", f"Packing density of {d} on busy servers", "share")
        )
    sec.figure(
        _lines(
            timeline,
            "used_servers",
            "Servers in use",
            "servers",
            hline=float(bound["servers"]) if bound else None,
            hname="lower bound (peak)",
        )
    )
    sec.figure(_lines(timeline, "failures", "Allocation failures (cumulative)", "requests"))
    if "gpu_frag" in timeline.columns:
        sec.figure(_lines(timeline, "gpu_frag", "Fragmented GPUs (FGD measure)", "share"))
    return report


def fragmentation_report(
    curves: pl.DataFrame, summary: pl.DataFrame, metrics: dict[str, Any], *, note: str = ""
) -> Report:
    """A report of the FGD protocol: unallocated and fragmented GPUs vs arrived load."""
    report = Report("GPU fragmentation: the FGD paper's protocol")
    sec = report.section("Unallocated GPUs when the arrived load reaches capacity")
    if note:
        sec.text(note)
    sec.table(summary)
    sec.metrics({k: v for k, v in metrics.items() if k.startswith("fgd_") or k == "winner"})
    mean = (
        curves.with_columns((pl.col("arrived") / 0.02).round().cast(pl.Int64).alias("bin"))
        .group_by("policy", "bin")
        .agg(pl.col("arrived").mean(), pl.col("unallocated").mean(), pl.col("fragmented").mean())
        .sort("policy", "bin")
    )
    for col, label in (("unallocated", "Unallocated GPUs"), ("fragmented", "Fragmented GPUs")):
        fig = go.Figure()
        for (name,), part in mean.group_by("policy", maintain_order=True):
            fig.add_trace(
                go.Scatter(
                    x=part["arrived"] * 100, y=part[col] * 100, mode="lines+markers", name=str(name)
                )
            )
        fig.update_layout(
            title=f"{label} (% of capacity) vs arrived load",
            xaxis_title="arrived GPU load (% of capacity)",
            yaxis_title="% of GPUs",
            height=360,
            margin={"t": 40, "b": 40},
        )
        sec.figure(fig)
    return report
