"""Serverless invocations: Azure Functions 2019 (per-minute counts) and 2021 (per invocation).

2019 (``invocations_per_function_md.anon.dNN.csv``): ``HashOwner, HashApp, HashFunction,
Trigger`` then one column per minute of the day named by its number (``1..1440``, or a
subset such as ``480..959``). Each file is unpivoted lazily to one row per function and
minute with a non-zero count (absent minutes are zero). When the sibling files of the
same day exist (``function_durations_percentiles`` / ``durations``, ``app_memory
percentiles`` / ``memory``) the average duration and memory are joined on. A folder that
holds the three files reads as its invocations file.

2021 (``app, func, end_timestamp, duration``): one row per invocation, seconds from the
trace start; ``ts_s`` is the start (end - duration).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, check_last_line, csv_diagnoser, header_names
from fleetlab.traces._formats import Format, head_lines, read_head
from fleetlab.traces._schemas import conform

_KEYS = ["HashOwner", "HashApp", "HashFunction"]
_INVOCATION_HEAD = [*_KEYS, "Trigger"]
_DURATION_COLUMNS = [*_KEYS, "Average", "Count", "Minimum", "Maximum"]
_MEMORY_COLUMNS = ["HashOwner", "HashApp", "AverageAllocatedMb"]


def _csv_names(path: Path) -> list[str]:
    lines = head_lines(read_head(path), 1)
    return header_names(lines[0]) if lines else []


def _is_invocations_header(names: list[str]) -> bool:
    return names[:4] == _INVOCATION_HEAD and len(names) > 4 and all(n.isdigit() for n in names[4:])


def _invocations_file(folder: Path) -> Path | None:
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith((".csv", ".csv.gz")):
            try:
                if _is_invocations_header(_csv_names(p)):
                    return p
            except InputFormatError:
                continue
    return None


def _sniff_functions_2019(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return _invocations_file(path) is not None
    lines = head_lines(head, 1)
    return bool(lines) and _is_invocations_header(header_names(lines[0]))


def _sibling(path: Path, kind: str) -> Path | None:
    """The durations / memory file of the same day as the invocations file ``path``."""
    day = re.search(r"\.(d\d+)\.csv", path.name)
    if kind == "durations":
        names = ["durations.csv", "durations.csv.gz"]
        if day:
            names = [f"function_durations_percentiles.anon.{day.group(1)}.csv", *names]
        wanted = _DURATION_COLUMNS
    else:
        names = ["memory.csv", "memory.csv.gz"]
        if day:
            names = [f"app_memory_percentiles.anon.{day.group(1)}.csv", *names]
        wanted = _MEMORY_COLUMNS
    for name in names:
        for candidate in (path.with_name(name), path.with_name(name + ".gz")):
            if candidate.is_file() and set(wanted) <= set(_csv_names(candidate)):
                return candidate
    return None


def _scan_functions_2019(path: Path) -> pl.LazyFrame:
    source = _invocations_file(path) if path.is_dir() else path
    if source is None:
        raise InputFormatError(
            path,
            "no invocations file in the folder",
            expected="a CSV starting HashOwner,HashApp,HashFunction,Trigger",
        )
    check_last_line(source)
    names = _csv_names(source)
    minutes = names[4:]
    schema = {**{n: pl.String for n in _INVOCATION_HEAD}, **{m: pl.Int64 for m in minutes}}
    wide = pl.scan_csv(source, schema=schema, has_header=True)
    long = (
        wide.unpivot(index=_INVOCATION_HEAD, on=minutes, variable_name="minute", value_name="count")
        .filter(pl.col("count") != 0)
        .with_columns(pl.col("minute").cast(pl.Int64))
    )
    frame = long.select(
        pl.col("HashApp").alias("app"),
        pl.col("HashFunction").alias("function"),
        pl.col("count"),
        ((pl.col("minute") - 1) * 60.0).alias("ts_s"),
        pl.col("minute"),
        pl.col("Trigger").alias("trigger"),
        pl.col("HashOwner").alias("owner"),
    )
    durations = _sibling(source, "durations")
    if durations is not None:
        avg = (
            pl.scan_csv(durations, schema_overrides={"Average": pl.Float64})
            .select(*_KEYS, pl.col("Average").alias("duration_ms"))
            .unique(subset=_KEYS, keep="first")
        )
        frame = frame.join(avg, left_on=["owner", "app", "function"], right_on=_KEYS, how="left")
    memory = _sibling(source, "memory")
    if memory is not None:
        mem_names = _csv_names(memory)
        keys = _KEYS if "HashFunction" in mem_names else _KEYS[:2]
        mem = (
            pl.scan_csv(memory, schema_overrides={"AverageAllocatedMb": pl.Float64})
            .select(*keys, pl.col("AverageAllocatedMb").alias("memory_mb"))
            .unique(subset=keys, keep="first")
        )
        left = ["owner", "app", "function"][: len(keys)]
        frame = frame.join(mem, left_on=left, right_on=keys, how="left")
    return conform(frame, "invocations")


def _diagnose_functions_2019(path: Path) -> InputFormatError | None:
    source = _invocations_file(path) if path.is_dir() else path
    if source is None:
        return None
    minutes = _csv_names(source)[4:]
    fields = (
        [Field(n, "id") for n in _INVOCATION_HEAD[:3]]
        + [Field("Trigger", "text", required=False)]
        + [Field(m, "int") for m in minutes]
    )
    found = csv_diagnoser(fields, header=True)(source)
    if found is not None:
        return found
    for kind, cols in (
        ("durations", [Field("Average", "number")]),
        ("memory", [Field("AverageAllocatedMb", "number")]),
    ):
        sibling = _sibling(source, kind)
        if sibling is not None:
            found = csv_diagnoser(cols, header=True)(sibling)
            if found is not None:
                return found
    return None


def _sniff_durations_2019(path: Path, head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and header_names(lines[0])[:7] == _DURATION_COLUMNS


def _scan_durations_2019(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    raw = pl.scan_csv(
        path,
        schema_overrides={
            "Average": pl.Float64,
            "Count": pl.Int64,
            **{k: pl.String for k in _KEYS},
        },
    )
    frame = raw.select(
        pl.col("HashApp").alias("app"),
        pl.col("HashFunction").alias("function"),
        pl.col("Count").alias("count"),
        pl.col("Average").alias("duration_ms"),
        pl.col("HashOwner").alias("owner"),
    )
    return conform(frame, "invocations")


def _sniff_functions_2021(path: Path, head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and header_names(lines[0]) == ["app", "func", "end_timestamp", "duration"]


def _scan_functions_2021(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    raw = pl.scan_csv(
        path,
        schema={
            "app": pl.String,
            "func": pl.String,
            "end_timestamp": pl.Float64,
            "duration": pl.Float64,
        },
    )
    frame = raw.select(
        pl.col("app"),
        pl.col("func").alias("function"),
        pl.lit(1, pl.Int64).alias("count"),
        (pl.col("end_timestamp") - pl.col("duration")).alias("ts_s"),
        (pl.col("duration") * 1000.0).alias("duration_ms"),
    )
    return conform(frame, "invocations")


def _invocation_quality(frame: pl.DataFrame) -> dict[str, int]:
    out = {
        "negative_counts": frame.filter(pl.col("count") < 0).height,
        "functions": frame.select(pl.struct("app", "function").n_unique()).item(),
    }
    if frame["duration_ms"].null_count() < frame.height:
        out["negative_durations"] = frame.filter(pl.col("duration_ms") < 0).height
        out["rows_without_duration"] = frame["duration_ms"].null_count()
    if frame["memory_mb"].null_count() < frame.height:
        out["rows_without_memory"] = frame["memory_mb"].null_count()
    if frame["ts_s"].null_count() < frame.height:
        out["negative_start_times"] = frame.filter(pl.col("ts_s") < 0).height
    return out


FORMATS: tuple[Format, ...] = (
    Format(
        "azure-functions-2019",
        "invocations",
        "Azure Functions 2019 per-minute invocation counts (wide CSV or a folder with "
        "durations/memory)",
        _sniff_functions_2019,
        _scan_functions_2019,
        diagnose=_diagnose_functions_2019,
        nonnull=("app", "function", "count", "minute"),
        quality=_invocation_quality,
    ),
    Format(
        "azure-functions-2019-durations",
        "invocations",
        "Azure Functions 2019 function_durations_percentiles (daily count and mean duration)",
        _sniff_durations_2019,
        _scan_durations_2019,
        diagnose=csv_diagnoser(
            [
                Field("HashApp", "id"),
                Field("HashFunction", "id"),
                Field("Average", "number"),
                Field("Count", "int"),
            ],
            header=True,
        ),
        nonnull=("app", "function", "count", "duration_ms"),
        quality=_invocation_quality,
    ),
    Format(
        "azure-functions-2021",
        "invocations",
        "Azure Functions 2021 per-invocation trace (app, func, end_timestamp, duration)",
        _sniff_functions_2021,
        _scan_functions_2021,
        diagnose=csv_diagnoser(
            [
                Field("app", "id"),
                Field("func", "id"),
                Field("end_timestamp", "number"),
                Field("duration", "number"),
            ],
            header=True,
        ),
        nonnull=("app", "function", "count", "ts_s", "duration_ms"),
        quality=_invocation_quality,
    ),
)
