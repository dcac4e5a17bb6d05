"""Zipkin v2 JSON -> spans.

A file is a JSON array of v2 spans (the ``POST /api/v2/spans`` body), an array of such
arrays (the ``GET /api/v2/traces`` answer), or JSON Lines of either; a folder of such
files reads as one table.

Shared span ids (B3 "join"): the client and the server half of one RPC carry the same
``id``; the server half has ``"shared": true``. Both halves are kept. The server half
gets ``span_id = id + ":server"`` and the client half (``id``) as its parent, so the call
appears once as a client->server edge and neither half is lost or double-counted. A
span whose ``parentId`` names a shared id hangs under the server half when it runs in
the server's service (work done inside the server) or when no client half was
reported, else under the client half. If the client half was not reported, the server
half keeps the original ``parentId``.
Spans without ``timestamp`` / ``duration`` (only one side reported) are kept with null
``start_us`` / ``duration_us`` and counted. Service names are lower-cased, as Zipkin does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._spans_common import (
    Bad,
    SpanColumns,
    as_dict,
    data_files,
    exact_int,
    first_char,
    hex_span_id,
    hex_trace_id,
    is_json_name,
    json_documents,
    json_keys,
    located,
    opt_str,
    sniff_json_dir,
)

SERVER_SUFFIX = ":server"
_KINDS = {"CLIENT": "client", "SERVER": "server", "PRODUCER": "producer", "CONSUMER": "consumer"}


def sniff(path: Path, head: bytes) -> bool:
    """A Zipkin v2 JSON span array (not v1: no binaryAnnotations), or a folder of them."""
    if path.is_dir():
        return sniff_json_dir(path, sniff)
    if first_char(head) != "[":
        return False
    keys = json_keys(head)
    return (
        "traceId" in keys
        and "id" in keys
        and not keys & {"binaryAnnotations", "operationName", "resourceSpans"}
    )


def _service(endpoint: object, name: str) -> str | None:
    if endpoint is None:
        return None
    service = opt_str(as_dict(endpoint, name).get("serviceName"), f"{name}.serviceName")
    return service.lower() if service else None


def _endpoint_key(endpoint: object) -> tuple[object, ...]:
    if not isinstance(endpoint, dict):
        return (None, None, None)
    name = endpoint.get("serviceName")
    return (
        name.lower() if isinstance(name, str) else None,
        endpoint.get("ipv4") or endpoint.get("ipv6"),
        endpoint.get("port"),
    )


def _span(span: Any) -> tuple[list[Any], bool, tuple[object, ...]]:
    """One v2 span as (canonical values, shared flag, local endpoint key)."""
    span = as_dict(span, "")
    trace_id = hex_trace_id(span.get("traceId"), "traceId")
    span_id = hex_span_id(span.get("id"), "id")
    parent = span.get("parentId")
    parent_id = hex_span_id(parent, "parentId") if parent is not None else None
    kind_raw = span.get("kind")
    if kind_raw is not None and kind_raw not in _KINDS:
        raise Bad("kind", "CLIENT, SERVER, PRODUCER or CONSUMER", kind_raw, "unknown span kind")
    start = span.get("timestamp")
    duration = span.get("duration")
    tags = as_dict(span.get("tags") or {}, "tags")
    flag = span.get("shared", False)
    if flag is None:
        flag = False
    if not isinstance(flag, bool):
        raise Bad("shared", "true or false", flag, "shared is not a boolean")
    values = [
        trace_id,
        span_id,
        parent_id,
        _service(span.get("localEndpoint"), "localEndpoint"),
        opt_str(span.get("name"), "name"),
        exact_int(start, "timestamp") if start is not None else None,
        exact_int(duration, "duration") if duration is not None else None,
        "error" if "error" in tags else "unset",
        _KINDS.get(kind_raw) if kind_raw is not None else None,
        _service(span.get("remoteEndpoint"), "remoteEndpoint"),
    ]
    return values, flag, _endpoint_key(span.get("localEndpoint"))


def _spans(
    records: list[tuple[list[Any], bool, tuple[object, ...]]],
    items: list[Any],
    path: Path,
    line: int | None,
    where: str,
) -> None:
    for k, item in enumerate(items):
        if isinstance(item, list):  # a list of traces
            _spans(records, item, path, line, f"{where}[{k}]")
            continue
        try:
            records.append(_span(item))
        except Bad as bad:
            raise located(path, bad, row=line, prefix=f"{where}[{k}]") from None


def merge_fragments(
    records: list[tuple[list[Any], bool, tuple[object, ...]]],
) -> tuple[list[list[Any]], list[bool]]:
    """Merge the pieces of one span that a reporter sent separately (Zipkin's merge rule).

    Pieces have the same trace id, span id and local endpoint, and compatible kinds and
    shared flags (equal, or one piece has no kind). Each field takes the first non-null
    value, the piece with a kind first. Returns the merged rows and their shared flags.
    """
    groups: dict[tuple[object, ...], list[int]] = {}
    rows: list[list[Any]] = []
    flags: list[bool] = []
    for values, flag, endpoint in records:
        key = (values[0], values[1], endpoint)
        merged = False
        for i in groups.get(key, ()):
            other, kind = rows[i], values[8]
            if kind is None or other[8] is None or (kind == other[8] and flag == flags[i]):
                if other[8] is None and kind is not None:
                    rows[i] = [
                        v if v is not None else o for v, o in zip(values, other, strict=True)
                    ]
                    flags[i] = flag
                else:
                    rows[i] = [
                        o if o is not None else v for o, v in zip(other, values, strict=True)
                    ]
                if "error" in (other[7], values[7]):
                    rows[i][7] = "error"
                merged = True
                break
        if not merged:
            groups.setdefault(key, []).append(len(rows))
            rows.append(values)
            flags.append(flag)
    return rows, flags


def join_shared(frame: pl.DataFrame, shared: pl.Series) -> pl.DataFrame:
    """Apply the shared-span-id rule of the module docstring to a frame of raw spans."""
    df = frame.with_columns(shared.alias("_shared"), pl.int_range(pl.len()).alias("_row"))
    # a server span that shares its id with a client span of the same trace is a shared
    # half even when the reporter forgot the flag
    has_client = (
        df.filter(~pl.col("_shared") & (pl.col("kind") != "server").fill_null(True))
        .select("trace_id", "span_id")
        .unique()
        .with_columns(pl.lit(True).alias("_client"))
    )
    df = df.join(has_client, on=["trace_id", "span_id"], how="left").with_columns(
        pl.col("_client").fill_null(False)
    )
    df = df.with_columns(
        (
            pl.col("_shared") | ((pl.col("kind") == "server").fill_null(False) & pl.col("_client"))
        ).alias("_half")
    )
    halves = (
        df.filter(pl.col("_half"))
        .select(
            "trace_id",
            pl.col("span_id").alias("parent_id"),
            pl.col("service").alias("_half_service"),
        )
        .unique(subset=["trace_id", "parent_id"], keep="first")
    )
    df = df.join(halves, on=["trace_id", "parent_id"], how="left").join(
        has_client.rename({"span_id": "parent_id", "_client": "_parent_client"}),
        on=["trace_id", "parent_id"],
        how="left",
    )
    to_server = (
        ~pl.col("_half")
        & pl.col("_half_service").is_not_null()
        & (
            (pl.col("_half_service") == pl.col("service")).fill_null(False)
            | pl.col("_parent_client").is_null()
        )
    )
    df = df.with_columns(
        pl.when(pl.col("_half") & pl.col("_client"))
        .then(pl.col("span_id"))
        .when(to_server)
        .then(pl.col("parent_id") + SERVER_SUFFIX)
        .otherwise(pl.col("parent_id"))
        .alias("parent_id"),
        pl.when(pl.col("_half"))
        .then(pl.col("span_id") + SERVER_SUFFIX)
        .otherwise(pl.col("span_id"))
        .alias("span_id"),
    )
    return df.sort("_row").select(frame.columns)


def parse(path: Path) -> pl.DataFrame:
    """Read a Zipkin v2 JSON file (or folder) into spans."""
    records: list[tuple[list[Any], bool, tuple[object, ...]]] = []
    files = data_files(path, is_json_name)
    if not files:
        raise InputFormatError(path, "no Zipkin JSON files in this folder", expected="*.json files")
    for file in files:
        for line, doc in json_documents(file):
            if not isinstance(doc, list):
                raise InputFormatError(
                    file,
                    "not a Zipkin v2 span array",
                    row=line,
                    expected="a JSON array of spans",
                    found=type(doc).__name__,
                )
            _spans(records, doc, file, line, "")
    rows, shared = merge_fragments(records)
    cols = SpanColumns()
    for row in rows:
        cols.add(*row)
    return join_shared(cols.frame(path), pl.Series(shared, dtype=pl.Boolean))


def scan(path: Path) -> pl.LazyFrame:
    """The spans of a Zipkin v2 JSON file as a lazy canonical table."""
    return parse(path).lazy()
