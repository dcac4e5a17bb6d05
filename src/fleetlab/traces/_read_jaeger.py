"""Jaeger JSON -> spans.

Accepted shapes (each also as JSON Lines, gzip'd or not, or a folder of such files):

* the query API / UI export ``{"data": [trace, ...], "total": ..., ...}``,
* a bare UI trace ``{"traceID", "spans", "processes"}`` (TraceWeaver's DeathStarBench
  files are one such object per line),
* the Jaeger model (protobuf-JSON) ``{"spans": [...], "processMap": [...]}`` whose ids
  are base64 bytes, ``startTime`` RFC 3339 and ``duration`` a duration string.

The parent of a span is its first ``CHILD_OF`` reference into the same trace, else its
first ``FOLLOWS_FROM`` reference into the same trace (Jaeger's own rule, extended to
async links); references into other traces are not parents.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._spans_common import (
    SPAN_KINDS,
    Bad,
    Ids,
    SpanColumns,
    as_dict,
    as_list,
    b64_id,
    data_files,
    exact_int,
    first_char,
    hex_span_id,
    is_json_name,
    json_documents,
    json_keys,
    located,
    opt_str,
    sniff_json_dir,
)

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_REF_TYPES = {
    "CHILD_OF": "CHILD_OF",
    "FOLLOWS_FROM": "FOLLOWS_FROM",
    0: "CHILD_OF",
    1: "FOLLOWS_FROM",
}
_TRUE = (True, "true", "True", "TRUE", 1, "1")


def sniff(path: Path, head: bytes) -> bool:
    """A Jaeger UI/API JSON trace, model JSON, JSON Lines of them, or a folder of them."""
    if path.is_dir():
        return sniff_json_dir(path, sniff)
    if first_char(head) not in "{[":
        return False
    keys = json_keys(head)
    if "resourceSpans" in keys:
        return False
    return "operationName" in keys and bool(keys & {"spanID", "spanId"}) and "spans" in keys


def rfc3339_us(value: str, name: str) -> int:
    """Unix microseconds (floored) of an RFC 3339 time with up to nanosecond digits."""
    m = _RFC3339.match(value.strip())
    if not m:
        raise Bad(name, "µs since epoch or an RFC 3339 time", value, f"{name} is not a time")
    day, clock, frac, zone = m.groups()
    zone = "+00:00" if zone in "Zz" else zone
    try:
        whole = datetime.fromisoformat(f"{day}T{clock}{zone}")
    except ValueError:
        raise Bad(name, "a valid RFC 3339 time", value, f"{name} is not a valid time") from None
    micros = int((frac or "")[:6].ljust(6, "0"))
    return int(whole.timestamp()) * 1_000_000 + micros


def duration_us(value: str, name: str) -> int:
    """Microseconds (floored) of a Go/protobuf duration string such as '5000ns' or '1.5s'."""
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise Bad(
            name, "µs or a duration like '5000ns' / '1.5s'", value, f"{name} is not a duration"
        )
    total_ns = 0
    for number, unit in parts:
        whole, _, frac = number.partition(".")
        scale = _UNIT_NS[unit]
        total_ns += int(whole or 0) * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
    return sign * (total_ns // 1000)


def _time(value: object, name: str) -> int | None:
    if type(value) is int:
        return value
    if value is None:
        return None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return rfc3339_us(value, name)
    return exact_int(value, name)


def _duration(value: object, name: str) -> int | None:
    if type(value) is int:
        return value
    if value is None:
        return None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return duration_us(value, name)
    return exact_int(value, name)


def _tag_value(tag: dict[str, Any]) -> object:
    if "value" in tag:
        return tag["value"]
    for key in ("vStr", "vBool", "vInt64", "vFloat64", "vBinary"):
        if key in tag:
            return tag[key]
    return None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _tags(tags: list[Any]) -> tuple[str, str | None, str | None]:
    """(status, kind, peer_service) from a span's tags."""
    status, kind, peer = "unset", None, None
    error = False
    for j, tag in enumerate(tags):
        if type(tag) is not dict:
            raise Bad(f"tags[{j}]", "a JSON object", tag, "tag is not an object")
        key = tag.get("key")
        if key == "span.kind":
            value = _tag_value(tag)
            text = value.lower() if isinstance(value, str) else None
            kind = text if text in SPAN_KINDS else None
        elif key == "error":
            error = error or _tag_value(tag) in _TRUE
        elif key == "http.status_code":
            value = _tag_value(tag)
            code = value if isinstance(value, int) else _int_or_none(value)
            error = error or (code is not None and code >= 500)
        elif key == "otel.status_code":
            value = _tag_value(tag)
            if value == "ERROR":
                error = True
            elif value == "OK":
                status = "ok"
        elif key == "peer.service":
            value = _tag_value(tag)
            peer = value if isinstance(value, str) and value else peer
    return ("error" if error else status), kind, peer


def _parent(span: dict[str, Any], trace_id: str, model: bool, ids: Ids) -> str | None:
    child_of = follows = None
    for j, ref in enumerate(as_list(span.get("references"), "references")):
        try:
            ref = as_dict(ref, "")
            rtype = _REF_TYPES.get(ref.get("refType", "CHILD_OF"))
            if rtype is None:
                raise Bad(
                    "refType",
                    "CHILD_OF or FOLLOWS_FROM",
                    ref.get("refType"),
                    "unknown reference type",
                )
            if model:
                ref_trace = b64_id(ref.get("traceId"), "traceId", trace=True)
                ref_span = b64_id(ref.get("spanId"), "spanId", trace=False)
            else:
                ref_trace = ids.trace(ref.get("traceID", trace_id), "traceID")
                ref_span = ids.span(ref.get("spanID"), "spanID")
        except Bad as bad:
            bad.field = f"references[{j}]" + (f".{bad.field}" if bad.field else "")
            raise
        if ref_trace != trace_id:
            continue
        if rtype == "CHILD_OF" and child_of is None:
            child_of = ref_span
        elif rtype == "FOLLOWS_FROM" and follows is None:
            follows = ref_span
    if child_of is None and follows is None and span.get("parentSpanID"):
        child_of = hex_span_id(span["parentSpanID"], "parentSpanID")
    return child_of if child_of is not None else follows


def _processes(trace: dict[str, Any]) -> dict[str, str | None]:
    services: dict[str, str | None] = {}
    procs = trace.get("processes")
    if procs is not None:
        for pid, proc in as_dict(procs, "processes").items():
            proc = as_dict(proc, f"processes.{pid}")
            services[pid] = opt_str(proc.get("serviceName"), f"processes.{pid}.serviceName")
    for j, item in enumerate(as_list(trace.get("processMap"), "processMap")):
        item = as_dict(item, f"processMap[{j}]")
        proc = as_dict(item.get("process") or {}, f"processMap[{j}].process")
        proc_id = opt_str(item.get("processID"), f"processMap[{j}].processID")
        if proc_id:
            services[proc_id] = opt_str(
                proc.get("serviceName"), f"processMap[{j}].process.serviceName"
            )
    return services


def _span(
    cols: SpanColumns, span: Any, services: dict[str, str | None], trace_default: object
) -> None:
    span = as_dict(span, "")
    model = "spanId" in span and "spanID" not in span
    if model:
        trace_id = b64_id(span.get("traceId", trace_default), "traceId", trace=True)
        span_id = b64_id(span.get("spanId"), "spanId", trace=False)
    else:
        trace_id = cols.ids.trace(span.get("traceID", trace_default), "traceID")
        span_id = cols.ids.span(span.get("spanID"), "spanID")
    if "process" in span and span["process"] is not None:
        proc = as_dict(span["process"], "process")
        service = opt_str(proc.get("serviceName"), "process.serviceName")
    else:
        pid = span.get("processID")
        if pid not in services:
            raise Bad(
                "processID",
                f"one of the trace's processes {sorted(services)[:5]}",
                pid,
                "span refers to an unknown process",
            )
        service = services[pid]
    status, kind, peer = _tags(as_list(span.get("tags"), "tags"))
    cols.add(
        trace_id,
        span_id,
        _parent(span, trace_id, model, cols.ids),
        service,
        opt_str(span.get("operationName"), "operationName"),
        _time(span.get("startTime"), "startTime"),
        _duration(span.get("duration"), "duration"),
        status,
        kind,
        peer,
    )


def _trace(cols: SpanColumns, trace: Any, path: Path, line: int | None, where: str) -> None:
    try:
        trace = as_dict(trace, where or "$")
        if "spans" not in trace:
            raise Bad(
                f"{where}.spans" if where else "spans",
                "a Jaeger trace with spans",
                sorted(trace)[:8],
                "not a Jaeger trace",
            )
        services = _processes(trace)
        trace_default = trace.get("traceID")
        for k, span in enumerate(as_list(trace["spans"], "spans")):
            try:
                _span(cols, span, services, trace_default)
            except Bad as bad:
                raise located(
                    path, bad, row=line, prefix=f"{where}.spans[{k}]".lstrip(".")
                ) from None
    except Bad as bad:
        raise located(path, bad, row=line, prefix=where) from None


def _document(cols: SpanColumns, doc: Any, path: Path, line: int | None) -> None:
    if isinstance(doc, dict) and "data" in doc and "spans" not in doc:
        data = doc["data"]
        if not isinstance(data, list):
            raise InputFormatError(
                path,
                "'data' is not an array",
                row=line,
                field="data",
                expected="an array of Jaeger traces",
                found=type(data).__name__,
            )
        for i, trace in enumerate(data):
            _trace(cols, trace, path, line, f"data[{i}]")
    elif isinstance(doc, list):
        for i, trace in enumerate(doc):
            _trace(cols, trace, path, line, f"[{i}]")
    else:
        _trace(cols, doc, path, line, "")


def parse(path: Path) -> pl.DataFrame:
    """Read a Jaeger JSON file (or a folder of them) into spans."""
    cols = SpanColumns()
    files = data_files(path, is_json_name)
    if not files:
        raise InputFormatError(path, "no Jaeger JSON files in this folder", expected="*.json files")
    for file in files:
        for line, doc in json_documents(file):
            _document(cols, doc, file, line)
    return cols.frame(path)


def scan(path: Path) -> pl.LazyFrame:
    """The spans of a Jaeger JSON file as a lazy canonical table."""
    return parse(path).lazy()
