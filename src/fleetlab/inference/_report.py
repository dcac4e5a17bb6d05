"""HTML report of a simulation: headline numbers, latency CDFs, per-replica time series."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from fleetlab.inference._simulate import SimResult
from fleetlab.report import Report

__all__ = ["simulation_report"]

_HEADLINE = (
    "requests",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "tbt_max_p99_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "queueing_p99_s",
    "throughput_rps",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "goodput_rps",
    "slo_attainment",
    "preemptions",
    "mean_utilization",
    "mean_batch_seqs",
    "energy_j",
    "energy_per_output_token_j",
    "mean_power_w",
    "cost_usd",
    "usd_per_million_output_tokens",
    "availability",
    "min_availability",
    "failed_requests",
    "retried_requests",
    "retries",
    "reprefill_tokens",
)

_FAULT_COLOURS = {"down": "red", "partitioned": "purple", "slow": "orange"}
_MAX_SHADED = 300  # fault windows shaded per figure (a long fault table stays readable)


def _shade(fig: go.Figure, faults: pl.DataFrame) -> None:
    """Shade fault windows (down, partitioned, slow) behind a time-series figure."""
    for node, kind, start, end in (
        faults.head(_MAX_SHADED).select("node", "kind", "start_s", "end_s").iter_rows()
    ):
        fig.add_vrect(
            x0=start,
            x1=end,
            fillcolor=_FAULT_COLOURS.get(str(kind), "grey"),
            opacity=0.12,
            line_width=0,
            layer="below",
            annotation_text=f"{node} {kind}" if faults.height <= 20 else None,
            annotation_position="top left",
        )


def _cdf(values: np.ndarray, name: str, max_points: int = 2000) -> go.Scatter:
    v = np.sort(values[np.isfinite(values)])
    if v.size > max_points:
        idx = np.linspace(0, v.size - 1, max_points).astype(int)
        v, y = v[idx], (idx + 1) / v.size
    else:
        y = np.arange(1, v.size + 1) / max(v.size, 1)
    return go.Scatter(x=v, y=y, mode="lines", name=name)


def simulation_report(
    result: SimResult,
    *,
    title: str = "LLM serving simulation",
    subtitle: str = "",
    config: dict[str, Any] | None = None,
    faults: pl.DataFrame | None = None,
) -> Report:
    """Build the HTML report of one simulation.

    Parameters
    ----------
    result : SimResult
        What :func:`simulate` returned.
    title, subtitle : str
        Report header.
    config : dict, optional
        The configuration to show in a table.
    faults : pl.DataFrame, optional
        The fault windows the simulation ran with (a :func:`fleetlab.sim.draw_faults`
        table): shaded in the time series (down red, partitioned purple, slow orange;
        the first 300 windows) and listed in a "Faults" section.

    Returns
    -------
    Report
        Sections: headline metrics, latency CDFs (TTFT, TPOT, longest gap between two
        tokens, E2E, queueing), per-replica time series (running sequences, KV use,
        waiting), the replica table (utilisation, batch sizes, energy).
    """
    report = Report(title, subtitle)
    m = result.metrics
    sec = report.section("Headline")
    sec.metrics({k: m[k] for k in _HEADLINE if k in m})
    if config:
        sec.table([{"setting": k, "value": str(v)} for k, v in config.items()])
    sec = report.section("Latency CDFs")
    req = result.requests
    for col, label in (
        ("ttft_s", "time to first token (s)"),
        ("tpot_s", "time per output token (s)"),
        ("tbt_max_s", "longest time between two tokens of a request (s)"),
        ("e2e_s", "end-to-end latency (s)"),
        ("queueing_s", "queueing delay (s)"),
    ):
        fig = go.Figure(_cdf(req[col].to_numpy(), col))
        fig.update_layout(
            title=label,
            xaxis_title="seconds",
            yaxis_title="fraction of requests",
            height=300,
            margin={"t": 40, "b": 40},
        )
        sec.figure(fig)
    sec = report.section("Per-replica time series")
    ts = result.timeseries
    for col, label in (
        ("running", "sequences in the batch"),
        ("kv_used", "KV cache used (fraction)"),
        ("waiting", "requests waiting"),
    ):
        fig = go.Figure()
        for rep in ts["replica"].unique().sort().to_list()[:16]:
            part = ts.filter(ts["replica"] == rep)
            fig.add_trace(
                go.Scatter(
                    x=part["t_s"],
                    y=part[col],
                    mode="lines",
                    name=f"replica {rep}",
                    line={"shape": "hv"},
                )
            )
        fig.update_layout(
            title=label, xaxis_title="simulated time (s)", height=320, margin={"t": 40, "b": 40}
        )
        if faults is not None and faults.height:
            _shade(fig, faults)
        sec.figure(fig)
    report.section("Replicas").table(result.replicas)
    if faults is not None:
        report.section("Faults").table(faults.sort("start_s").head(200))
    return report
