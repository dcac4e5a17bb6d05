"""Span ingest: fleetlab's span readers vs a plain pandas implementation, in one run.

Two real datasets from the mirror (FLEETLAB_MIRROR, else ../shared/data):

* Nezha TrainTicket 2023-01-29 (84 gzip'd minute CSVs, 328,848 rows): fleetlab's
  ``nezha-csv`` reader vs ``pandas.read_csv`` per file + concat + drop_duplicates + the
  same service / parent / time transforms.
* TraceWeaver DeathStarBench, one load level of each app (hotel_load25, media_load25,
  node_load25: 3,000 traces, 44,000 Jaeger spans; the pandas peer is too slow for all
  21 files): fleetlab's ``jaeger-json`` reader vs ``json.loads`` per line +
  ``pandas.json_normalize`` of the spans + the same process / parent / tag lookups.

Prints spans per second for each, the ratio, and checks both produce the same rows.
Run: ``python benchmarks/spans_ingest.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pandas as pd
import polars as pl

from fleetlab import traces

MIRROR = Path(
    os.environ.get("FLEETLAB_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "data")
)
NEZHA = MIRROR / "nezha-rca" / "rca_data" / "2023-01-29"
TW = MIRROR / "traceweaver-deathstarbench"
TW_FILES = (
    "hotel_reservation/hotel_load25",
    "media_microservices/media_load25",
    "nodejs_microservices/node_load25",
)


def pandas_nezha(folder: Path) -> pd.DataFrame:
    """The Nezha folder as canonical spans with pandas."""
    frames = [
        pd.read_csv(f, dtype={"ParentID": str}) for f in sorted(folder.rglob("*_trace.csv.gz"))
    ]
    raw = pd.concat(frames, ignore_index=True).drop_duplicates()
    service = raw["PodName"].str.extract(r"^(.*?)-[0-9a-f]{6,10}-[0-9a-z]{5}$")[0]
    return pd.DataFrame(
        {
            "trace_id": raw["TraceID"],
            "span_id": raw["SpanID"],
            "parent_id": raw["ParentID"].where(raw["ParentID"] != "root"),
            "service": service.fillna(raw["PodName"]),
            "operation": raw["OperationName"],
            "start_us": raw["StartTimeUnixNano"] // 1000,
            "duration_us": raw["Duration"],
        }
    )


def pandas_jaeger(folder: Path) -> pd.DataFrame:
    """The TraceWeaver JSON Lines as canonical spans with json + pandas.json_normalize."""
    parts = []
    for f in sorted(folder.rglob("*_load25.jsonl.gz")):
        with gzip.open(f, "rt") as handle:
            for line in handle:
                trace = json.loads(line)
                spans = pd.json_normalize(trace["spans"])
                services = {k: v["serviceName"] for k, v in trace["processes"].items()}
                spans["service"] = spans["processID"].map(services)
                spans["parent"] = spans["references"].map(
                    lambda refs: next(
                        (r["spanID"] for r in refs if r["refType"] == "CHILD_OF"), None
                    )
                )
                spans["kind"] = spans["tags"].map(
                    lambda tags: next((t["value"] for t in tags if t["key"] == "span.kind"), None)
                )
                parts.append(
                    spans[
                        [
                            "traceID",
                            "spanID",
                            "parent",
                            "service",
                            "operationName",
                            "startTime",
                            "duration",
                            "kind",
                        ]
                    ]
                )
    out = pd.concat(parts, ignore_index=True)
    for col in ("traceID", "spanID", "parent"):
        out[col] = out[col].str.lower().str.rjust(16, "0")
    return out


def fleetlab_jaeger(folder: Path) -> pl.DataFrame:
    """The same three files with fleetlab (each read through ``traces.load``)."""
    return pl.concat([traces.load(folder / f"{name}.jsonl.gz") for name in TW_FILES])


def timed(label: str, fn, *args) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    print(f"  {label:<34} {seconds:7.2f} s")
    return result, seconds


def main() -> None:
    print(f"mirror: {MIRROR}  (cores: {os.cpu_count()})")
    for name, folder, ours, peer in (
        ("Nezha TrainTicket 2023-01-29", NEZHA, traces.load, pandas_nezha),
        ("TraceWeaver DeathStarBench *_load25", TW, fleetlab_jaeger, pandas_jaeger),
    ):
        print(name)
        fl, fl_s = timed("fleetlab traces.load", ours, folder)
        pd_frame, pd_s = timed("pandas (peer)", peer, folder)
        rows = fl.height  # type: ignore[attr-defined]
        assert rows == len(pd_frame), (rows, len(pd_frame))
        print(
            f"  spans {rows:,}: fleetlab {rows / fl_s:,.0f} spans/s, pandas {rows / pd_s:,.0f} "
            f"spans/s, ratio {pd_s / fl_s:.1f}x"
        )


if __name__ == "__main__":
    main()
