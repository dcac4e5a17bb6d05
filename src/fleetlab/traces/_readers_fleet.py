"""Readers for fleet telemetry: LLM requests, serverless invocations, VMs, usage, GPU pods."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fleetlab.traces._formats import Format, head_lines
from fleetlab.traces._schemas import conform


def _sniff_azure_llm(path: Path, head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and lines[0].replace(" ", "") == "TIMESTAMP,ContextTokens,GeneratedTokens"


def _scan_azure_llm(path: Path) -> pl.LazyFrame:
    raw = pl.scan_csv(path, schema={"TIMESTAMP": pl.String, "ContextTokens": pl.Int64, "GeneratedTokens": pl.Int64})
    ts = pl.col("TIMESTAMP").str.to_datetime(time_unit="us", strict=True)
    frame = raw.select(
        ((ts - ts.min()).dt.total_microseconds() / 1e6).alias("arrival_s"),
        pl.col("ContextTokens").alias("prompt_tokens"),
        pl.col("GeneratedTokens").alias("output_tokens"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("request_id"),
    )
    return conform(frame, "requests")


FORMATS: tuple[Format, ...] = (
    Format(
        "azure-llm",
        "requests",
        "Azure LLM inference trace 2023/2024 CSV (TIMESTAMP, ContextTokens, GeneratedTokens)",
        _sniff_azure_llm,
        _scan_azure_llm,
    ),
)
