"""The canonical tables every reader produces (see docs/formats.md).

Each table is a polars schema: the required columns come first, optional ones after.
Units are in the column names where they could be ambiguous (``_s``, ``_us``, ``_ms``,
``_gb``, ``_mb``). Readers produce these exact dtypes through :func:`conform`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from fleetlab.errors import InputFormatError

TableName = Literal[
    "requests", "invocations", "vms", "usage", "spans", "flows", "client_profiles", "nodes"
]


@dataclass(frozen=True)
class TableSchema:
    """A canonical table: its name, what one row is, required and optional columns.

    ``dictionary`` names the String columns with few distinct values (service and
    operation names, status, kind) that canonical Parquet files store dictionary-encoded
    with an Arrow dictionary type (Polars Categorical): readers that scan the file get
    32-bit codes without hashing a string per row. In memory, and through
    :func:`conform`, they stay String.
    """

    name: str
    row: str
    required: dict[str, pl.DataType]
    optional: dict[str, pl.DataType]
    dictionary: tuple[str, ...] = ()

    @property
    def columns(self) -> dict[str, pl.DataType]:
        """All columns in canonical order."""
        return {**self.required, **self.optional}


_STR = pl.String()
_F64 = pl.Float64()
_I64 = pl.Int64()

TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        TableSchema(
            "requests",
            "an LLM inference request",
            {"arrival_s": _F64, "prompt_tokens": _I64, "output_tokens": _I64},
            {
                "request_id": _I64,
                "tenant": _STR,
                "prefix_ids": pl.List(pl.Int64()),
            },
        ),
        TableSchema(
            "invocations",
            "a serverless invocation, or one function's invocation count in one minute",
            {"app": _STR, "function": _STR, "count": _I64},
            {
                "ts_s": _F64,
                "minute": _I64,
                "duration_ms": _F64,
                "memory_mb": _F64,
                "trigger": _STR,
                "owner": _STR,
            },
        ),
        TableSchema(
            "vms",
            "a VM, container, pod or batch instance lifetime",
            {"vm_id": _STR, "created_s": _F64, "deleted_s": _F64, "cores": _F64, "memory_gb": _F64},
            {
                "tenant": _STR,
                "priority": _STR,
                "p95_cpu": _F64,
                "cpu_avg": _F64,
                "gpus": _F64,
                "gpu_milli": _I64,
                "gpu_model": _STR,
                "scheduled_s": _F64,
                "job": _STR,
                "task": _STR,
                "status": _STR,
                "cpu_max": _F64,
                "category": _STR,
                "deployment": _STR,
                "memory_norm": _F64,
                "instances": _I64,
                "used_cores": _F64,
                "used_memory_norm": _F64,
            },
        ),
        TableSchema(
            "usage",
            "one utilization sample of one VM",
            {"vm_id": _STR, "ts_s": _F64, "cpu_avg": _F64},
            {"cpu_max": _F64, "cpu_min": _F64},
        ),
        TableSchema(
            "spans",
            "a span: one RPC or unit of work inside a trace",
            {
                "trace_id": _STR,
                "span_id": _STR,
                "parent_id": _STR,
                "service": _STR,
                "operation": _STR,
                "start_us": _I64,
                "duration_us": _I64,
                "status": _STR,
            },
            {"kind": _STR, "peer_service": _STR},
            dictionary=("service", "operation", "status", "kind", "peer_service"),
        ),
        TableSchema(
            "flows",
            "a connection or request seen on the network, without trace context",
            {"ts_us": _I64, "src": _STR, "dst": _STR},
            {"port": _I64, "bytes": _I64, "duration_us": _I64},
        ),
        TableSchema(
            "client_profiles",
            "one client's load in one time window (rates and size distributions, not requests)",
            {"client": _STR, "window_start_s": _F64, "window_s": _F64, "rate_per_s": _F64},
            {
                "cv": _F64,
                "pattern": _STR,
                "pattern_shape": _F64,
                "pattern_scale": _F64,
                "model": _STR,
                "input_tokens_values": pl.List(pl.Float64()),
                "input_tokens_probs": pl.List(pl.Float64()),
                "output_tokens_values": pl.List(pl.Float64()),
                "output_tokens_probs": pl.List(pl.Float64()),
                "dist_window_s": _F64,
                "image_tokens_values": pl.List(pl.Float64()),
                "image_tokens_probs": pl.List(pl.Float64()),
                "reason_ratio_values": pl.List(pl.Float64()),
                "reason_ratio_probs": pl.List(pl.Float64()),
            },
        ),
        TableSchema(
            "nodes",
            "a server of a cluster: its capacity in each dimension",
            {"node_id": _STR, "cores": _F64, "memory_gb": _F64},
            {"gpus": _I64, "gpu_model": _STR, "model": _STR},
        ),
    )
}


def conform(
    frame: pl.LazyFrame, table: str, *, keep_extra: bool = False, keep_dictionary: bool = False
) -> pl.LazyFrame:
    """Cast ``frame`` to the canonical schema of ``table``.

    Missing optional columns are added as nulls, columns are put in canonical order and
    cast to their canonical dtype. Extra columns are dropped unless ``keep_extra``;
    ``keep_dictionary`` leaves the table's ``dictionary`` columns Categorical where the
    frame has them so (a canonical Parquet scan), for readers that work on the codes.
    Raises ``KeyError`` for an unknown table and ``ValueError`` when a required column
    is missing (readers turn that into an :class:`InputFormatError` naming the file).
    """
    schema = TABLES[table]
    given = frame.collect_schema()
    present = given.names()
    missing = [c for c in schema.required if c not in present]
    if missing:
        raise ValueError(f"missing required column(s) {missing} for table {table!r}")
    kept = {c for c in schema.dictionary if keep_dictionary and given.get(c) == pl.Categorical}
    exprs = [
        (
            pl.col(c) if c in kept else (pl.col(c) if c in present else pl.lit(None)).cast(dtype)
        ).alias(c)
        for c, dtype in schema.columns.items()
    ]
    if keep_extra:
        exprs += [pl.col(c) for c in present if c not in schema.columns]
    return frame.select(exprs)


def for_storage(frame: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """``frame`` as canonical Parquet stores ``table``: its ``dictionary`` columns Categorical.

    Polars writes a Categorical column as a Parquet dictionary with an Arrow dictionary
    type, which a Parquet scan reads back as codes; :func:`conform` casts it back to
    String, so files written before (String columns) and after read the same. Columns
    the frame lacks, and tables without dictionary columns, are left alone.
    """
    names = frame.collect_schema().names()
    cols = [c for c in TABLES[table].dictionary if c in names]
    if not cols:
        return frame
    return frame.with_columns(pl.col(c).cast(pl.String).cast(pl.Categorical) for c in cols)


def table_of(frame: pl.LazyFrame | pl.DataFrame) -> str | None:
    """The canonical table whose required columns ``frame`` has, or None."""
    names = set(frame.collect_schema().names())
    for name, schema in TABLES.items():
        if set(schema.required) <= names:
            return name
    return None


def check_columns(path: object, found: list[str], expected: list[str]) -> None:
    """Raise :class:`InputFormatError` unless every ``expected`` column is in ``found``."""
    missing = [c for c in expected if c not in found]
    if missing:
        raise InputFormatError(
            path,
            f"missing column(s) {missing}",
            row=1,
            expected=f"columns {expected}",
            found=found,
        )
