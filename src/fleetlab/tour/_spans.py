"""The tour's span stop: read distributed traces in three formats and show what is in them.

With ``FLEETLAB_MIRROR`` set and its files present, the stop reads real public traces
(TraceWeaver hotel-reservation Jaeger JSON Lines, a Zipkin v2 SmartThings trace and one
Nezha TrainTicket minute). Otherwise it writes the same kinds of files from a small
hotel-reservation-like topology whose parameters are written below, so it runs offline
with no data. Either way every file goes through format detection and the readers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from fleetlab.report import Report
from fleetlab.sim import Streams
from fleetlab.traces import detect, inspect, load

#: mirror files the stop prefers (relative to FLEETLAB_MIRROR)
MIRROR_FILES = (
    "traceweaver-deathstarbench/hotel_reservation/hotel_load25.jsonl.gz",
    "zipkin-lens-testdata/smartthings-oauth-authorization.json",
    "nezha-rca/construct_data/2023-01-29/trace/08_50_trace.csv.gz",
)

#: the synthetic topology: caller -> [(callee, median server time in µs)], 300 traces,
#: lognormal latencies (sigma 0.5), a 2 % error rate on rate, ~1 ms between sibling calls
TOPOLOGY: dict[str, list[tuple[str, float]]] = {
    "frontend": [("search", 900.0), ("profile", 400.0), ("reservation", 300.0)],
    "search": [("geo", 250.0), ("rate", 350.0)],
}
DEMO = {
    "traces": 300,
    "sigma": 0.5,
    "error_rate_rate": 0.02,
    "frontend_median_us": 2500.0,
    "gap_us": 1000.0,
    "start_us": 1_700_000_000_000_000,
}


def _mirror_files() -> list[Path] | None:
    root = os.environ.get("FLEETLAB_MIRROR")
    if not root:
        return None
    files = [Path(root) / rel for rel in MIRROR_FILES]
    return files if all(f.is_file() for f in files) else None


def demo_jaeger_lines(seed: int) -> str:
    """Jaeger JSON Lines (one trace a line) of the TOPOLOGY, drawn from ``seed``.

    Each service's own time is lognormal around its median; it calls its callees one
    after the other, so a span lasts at least as long as its children.
    """
    streams = Streams(seed)
    lat, err = streams["latency"], streams["errors"]
    services = ["frontend", *sorted({c for calls in TOPOLOGY.values() for c, _ in calls})]
    pids = {s: f"p{i + 1}" for i, s in enumerate(services)}
    processes = {pid: {"serviceName": s, "tags": []} for s, pid in pids.items()}
    lines = []
    for t in range(int(DEMO["traces"])):
        trace_id = f"{(seed * 1_000_003 + t + 1):016x}"
        spans = _demo_trace(trace_id, t, lat, err, pids)
        lines.append(json.dumps({"traceID": trace_id, "spans": spans, "processes": processes}))
    return "\n".join(lines) + "\n"


def _demo_trace(
    trace_id: str, t: int, lat: np.random.Generator, err: np.random.Generator, pids: dict[str, str]
) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []

    def add(service: str, parent: str | None, begin: int, median: float) -> int:
        span_id = f"{len(spans) + 1:08x}{t:08x}"
        tags: list[dict[str, Any]] = [{"key": "span.kind", "type": "string", "value": "server"}]
        if service == "rate" and err.random() < DEMO["error_rate_rate"]:
            tags.append({"key": "error", "type": "bool", "value": True})
        refs = [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}] if parent else []
        span = {
            "traceID": trace_id,
            "spanID": span_id,
            "operationName": f"/{service}",
            "references": refs,
            "startTime": begin,
            "duration": 0,
            "tags": tags,
            "processID": pids[service],
        }
        spans.append(span)
        own = int(lat.lognormal(math.log(median), DEMO["sigma"]))
        at = begin + 50
        for callee, callee_median in TOPOLOGY.get(service, []):
            at = add(callee, span_id, at, callee_median) + 50
        duration = max(own, at - begin)
        span["duration"] = duration
        return begin + duration

    add("frontend", None, int(DEMO["start_us"]) + t * 50_000, DEMO["frontend_median_us"])
    return spans


def demo_zipkin(seed: int, *, traces: int = 10) -> str:
    """The first ``traces`` demo traces as a Zipkin v2 array with B3 shared client/server ids."""
    frame = load_demo_frame(seed)
    keep = frame["trace_id"].unique(maintain_order=True).head(traces)
    frame = frame.filter(pl.col("trace_id").is_in(keep.implode()))
    by_id = {(r["trace_id"], r["span_id"]): r["service"] for r in frame.iter_rows(named=True)}
    out: list[dict[str, Any]] = []
    for r in frame.iter_rows(named=True):
        base = {
            "traceId": r["trace_id"],
            "id": r["span_id"],
            "name": r["operation"].lstrip("/"),
            "timestamp": r["start_us"],
            "duration": r["duration_us"],
        }
        if r["status"] == "error":
            base["tags"] = {"error": "true"}
        if r["parent_id"] is None:
            out.append({**base, "kind": "SERVER", "localEndpoint": {"serviceName": r["service"]}})
            continue
        caller = by_id[(r["trace_id"], r["parent_id"])]
        out.append(
            {
                **base,
                "parentId": r["parent_id"],
                "kind": "CLIENT",
                "localEndpoint": {"serviceName": caller},
                "remoteEndpoint": {"serviceName": r["service"]},
            }
        )
        out.append(
            {
                **base,
                "parentId": r["parent_id"],
                "kind": "SERVER",
                "shared": True,
                "localEndpoint": {"serviceName": r["service"]},
            }
        )
    return json.dumps(out)


def load_demo_frame(seed: int) -> pl.DataFrame:
    """The demo Jaeger traces read back as a canonical spans table (in memory)."""
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.jsonl"
        path.write_text(demo_jaeger_lines(seed))
        return load(path)


def service_edges(frame: pl.DataFrame) -> pl.DataFrame:
    """Caller -> callee services from parent links: calls, p50/p99 callee µs, error share."""
    parents = frame.select(
        "trace_id", pl.col("span_id").alias("parent_id"), pl.col("service").alias("caller")
    )
    links = frame.join(parents, on=["trace_id", "parent_id"]).filter(
        pl.col("caller") != pl.col("service")
    )
    return (
        links.group_by("caller", pl.col("service").alias("callee"))
        .agg(
            pl.len().alias("calls"),
            pl.col("duration_us").median().alias("p50_us"),
            pl.col("duration_us").quantile(0.99).alias("p99_us"),
            (pl.col("status") == "error").mean().alias("error_share"),
        )
        .sort("calls", "caller", "callee", descending=[True, False, False])
    )


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Read traces in three span formats, auto-detected, and summarise what they hold.

    Parameters
    ----------
    workdir
        Folder for the synthesized files (created if missing).
    seed
        Seed of the synthetic traces (ignored when real mirror files are used).

    Returns
    -------
    tuple
        The report section and a summary: ``source`` ("mirror" or "synthetic"), the
        formats read, total ``spans``, ``traces``, ``services`` and ``edges`` of the
        first (Jaeger) file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    files = _mirror_files()
    source = "mirror" if files else "synthetic"
    if files is None:
        jaeger = workdir / "demo_spans.jsonl"
        jaeger.write_text(demo_jaeger_lines(seed))
        zipkin = workdir / "demo_spans_zipkin.json"
        zipkin.write_text(demo_zipkin(seed))
        files = [jaeger, zipkin]
    report = Report("spans")
    sec = report.section("Spans: distributed traces from Jaeger, Zipkin and Nezha files")
    sec.text(
        (
            "Real public traces from the mirror (TraceWeaver DeathStarBench hotel-reservation, "
            "a Zipkin SmartThings trace, a Nezha TrainTicket minute) are read"
            if source == "mirror"
            else "No mirror is set, so traces of a small hotel-reservation-like topology "
            f"({DEMO['traces']} requests, parameters in fleetlab.tour._spans) are written as "
            "Jaeger JSON Lines and Zipkin v2 JSON (with shared client/server span ids) and read"
        )
        + " through format detection into the canonical spans table."
    )
    rows, total = [], {"spans": 0, "traces": 0}
    frames = []
    for path in files:
        info = inspect(path)
        quality = info.get("quality", {})
        rows.append(
            {
                "file": path.name,
                "format": detect(path).name,
                "spans": info["rows"],
                "traces": quality.get("traces"),
                "roots": quality.get("roots"),
                "unknown parents": quality.get("unknown_parent"),
                "shared server halves": quality.get("shared_server_halves"),
                "duplicate rows removed": quality.get("duplicate_rows_removed", 0),
            }
        )
        total["spans"] += info["rows"]
        total["traces"] += int(quality.get("traces") or 0)
        frames.append(load(path))
    sec.table(rows)
    first = frames[0]
    edges = service_edges(first)
    sec.heading(f"Service calls in {files[0].name}")
    sec.metrics(
        {
            "spans": first.height,
            "traces": first["trace_id"].n_unique(),
            "services": first["service"].n_unique(),
            "service edges": edges.height,
        }
    )
    sec.table(edges)
    fig = go.Figure()
    for service in sorted(first["service"].drop_nulls().unique()):
        durations = first.filter(pl.col("service") == service)["duration_us"] / 1000
        fig.add_trace(go.Box(y=durations.to_list(), name=service, boxpoints=False))
    fig.update_layout(
        title="Span duration by service (ms)",
        yaxis_type="log",
        height=320,
        margin={"t": 40, "b": 40},
        showlegend=False,
    )
    sec.figure(fig)
    summary = {
        "source": source,
        "formats": [r["format"] for r in rows],
        **total,
        "services": first["service"].n_unique(),
        "edges": edges.height,
    }
    return report, summary
