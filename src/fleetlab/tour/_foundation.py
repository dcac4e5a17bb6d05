"""The tour's first stop: ingest a workload, read it back as a canonical table, inspect it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from fleetlab import traces
from fleetlab.report import Report
from fleetlab.sim import Streams

#: a small conversation-like workload whose parameters are written here, so the tour
#: runs with no data at all: 2 req/s Poisson for 10 minutes, lognormal token counts
#: with medians near the Azure LLM 2023 conversation trace (1,020 prompt / 129 output).
DEMO = {
    "rate_per_s": 2.0,
    "duration_s": 600.0,
    "prompt_median": 1020,
    "prompt_sigma": 1.0,
    "output_median": 129,
    "output_sigma": 0.9,
}


def demo_requests(seed: int) -> pl.DataFrame:
    """A canonical requests table drawn from the DEMO parameters."""
    streams = Streams(seed)
    n = streams["count"].poisson(DEMO["rate_per_s"] * DEMO["duration_s"])
    arrivals = np.sort(streams["arrivals"].uniform(0, DEMO["duration_s"], n))
    prompt = np.ceil(
        streams["prompt"].lognormal(np.log(DEMO["prompt_median"]), DEMO["prompt_sigma"], n)
    )
    output = np.ceil(
        streams["output"].lognormal(np.log(DEMO["output_median"]), DEMO["output_sigma"], n)
    )
    frame = pl.LazyFrame(
        {
            "arrival_s": arrivals,
            "prompt_tokens": prompt.astype(np.int64),
            "output_tokens": output.astype(np.int64),
            "request_id": np.arange(n),
        }
    )
    return traces.canonical(frame, "requests").collect()


def ingest_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Write the demo workload as Parquet, read it back through the readers, inspect it."""
    path = workdir / "demo_requests.parquet"
    demo_requests(seed).write_parquet(path)
    info = traces.inspect(path)
    frame = traces.load(path)
    report = Report("ingest")
    sec = report.section("Ingest: a canonical requests table")
    sec.text(
        "A conversation-like workload is synthesized from parameters written in the code "
        f"({DEMO['rate_per_s']} req/s for {DEMO['duration_s']:.0f} s), written as Parquet and "
        "read back through fleetlab.traces, exactly as a converted public trace would be."
    )
    sec.metrics(
        {
            "rows": info["rows"],
            "time span (s)": info["time_span"]["duration_s"],
            "median prompt tokens": frame["prompt_tokens"].median(),
            "median output tokens": frame["output_tokens"].median(),
        }
    )
    sec.table(
        [
            {k: c.get(k) for k in ("name", "dtype", "nulls", "min", "median", "max")}
            for c in info["columns"]
        ]
    )
    per_min = frame.group_by((pl.col("arrival_s") // 60).alias("minute")).len().sort("minute")
    fig = go.Figure(go.Bar(x=per_min["minute"], y=per_min["len"]))
    fig.update_layout(
        title="Requests per minute",
        xaxis_title="minute",
        yaxis_title="requests",
        height=300,
        margin={"t": 40, "b": 40},
    )
    sec.figure(fig)
    return report, {"requests": info["rows"], "parquet": str(path)}
