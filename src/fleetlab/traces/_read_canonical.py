"""Bring-your-own data: CSV, JSON-lines or Parquet whose columns already carry the names
of a canonical table (see ``TABLES``) read as that table.

The first table whose required columns are all in the header wins (tables are tried in
the order of ``TABLES``); known columns are cast to their canonical dtype, other columns
are kept after them. List columns (``prefix_ids``, the ServeGen PDFs) need JSON-lines or
Parquet: CSV cannot hold them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import (
    Field,
    Kind,
    check_last_line,
    csv_diagnoser,
    diagnose_ndjson,
    header_names,
)
from fleetlab.traces._formats import Format, head_lines, read_head
from fleetlab.traces._schemas import TABLES, conform

#: columns that must have a value in every row of a bring-your-own table (other required
#: columns must be present but may be empty where the source does not know them)
KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("arrival_s", "prompt_tokens", "output_tokens"),
    "invocations": ("app", "function", "count"),
    "vms": ("vm_id",),
    "usage": ("vm_id", "ts_s"),
    "spans": ("trace_id", "span_id", "start_us"),
    "flows": ("ts_us", "src", "dst"),
    "client_profiles": ("client", "window_start_s"),
    "nodes": ("node_id",),
}


def _table_for(names: list[str]) -> str | None:
    present = set(names)
    for name, schema in TABLES.items():
        if set(schema.required) <= present:
            return name
    return None


def _csv_header(head: bytes) -> list[str]:
    lines = head_lines(head, 1)
    return header_names(lines[0]) if lines and not lines[0].lstrip().startswith("{") else []


def _json_keys(head: bytes) -> list[str]:
    lines = head_lines(head, 1)
    if not lines or not lines[0].lstrip().startswith("{"):
        return []
    obj = json.loads(lines[0])
    return list(obj) if isinstance(obj, dict) else []


def _csv_sniffer(table: str) -> Callable[[Path, bytes], bool]:
    def sniff(path: Path, head: bytes) -> bool:
        return path.is_file() and _table_for(_csv_header(head)) == table

    return sniff


def _ndjson_sniffer(table: str) -> Callable[[Path, bytes], bool]:
    def sniff(path: Path, head: bytes) -> bool:
        return path.is_file() and _table_for(_json_keys(head)) == table

    return sniff


def _kind(dtype: pl.DataType) -> Kind:
    if dtype == pl.String:
        return "text"
    if isinstance(dtype, pl.List):
        return "int_list"
    return "int" if dtype.is_integer() else "number"


def _scan_csv(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    names = _csv_header(read_head(path))
    table = _table_for(names)
    if table is None:
        raise InputFormatError(
            path, "no canonical table's columns in the header", row=1, found=names
        )
    columns = TABLES[table].columns
    overrides = {
        n: columns[n] for n in names if n in columns and not isinstance(columns[n], pl.List)
    }
    raw = pl.scan_csv(path, schema_overrides=overrides, infer_schema_length=10_000)
    return conform(raw, table, keep_extra=True)


def _scan_ndjson(path: Path) -> pl.LazyFrame:
    keys = _json_keys(read_head(path))
    table = _table_for(keys)
    if table is None:
        raise InputFormatError(
            path, "no canonical table's columns in the first object", row=1, found=keys
        )
    columns = TABLES[table].columns
    inferred = pl.scan_ndjson(path, infer_schema_length=10_000).collect_schema()
    overrides = {k: columns[k] for k in inferred.names() if k in columns}
    raw = pl.scan_ndjson(path, infer_schema_length=10_000, schema_overrides=overrides)
    return conform(raw, table, keep_extra=True)


def _diagnose_csv(path: Path) -> InputFormatError | None:
    names = _csv_header(read_head(path))
    table = _table_for(names)
    if table is None:
        return None
    schema = TABLES[table]
    fields = [
        Field(n, _kind(schema.columns[n]), required=n in KEYS.get(table, ()))
        for n in names
        if n in schema.columns
    ]
    return csv_diagnoser(fields, header=True)(path)


def _diagnose_ndjson(path: Path) -> InputFormatError | None:
    keys = _json_keys(read_head(path))
    table = _table_for(keys)
    if table is None:
        return None
    schema = TABLES[table]
    fields = [
        Field(n, _kind(d), required=n in KEYS.get(table, ()))
        for n, d in schema.columns.items()
        if n in keys or n in schema.required
    ]
    return diagnose_ndjson(path, fields)


def _formats() -> tuple[Format, ...]:
    out: list[Format] = []
    for table, schema in TABLES.items():
        required = tuple(schema.required)
        keys = KEYS.get(table, required)
        out.append(
            Format(
                f"{table}-csv",
                table,
                f"CSV with the canonical {table} columns ({', '.join(required)}, ...)",
                _csv_sniffer(table),
                _scan_csv,
                diagnose=_diagnose_csv,
                nonnull=keys,
            )
        )
        out.append(
            Format(
                f"{table}-jsonl",
                table,
                f"JSON lines with the canonical {table} keys ({', '.join(required)}, ...)",
                _ndjson_sniffer(table),
                _scan_ndjson,
                diagnose=_diagnose_ndjson,
                nonnull=keys,
            )
        )
    return tuple(out)


FORMATS: tuple[Format, ...] = _formats()
