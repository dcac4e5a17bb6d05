"""LLM inference request traces: Azure LLM inference 2023/2024 and Mooncake/Kimi JSONL."""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import (
    Field,
    check_last_line,
    csv_diagnoser,
    diagnose_ndjson,
    header_names,
)
from fleetlab.traces._formats import Format, head_lines, is_gzip, read_head
from fleetlab.traces._schemas import conform

AZURE_LLM_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
_TS_FORMAT = "%Y-%m-%d %H:%M:%S%.f"
_TZ = re.compile(r"([+-]\d{2}:?\d{2}|Z)\s*$")


def _sniff_azure_llm(path: Path, head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and header_names(lines[0]) == AZURE_LLM_COLUMNS


def _scan_azure_llm(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    lines = head_lines(read_head(path, 4096), 2)
    first = lines[1].split(",")[0].strip() if len(lines) > 1 else ""
    # 2023 files have naive timestamps with 7 fractional digits; the 2024 week-long files
    # carry a UTC offset (``+00:00``). Either way times become seconds from the first request.
    ts = pl.col("TIMESTAMP").str.strip_chars()
    if _TZ.search(first):
        ts = ts.str.to_datetime(_TS_FORMAT + "%#z", time_unit="us", strict=True)
    else:
        ts = ts.str.to_datetime(_TS_FORMAT, time_unit="us", strict=True)
    raw = pl.scan_csv(
        path,
        schema={"TIMESTAMP": pl.String, "ContextTokens": pl.Int64, "GeneratedTokens": pl.Int64},
        has_header=True,
    )
    frame = raw.select(
        ts.alias("_ts"),
        pl.col("ContextTokens").alias("prompt_tokens"),
        pl.col("GeneratedTokens").alias("output_tokens"),
    ).select(
        ((pl.col("_ts") - pl.col("_ts").min()).dt.total_microseconds() / 1e6).alias("arrival_s"),
        "prompt_tokens",
        "output_tokens",
        pl.int_range(pl.len(), dtype=pl.Int64).alias("request_id"),
    )
    return conform(frame, "requests")


_AZURE_FIELDS = [
    Field("TIMESTAMP", "datetime"),
    Field("ContextTokens", "int"),
    Field("GeneratedTokens", "int"),
]

_MOONCAKE_KEYS = re.compile(rb'^\s*\{[^\n]*"timestamp"[^\n]*"input_length"', re.S)


def _sniff_mooncake(path: Path, head: bytes) -> bool:
    first = head.lstrip()[:4096]
    return (
        first.startswith(b"{") and bool(_MOONCAKE_KEYS.match(first)) and b'"output_length"' in first
    )


_MOONCAKE_SCHEMA = pl.Schema(
    {
        "timestamp": pl.Float64(),
        "input_length": pl.Int64(),
        "output_length": pl.Int64(),
        "hash_ids": pl.List(pl.Int64()),
    }
)


def _scan_mooncake(path: Path) -> pl.LazyFrame:
    if is_gzip(path):
        with gzip.open(path, "rb") as f:
            raw = pl.read_ndjson(io.BytesIO(f.read()), schema=_MOONCAKE_SCHEMA).lazy()
    else:
        raw = pl.scan_ndjson(path, schema=_MOONCAKE_SCHEMA)
    # Mooncake timestamps are already milliseconds from the trace start.
    frame = raw.select(
        (pl.col("timestamp") / 1000.0).alias("arrival_s"),
        pl.col("input_length").alias("prompt_tokens"),
        pl.col("output_length").alias("output_tokens"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("request_id"),
        pl.col("hash_ids").alias("prefix_ids"),
    )
    return conform(frame, "requests")


def _diagnose_mooncake(path: Path) -> InputFormatError | None:
    return diagnose_ndjson(
        path,
        [
            Field("timestamp", "number"),
            Field("input_length", "int"),
            Field("output_length", "int"),
            Field("hash_ids", "int_list", required=False),
        ],
    )


def _requests_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "negative_token_counts": frame.filter(
            (pl.col("prompt_tokens") < 0) | (pl.col("output_tokens") < 0)
        ).height,
        "zero_output_tokens": frame.filter(pl.col("output_tokens") == 0).height,
        "out_of_order_arrivals": int((frame["arrival_s"].diff() < 0).sum() or 0),
    }


VIDUR_COLUMNS = ["arrived_at", "num_prefill_tokens", "num_decode_tokens"]


def _sniff_vidur(path: Path, head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and header_names(lines[0])[:3] == VIDUR_COLUMNS


def _scan_vidur(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    raw = pl.scan_csv(
        path,
        schema_overrides={
            "arrived_at": pl.Float64,
            "num_prefill_tokens": pl.Int64,
            "num_decode_tokens": pl.Int64,
        },
    )
    # vidur's processed traces keep arrivals in seconds from the first request
    frame = raw.select(
        pl.col("arrived_at").alias("arrival_s"),
        pl.col("num_prefill_tokens").alias("prompt_tokens"),
        pl.col("num_decode_tokens").alias("output_tokens"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("request_id"),
    )
    return conform(frame, "requests")


_REQUIRED = ("arrival_s", "prompt_tokens", "output_tokens")

FORMATS: tuple[Format, ...] = (
    Format(
        "azure-llm",
        "requests",
        "Azure LLM inference trace 2023/2024 CSV (TIMESTAMP, ContextTokens, GeneratedTokens)",
        _sniff_azure_llm,
        _scan_azure_llm,
        diagnose=csv_diagnoser(_AZURE_FIELDS, header=True),
        nonnull=_REQUIRED,
        quality=_requests_quality,
    ),
    Format(
        "vidur-trace",
        "requests",
        "vidur processed request trace CSV (arrived_at, num_prefill_tokens, num_decode_tokens)",
        _sniff_vidur,
        _scan_vidur,
        diagnose=csv_diagnoser(
            [
                Field("arrived_at", "number"),
                Field("num_prefill_tokens", "int"),
                Field("num_decode_tokens", "int"),
            ],
            header=True,
        ),
        nonnull=_REQUIRED,
        quality=_requests_quality,
    ),
    Format(
        "mooncake",
        "requests",
        "Mooncake/Kimi JSONL (timestamp ms, input_length, output_length, hash_ids)",
        _sniff_mooncake,
        _scan_mooncake,
        diagnose=_diagnose_mooncake,
        nonnull=_REQUIRED,
        quality=_requests_quality,
    ),
)
