"""OpenTelemetry OTLP/JSON -> spans.

Reads an ``ExportTraceServiceRequest`` / ``TracesData`` object (``resourceSpans`` ->
``scopeSpans`` (or the pre-1.0 ``instrumentationLibrarySpans``) -> ``spans``), JSON Lines
of such objects (the collector's file exporter), and Jaeger's api_v3 wrapper
``{"result": {...}}``. Ids are hex strings as the OTLP/JSON spec says; they are never
base64-decoded (a base64 id is reported as an error, not silently turned into bytes).
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
    as_list,
    data_files,
    exact_int,
    first_char,
    is_json_name,
    json_documents,
    json_keys,
    located,
    opt_str,
    sniff_json_dir,
)

_KINDS = {
    0: None,
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
    "SPAN_KIND_UNSPECIFIED": None,
    "SPAN_KIND_INTERNAL": "internal",
    "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client",
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
}
_STATUS = {
    0: "unset",
    1: "ok",
    2: "error",
    "STATUS_CODE_UNSET": "unset",
    "STATUS_CODE_OK": "ok",
    "STATUS_CODE_ERROR": "error",
}


def sniff(path: Path, head: bytes) -> bool:
    """An OTLP/JSON object (or JSON Lines / api_v3 wrapper of them), or a folder of them."""
    if path.is_dir():
        return sniff_json_dir(path, sniff)
    if first_char(head) != "{":
        return False
    keys = json_keys(head)
    return "resourceSpans" in keys


def _attr_string(attrs: list[Any], key: str, name: str) -> str | None:
    for j, attr in enumerate(attrs):
        attr = as_dict(attr, f"{name}[{j}]")
        if attr.get("key") == key:
            value = as_dict(attr.get("value", {}), f"{name}[{j}].value")
            return opt_str(value.get("stringValue"), f"{name}[{j}].value.stringValue")
    return None


def _span(cols: SpanColumns, span: Any, service: str | None) -> None:
    span = as_dict(span, "")
    trace_id = cols.ids.trace(span.get("traceId"), "traceId")
    span_id = cols.ids.span(span.get("spanId"), "spanId")
    parent = span.get("parentSpanId")
    parent_id = cols.ids.span(parent, "parentSpanId") if parent else None
    kind_raw = span.get("kind", 0)
    if kind_raw not in _KINDS or isinstance(kind_raw, bool):
        raise Bad("kind", "0-5 or SPAN_KIND_*", kind_raw, "unknown span kind")
    start = exact_int(span.get("startTimeUnixNano", 0), "startTimeUnixNano")
    end = exact_int(span.get("endTimeUnixNano", 0), "endTimeUnixNano")
    status = as_dict(span.get("status") or {}, "status")
    code = status.get("code", 0)
    if code not in _STATUS or isinstance(code, bool):
        raise Bad("status.code", "0, 1, 2 or STATUS_CODE_*", code, "unknown status code")
    # proto3: an omitted (0) timestamp means unknown
    start_us = start // 1000 if start else None
    duration_us = (end - start) // 1000 if start and end else None
    cols.add(
        trace_id,
        span_id,
        parent_id,
        service,
        opt_str(span.get("name"), "name"),
        start_us,
        duration_us,
        _STATUS[code],
        _KINDS[kind_raw],
        _attr_string(as_list(span.get("attributes"), "attributes"), "peer.service", "attributes"),
    )


def _document(cols: SpanColumns, doc: Any, path: Path, line: int | None) -> None:
    prefix = ""
    try:
        doc = as_dict(doc, "$")
        if "result" in doc and "resourceSpans" not in doc:  # Jaeger api_v3 wrapper
            doc = as_dict(doc["result"], "result")
            prefix = "result."
        if "resourceSpans" not in doc:
            raise Bad(
                "resourceSpans",
                "an OTLP/JSON object with resourceSpans",
                sorted(doc)[:8],
                "not an OTLP/JSON object",
            )
        for i, rs in enumerate(as_list(doc["resourceSpans"], "resourceSpans")):
            where = f"{prefix}resourceSpans[{i}]"
            rs = as_dict(rs, where)
            resource = as_dict(rs.get("resource") or {}, f"{where}.resource")
            service = _attr_string(
                as_list(resource.get("attributes"), f"{where}.resource.attributes"),
                "service.name",
                f"{where}.resource.attributes",
            )
            scopes_key = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
            for j, scope in enumerate(as_list(rs.get(scopes_key), f"{where}.{scopes_key}")):
                swhere = f"{where}.{scopes_key}[{j}]"
                scope = as_dict(scope, swhere)
                for k, span in enumerate(as_list(scope.get("spans"), f"{swhere}.spans")):
                    try:
                        _span(cols, span, service)
                    except Bad as bad:
                        raise located(path, bad, row=line, prefix=f"{swhere}.spans[{k}]") from None
    except Bad as bad:
        raise located(path, bad, row=line, prefix="") from None


def parse(path: Path) -> pl.DataFrame:
    """Read an OTLP/JSON file (or a folder of them) into spans."""
    cols = SpanColumns()
    files = data_files(path, lambda p: is_json_name(p))
    if not files:
        raise InputFormatError(path, "no OTLP/JSON files in this folder", expected="*.json files")
    for file in files:
        for line, doc in json_documents(file):
            _document(cols, doc, file, line)
    return cols.frame(path)


def scan(path: Path) -> pl.LazyFrame:
    """The spans of an OTLP/JSON file as a lazy canonical table."""
    return parse(path).lazy()
