"""Readers for distributed-tracing data: OTLP/JSON, Jaeger, Zipkin v2, Nezha CSV, Alibaba call graphs."""

from __future__ import annotations

from fleetlab.traces._formats import Format

FORMATS: tuple[Format, ...] = ()
