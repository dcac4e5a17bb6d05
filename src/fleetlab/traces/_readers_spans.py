"""Readers for distributed-tracing data: OTLP/JSON, Jaeger, Zipkin v2, Nezha CSV, Alibaba call graphs.

Each format lives in its own private module (``_read_*.py``); this one assembles them in
the order detection tries them. Every one produces the canonical ``spans`` table; see
docs/formats-spans.md for the rules (ids, times, parents, shared spans, duplicates).
"""

from __future__ import annotations

from fleetlab.traces import _read_alibaba_calls, _read_jaeger, _read_nezha, _read_otlp, _read_zipkin
from fleetlab.traces._formats import Format
from fleetlab.traces._spans_common import span_quality

_ALWAYS = ("trace_id", "span_id")

FORMATS: tuple[Format, ...] = (
    Format(
        "otlp-json",
        "spans",
        "OpenTelemetry OTLP/JSON traces (resourceSpans; also JSON Lines and api_v3 {result})",
        _read_otlp.sniff,
        _read_otlp.scan,
        nonnull=_ALWAYS,
        quality=span_quality,
    ),
    Format(
        "jaeger-json",
        "spans",
        "Jaeger JSON: UI export / query API {data:[...]}, JSON Lines of traces, model JSON",
        _read_jaeger.sniff,
        _read_jaeger.scan,
        nonnull=_ALWAYS,
        quality=span_quality,
    ),
    Format(
        "zipkin-json",
        "spans",
        "Zipkin v2 JSON span arrays (shared client/server ids kept apart)",
        _read_zipkin.sniff,
        _read_zipkin.scan,
        nonnull=_ALWAYS,
        quality=span_quality,
    ),
    Format(
        "nezha-csv",
        "spans",
        "Nezha span CSV (TraceID,SpanID,ParentID,PodName,...), a file or a folder of them",
        _read_nezha.sniff,
        _read_nezha.scan,
        diagnose=_read_nezha.diagnose,
        nonnull=(*_ALWAYS, "start_us", "duration_us"),
        quality=span_quality,
        notes=_read_nezha.notes,
    ),
    Format(
        "alibaba-callgraph",
        "spans",
        "Alibaba microservices call-graph CSV v2021/v2022 (traceid,timestamp,rpcid,um,dm,rt)",
        _read_alibaba_calls.sniff,
        _read_alibaba_calls.scan,
        diagnose=_read_alibaba_calls.diagnose,
        nonnull=_ALWAYS,
        quality=span_quality,
        notes=_read_alibaba_calls.notes,
    ),
)
