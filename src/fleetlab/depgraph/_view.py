"""Views of a dependency graph: an interactive HTML figure, a report, a terminal summary."""

from __future__ import annotations

import html
import json
import math
from typing import Any

import plotly.graph_objects as go
import polars as pl

from fleetlab.depgraph._blast import blast_radii, blast_radius, cycles, single_points_of_failure
from fleetlab.depgraph._graph import DependencyGraph
from fleetlab.report import Report


def _layout(graph: DependencyGraph) -> dict[str, tuple[float, float]]:
    """Left-to-right layers by distance from the entry points; spread within a layer."""
    g = graph.graph
    level: dict[str, int] = {}
    frontier = (
        [e for e in graph.entry_points if e in g]
        or [n for n in g if g.in_degree(n) == 0]
        or sorted(g)[:1]
    )
    for e in frontier:
        level[e] = 0
    queue = list(frontier)
    while queue:
        u = queue.pop(0)
        for v in sorted(g.successors(u)):
            if v not in level:
                level[v] = level[u] + 1
                queue.append(v)
    top = max(level.values(), default=0)
    for n in sorted(g):
        level.setdefault(n, top + 1)
    layers: dict[int, list[str]] = {}
    for n, lv in sorted(level.items(), key=lambda kv: (kv[1], kv[0])):
        layers.setdefault(lv, []).append(n)
    pos = {}
    for lv, names in layers.items():
        for i, n in enumerate(names):
            pos[n] = (float(lv), (i - (len(names) - 1) / 2.0))
    return pos


def graph_figure(graph: DependencyGraph, *, title: str = "Service dependency graph") -> go.Figure:
    """An interactive plotly figure of the service graph.

    Nodes are laid out left to right by call depth from the entry points; edge width
    grows with the log of the call count, hover shows calls, rate, p50/p99 and error rate,
    async edges are dotted. Pan and zoom come with plotly.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    g = graph.graph
    pos = _layout(graph)
    fig = go.Figure()
    max_calls = max((d.get("calls", 0) for _, _, d in g.edges(data=True)), default=1) or 1
    for u, v, d in g.edges(data=True):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        width = 1.0 + 5.0 * math.log1p(d.get("calls", 0)) / math.log1p(max_calls)
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                hoverinfo="skip",
                showlegend=False,
                line={
                    "width": width,
                    "color": "#9aa5b1",
                    "dash": "dot" if d.get("kind") == "async" else "solid",
                },
            )
        )
    mids_x, mids_y, mids_text = [], [], []
    for u, v, d in g.edges(data=True):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        mids_x.append(x0 + 0.6 * (x1 - x0))
        mids_y.append(y0 + 0.6 * (y1 - y0))
        mids_text.append(
            f"{html.escape(u)} → {html.escape(v)}<br>calls {d.get('calls', 0):,}"
            f"<br>rate {_num(d.get('rate_per_s'))}/s<br>p50 {_num(d.get('p50_ms'))} ms, "
            f"p99 {_num(d.get('p99_ms'))} ms<br>errors {100 * (d.get('error_rate') or 0):.2f}%"
            f"<br>{d.get('kind', 'sync')}, confidence {d.get('confidence', 1.0):.2f}"
        )
    fig.add_trace(
        go.Scatter(
            x=mids_x,
            y=mids_y,
            mode="markers",
            hovertext=mids_text,
            hoverinfo="text",
            marker={"symbol": "triangle-right", "size": 8, "color": "#52606d"},
            showlegend=False,
            name="edges",
        )
    )
    names = sorted(g)
    entries = set(graph.entry_points)
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in names],
            y=[pos[n][1] for n in names],
            mode="markers+text",
            text=names,
            textposition="top center",
            customdata=names,
            name="services",
            hovertext=[_node_text(graph, n) for n in names],
            hoverinfo="text",
            marker={
                "size": [18 if n in entries else 13 for n in names],
                "color": ["#1f3a5f" if n in entries else "#3e7cb1" for n in names],
                "line": {"width": 1, "color": "#fff"},
            },
            showlegend=False,
        )
    )
    fig.update_layout(
        title=title,
        height=max(380, 60 * max(1, _widest_layer(pos))),
        dragmode="pan",
        xaxis={"visible": False},
        yaxis={"visible": False},
        margin={"t": 40, "b": 10},
        plot_bgcolor="#fff",
    )
    return fig


def _widest_layer(pos: dict[str, tuple[float, float]]) -> int:
    counts: dict[float, int] = {}
    for x, _ in pos.values():
        counts[x] = counts.get(x, 0) + 1
    return max(counts.values(), default=1)


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3g}"


def _node_text(graph: DependencyGraph, n: str) -> str:
    d = graph.graph.nodes[n]
    b = blast_radius(graph, n)
    return (
        f"<b>{html.escape(n)}</b><br>spans {d.get('spans', 'n/a')}"
        f"<br>p50 {_num(d.get('p50_ms'))} ms<br>blast radius: "
        f"{100 * b['share_of_traffic']:.1f}% of traffic, {len(b['affected_services'])} "
        f"upstream services"
    )


def graph_view_html(graph: DependencyGraph, *, div_id: str = "depgraph-view") -> str:
    """The graph figure plus a click handler: clicking a service highlights its blast radius.

    Returns
    -------
    str
        An HTML fragment for :meth:`fleetlab.report.Section.raw_html` (needs the report's
        plotly.js). Red: the clicked service; orange: services that depend on it.
    """
    fig = graph_figure(graph)
    radii = {
        n: {
            "up": b["affected_services"],
            "share": b["share_of_traffic"],
            "entries": b["entry_points"],
        }
        for n in graph.services
        for b in [blast_radius(graph, n)]
    }
    node_trace = len(fig.data) - 1
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)
    script = f"""
<p id="{div_id}-info" style="font-size:13px">Click a service to see its blast radius.</p>
<script>(function(){{
  var radii = {json.dumps(radii)};
  var el = document.getElementById({json.dumps(div_id)});
  var info = document.getElementById({json.dumps(div_id + "-info")});
  if (!el || !el.on) return;
  var base = el.data[{node_trace}].marker.color.slice();
  el.on('plotly_click', function(ev) {{
    var p = ev.points[0];
    if (p.curveNumber !== {node_trace}) return;
    var name = p.customdata, r = radii[name];
    var names = el.data[{node_trace}].customdata;
    var colors = names.map(function(n, i) {{
      if (n === name) return '#c0392b';
      if (r.up.indexOf(n) >= 0) return '#e67e22';
      return base[i];
    }});
    Plotly.restyle(el, {{'marker.color': [colors]}}, [{node_trace}]);
    info.textContent = name + ': ' + (100 * r.share).toFixed(1) + '% of traffic depends on it; ' +
      r.up.length + ' upstream services (' + r.up.join(', ') + '); entry points: ' +
      r.entries.join(', ');
  }});
}})();</script>"""
    return body + script


def summary(graph: DependencyGraph) -> dict[str, Any]:
    """Headline numbers of a graph (for the terminal and reports).

    Returns
    -------
    dict
        ``services``, ``edges``, ``entry_points``, ``async_edges``, ``cycles``,
        ``single_points_of_failure``, ``calls``, ``source`` and, for spans,
        ``traces``, ``spans``, ``broken_traces``.
    """
    g = graph.graph
    q = graph.meta.get("quality") or {}
    out = {
        "source": graph.meta.get("source", "?"),
        "services": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "entry_points": ", ".join(graph.entry_points),
        "calls": int(sum(d.get("calls", 0) for _, _, d in g.edges(data=True))),
        "async_edges": sum(1 for _, _, d in g.edges(data=True) if d.get("kind") == "async"),
        "cycles": len(cycles(graph)),
        "single_points_of_failure": len(single_points_of_failure(graph)),
    }
    if graph.meta.get("source") == "spans":
        out.update(
            traces=graph.meta.get("traces"),
            spans=graph.meta.get("spans"),
            broken_traces=q.get("broken_traces", 0),
        )
    return out


def graph_report(
    graph: DependencyGraph,
    *,
    title: str = "Dependency graph",
    traces: pl.DataFrame | None = None,
) -> Report:
    """A self-contained HTML report of a graph: view, edges, blast radii, SPOFs, cycles.

    Parameters
    ----------
    graph
        The graph.
    title
        Report title.
    traces
        Optional output of :func:`analyze_traces`, adds critical-path and pattern sections.

    Returns
    -------
    fleetlab.report.Report
    """
    from fleetlab.depgraph._traces import critical_services, shape_stats, trace_patterns

    report = Report(title, f"mined from {graph.meta.get('source', '?')}")
    sec = report.section("Service graph")
    sec.metrics(summary(graph))
    sec.raw_html(graph_view_html(graph))
    q = graph.meta.get("quality")
    if q:
        report.section("Data quality").table(
            [{"check": k, "count": v} for k, v in q.items()], max_rows=40
        )
    report.section("Edges").table(
        [
            {
                k: e[k]
                for k in (
                    "caller",
                    "callee",
                    "calls",
                    "rate_per_s",
                    "p50_ms",
                    "p99_ms",
                    "error_rate",
                    "kind",
                    "confidence",
                )
            }
            for e in graph.edges()
        ],
        max_rows=200,
    )
    report.section("Blast radius").table(blast_radii(graph), max_rows=100)
    spof = single_points_of_failure(graph)
    sec = report.section("Single points of failure and cycles")
    sec.table(
        [
            {
                "service": r["service"],
                "entry_points": ", ".join(r["entry_points"]),
                "cut_off": ", ".join(r["cut_off"]),
            }
            for r in spof
        ]
        or [{"service": "none", "entry_points": "", "cut_off": ""}]
    )
    cyc = cycles(graph)
    sec.table(
        [
            {"cycle": " → ".join(c["services"]), "length": c["length"], "async": c["async"]}
            for c in cyc
        ]
        or [{"cycle": "none", "length": 0, "async": False}]
    )
    if traces is not None and traces.height:
        sec = report.section("Critical path (CRISP) and trace shapes")
        stats = shape_stats(traces)
        sec.metrics(
            {
                "traces": stats["traces"],
                "patterns": stats["patterns"],
                "top-10 pattern share": stats["top10_pattern_share"],
                "median spans": stats["spans"]["p50"],
                "p99 depth": stats["depth"]["p99"],
            }
        )
        sec.table(critical_services(traces), max_rows=30)
        sec.table(trace_patterns(traces, top=10))
        fig = go.Figure(go.Histogram(x=traces["spans"].to_list(), nbinsx=50))
        fig.update_layout(title="Spans per trace", height=280, margin={"t": 40, "b": 30})
        sec.figure(fig)
    return report
