"""Nezha span CSVs (TrainTicket / OnlineBoutique, ESEC/FSE'23) -> spans.

Header ``TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,
EndTimeUnixNano,Duration``; ``ParentID`` is a span id or ``root``; times are ns since
epoch, ``Duration`` is µs. A file or a folder (searched recursively, e.g. a whole
``rca_data`` date) reads as one lazy table; in a folder only files with this header are
read (Nezha's ``traceid/`` lists and fault JSONs are skipped). Nezha writes one file per
minute and repeats the spans of a trace that crosses the minute boundary in both files,
so exact duplicate rows are removed (and counted by :func:`notes`).

Service = ``PodName`` minus the Kubernetes ``-<replicaset hash>-<5 chars>`` suffix
(``ts-route-service-b6c59fb57-zv8dt`` -> ``ts-route-service``); a pod name without such
a suffix is the service. Nezha has no status or kind: status is ``unset``, kind null.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, diagnose_csv, open_text
from fleetlab.traces._formats import head_lines, read_head
from fleetlab.traces._spans_common import data_files, finish

HEADER = [
    "TraceID",
    "SpanID",
    "ParentID",
    "PodName",
    "OperationName",
    "StartTimeUnixNano",
    "EndTimeUnixNano",
    "Duration",
]
_SCHEMA = {
    "TraceID": pl.String,
    "SpanID": pl.String,
    "ParentID": pl.String,
    "PodName": pl.String,
    "OperationName": pl.String,
    "StartTimeUnixNano": pl.Int64,
    "EndTimeUnixNano": pl.Int64,
    "Duration": pl.Int64,
}
POD_SUFFIX = r"^(.*?)-[0-9a-f]{6,10}-[0-9a-z]{5}$"
_TRACE_ID = re.compile(r"[0-9a-f]{16,32}")


def _has_header(head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and [c.strip() for c in lines[0].split(",")] == HEADER


def _is_nezha_file(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(".csv") and _has_header(read_head(path))


def sniff(path: Path, head: bytes) -> bool:
    """A Nezha span CSV (gzip'd or not), or a folder holding at least one."""
    if path.is_dir():
        return _is_nezha_dir(path)
    return _has_header(head)


def _is_nezha_dir(path: Path) -> bool:
    """Every CSV under ``path`` is a Nezha span CSV or a Nezha trace-id list, and one is spans."""
    spans = False
    for p in data_files(path, lambda p: p.name.lower().removesuffix(".gz").endswith(".csv")):
        head = read_head(p, 4096)
        if _has_header(head):
            spans = True
        elif not all(_TRACE_ID.fullmatch(line) for line in head_lines(head, 3)):
            return False
    return spans


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found: list[Path] = []
    for p in data_files(path, lambda p: p.name.lower().removesuffix(".gz").endswith(".csv")):
        if _is_nezha_file(p):
            found.append(p)
    return found


def _raw(path: Path) -> pl.LazyFrame:
    files = _files(path)
    if not files:
        raise InputFormatError(
            path,
            "no Nezha span CSV in this folder",
            expected=f"CSV files with header {','.join(HEADER)}",
        )
    frames = [pl.scan_csv(f, schema=_SCHEMA, has_header=True) for f in files]
    return pl.concat(frames, how="vertical")


def scan(path: Path) -> pl.LazyFrame:
    """The spans of a Nezha CSV file or folder, exact duplicate rows removed (lazy)."""
    raw = _raw(path).unique(maintain_order=True)
    frame = raw.select(
        pl.col("TraceID").alias("trace_id"),
        pl.col("SpanID").alias("span_id"),
        pl.when(pl.col("ParentID") == "root")
        .then(None)
        .otherwise(pl.col("ParentID"))
        .alias("parent_id"),
        pl.coalesce(pl.col("PodName").str.extract(POD_SUFFIX, 1), pl.col("PodName")).alias(
            "service"
        ),
        pl.col("OperationName").alias("operation"),
        (pl.col("StartTimeUnixNano") // 1000).alias("start_us"),
        # Duration (µs) must equal (End - Start) // 1000 as on every upstream row; a row
        # where it does not (a cut last line, an edited file) gets null and is reported
        pl.when(
            pl.col("Duration") == (pl.col("EndTimeUnixNano") - pl.col("StartTimeUnixNano")) // 1000
        )
        .then(pl.col("Duration"))
        .otherwise(None)
        .alias("duration_us"),
        pl.lit("unset").alias("status"),
    )
    return finish(frame)


def notes(path: Path) -> dict[str, int]:
    """Files read, rows in them and exact duplicate rows removed (counts)."""
    counts = (
        _raw(path)
        .select(pl.len().alias("rows"), pl.struct(pl.all()).n_unique().alias("unique_rows"))
        .collect()
    )
    rows, unique = counts.row(0)
    return {
        "files": len(_files(path)),
        "rows": int(rows),
        "duplicate_rows_removed": int(rows - unique),
    }


FIELDS = (
    Field("TraceID", "id"),
    Field("SpanID", "id"),
    Field("ParentID", "id"),
    Field("PodName", "text"),
    Field("OperationName", "text", required=False),
    Field("StartTimeUnixNano", "int"),
    Field("EndTimeUnixNano", "int"),
    Field("Duration", "int"),
)


def diagnose(path: Path) -> InputFormatError | None:
    """The first bad line among the Nezha CSVs of ``path`` (error path only)."""
    for file in _files(path):
        problem = diagnose_csv(file, FIELDS, header=True) or _inconsistent(file)
        if problem is not None:
            return problem
    return None


def _inconsistent(path: Path) -> InputFormatError | None:
    with open_text(path) as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if line == 1 or len(row) != len(HEADER):
                continue
            start, end, duration = int(row[5]), int(row[6]), int(row[7])
            if duration != (end - start) // 1000:
                return InputFormatError(
                    path,
                    "Duration disagrees with the start and end times",
                    row=line,
                    field="Duration",
                    expected=f"(End - Start) // 1000 = {(end - start) // 1000}",
                    found=row[7],
                )
    return None
