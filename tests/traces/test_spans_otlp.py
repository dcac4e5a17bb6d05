"""OTLP/JSON reader: the real fixtures of otel-jaeger-fixtures and hand-made edge cases."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError

FIX = "otel-jaeger-fixtures"


def _otlp(spans: list[dict], service: str | None = "svc") -> dict:
    attrs = [{"key": "service.name", "value": {"stringValue": service}}] if service else []
    return {
        "resourceSpans": [
            {"resource": {"attributes": attrs}, "scopeSpans": [{"scope": {}, "spans": spans}]}
        ]
    }


def _span(**kw: object) -> dict:
    base = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "op",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000002000000",
        "kind": 2,
    }
    base.update(kw)
    return base


def test_proto_example_upper_case_hex_ids_are_lowered(shared_data: Path) -> None:
    path = shared_data / FIX / "opentelemetry-proto" / "trace.json"
    assert traces.detect(path).name == "otlp-json"
    row = traces.load(path).row(0, named=True)
    assert row == {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "parent_id": "eee19b7ec3c1b173",
        "service": "my.service",
        "operation": "I'm a server span",
        "start_us": 1544712660000000,
        "duration_us": 1_000_000,
        "status": "unset",
        "kind": "server",
        "peer_service": None,
    }


def test_kinds_status_and_peer_service(shared_data: Path) -> None:
    frame = traces.load(shared_data / FIX / "jaeger" / "otel_traces_01.json")
    assert frame["kind"].to_list() == ["server", "client", "producer", "consumer"]
    assert set(frame["status"]) == {"error"}
    assert set(frame["peer_service"]) == {"service-y"}
    assert frame["trace_id"][0] == "00000000000000010000000000000000"


def test_api_v3_wrapper_and_empty_resource(shared_data: Path) -> None:
    path = shared_data / FIX / "jaeger" / "apiv3_snapshot_GetTrace.json"
    row = traces.load(path).row(0, named=True)
    # a 128-bit id whose high half is zero is written as its low 16 digits (Jaeger's rule)
    assert row["trace_id"] == "0000000000000001"
    assert row["service"] is None and row["start_us"] is None and row["duration_us"] is None
    assert (row["status"], row["kind"]) == ("error", "server")


def test_json_lines_equal_combined_object(shared_data: Path) -> None:
    lines = traces.load(shared_data / FIX / "jaeger-ui" / "otlp2jaeger-multi-in.json.txt")
    combined = traces.load(shared_data / FIX / "jaeger-ui" / "otlp2jaeger-multi-in-combined.json")
    assert lines.equals(combined)
    assert lines.height == 4 and lines["parent_id"].null_count() == 1


def test_example_trace_three_resources(shared_data: Path) -> None:
    frame = traces.load(shared_data / FIX / "jaeger" / "example_trace.json")
    assert frame.height == 5
    assert sorted(set(frame["service"])) == [
        "example-service-1",
        "example-service-2",
        "example-service-3",
    ]


def test_big_int64_times_are_exact(tmp_path: Path) -> None:
    # 1700000000123456789 ns is above 2**53: a float parser would round it
    doc = _otlp(
        [_span(startTimeUnixNano="1700000000123456789", endTimeUnixNano=1700000000123999999)]
    )
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    row = traces.load(path).row(0, named=True)
    assert row["start_us"] == 1700000000123456
    assert row["duration_us"] == 543  # (end - start) // 1000 = 543210 ns -> 543 µs


def test_string_enums_and_gzip(tmp_path: Path) -> None:
    doc = _otlp(
        [
            _span(
                kind="SPAN_KIND_CONSUMER",
                status={"code": "STATUS_CODE_OK"},
                attributes=[{"key": "peer.service", "value": {"stringValue": "kafka"}}],
            )
        ]
    )
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    row = traces.load(path).row(0, named=True)
    assert (row["kind"], row["status"], row["peer_service"]) == ("consumer", "ok", "kafka")


def test_base64_ids_are_an_error_not_silently_decoded(tmp_path: Path) -> None:
    doc = _otlp([_span(traceId="CvdlGRbNQ92ESOshHIAxnA==")])
    path = tmp_path / "b64.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    msg = str(info.value)
    assert "resourceSpans[0].scopeSpans[0].spans[0].traceId" in msg and "hex" in msg


@pytest.mark.parametrize(
    ("span", "field"),
    [
        (_span(kind=9), "kind"),
        (_span(startTimeUnixNano="soon"), "startTimeUnixNano"),
        (_span(spanId=12), "spanId"),
        (_span(status={"code": 7}), "status.code"),
    ],
)
def test_bad_fields_name_the_json_path(tmp_path: Path, span: dict, field: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_otlp([_span(), span])))
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert info.value.field == f"resourceSpans[0].scopeSpans[0].spans[1].{field}"


def test_bad_line_of_json_lines_is_named(tmp_path: Path) -> None:
    good = json.dumps(_otlp([_span()]))
    path = tmp_path / "lines.json"
    path.write_text(f"{good}\n{good}\n{good[:40]}\n")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert info.value.row == 3 and "invalid JSON" in str(info.value)
