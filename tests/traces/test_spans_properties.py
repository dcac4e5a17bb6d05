"""Property tests: every span reader on generated, random and truncated input.

A reader either returns correct rows (ids round-trip to their canonical form, times are
exact) or raises the documented error; it never crashes and never returns wrong rows.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetlab import traces
from fleetlab.errors import FleetlabError

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SPAN_FORMATS = ["otlp-json", "jaeger-json", "zipkin-json", "nezha-csv", "alibaba-callgraph"]
NEZHA_HEADER = (
    "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration"
)

hex16 = st.text("0123456789abcdefABCDEF", min_size=1, max_size=16)
times = st.integers(min_value=1, max_value=2**62)
spans_st = st.lists(
    st.tuples(
        hex16,
        hex16,
        st.integers(1, 10**15),
        st.integers(0, 10**9),
        st.sampled_from(["svc-a", "svc-b", "ü-svc"]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda s: (s[0].lower().rjust(16, "0"), s[1].lower().rjust(16, "0")),
)


def _canon_span(x: str) -> str:
    return x.lower().rjust(16, "0")


def _jaeger(spans: list) -> str:
    out = []
    for tid, sid, start, dur, svc in spans:
        out.append(
            {
                "traceID": tid,
                "spans": [
                    {
                        "traceID": tid,
                        "spanID": sid,
                        "operationName": "op",
                        "references": [],
                        "startTime": start,
                        "duration": dur,
                        "tags": [],
                        "processID": "p1",
                    }
                ],
                "processes": {"p1": {"serviceName": svc}},
            }
        )
    return "\n".join(json.dumps(t) for t in out) + "\n"


def _zipkin(spans: list) -> str:
    return json.dumps(
        [
            {
                "traceId": tid,
                "id": sid,
                "name": "op",
                "timestamp": start,
                "duration": dur,
                "localEndpoint": {"serviceName": svc},
            }
            for tid, sid, start, dur, svc in spans
        ]
    )


def _otlp(spans: list) -> str:
    rs = [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": tid.rjust(32, "0"),
                            "spanId": sid.rjust(16, "0"),
                            "name": "op",
                            "startTimeUnixNano": str(start * 1000),
                            "endTimeUnixNano": (start + dur) * 1000,
                            "kind": 2,
                        }
                    ]
                }
            ],
        }
        for tid, sid, start, dur, svc in spans
    ]
    return json.dumps({"resourceSpans": rs})


WRITERS = {
    "jaeger-json": (_jaeger, "t.jsonl"),
    "zipkin-json": (_zipkin, "t.json"),
    "otlp-json": (_otlp, "t.json"),
}


@SETTINGS
@given(spans=spans_st, fmt=st.sampled_from(sorted(WRITERS)))
def test_ids_and_times_round_trip(spans: list, fmt: str) -> None:
    writer, name = WRITERS[fmt]
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(writer(spans), encoding="utf-8")
        assert traces.detect(path).name == fmt
        frame = traces.load(path)
    expected = [
        (_canon_span(t), _canon_span(s), start, dur, svc.lower() if fmt == "zipkin-json" else svc)
        for t, s, start, dur, svc in spans
    ]
    got = frame.select("trace_id", "span_id", "start_us", "duration_us", "service").rows()
    assert got == expected


def _valid_file(fmt: str, spans: list) -> tuple[str, str]:
    if fmt in WRITERS:
        writer, name = WRITERS[fmt]
        return writer(spans), name
    if fmt == "nezha-csv":
        rows = [
            f"{t.rjust(32, '0')},{s.rjust(16, '0')},root,svc-6f6cfc45b-h5m2n,op,"
            f"{start * 1000},{(start + dur) * 1000},{dur}"
            for t, s, start, dur, _ in spans
        ]
        return "\n".join([NEZHA_HEADER, *rows]) + "\n", "t.csv"
    rows = [
        f"T_{t},{start},0.{i + 1},USER,rpc,{svc},if,{dur}"
        for i, (t, _s, start, dur, svc) in enumerate(spans)
    ]
    return "\n".join(["traceid,timestamp,rpcid,um,rpctype,dm,interface,rt", *rows]) + "\n", "t.csv"


def _key_rows(frame: pl.DataFrame) -> set[tuple]:
    return set(frame.select("trace_id", "span_id", "start_us", "duration_us").rows())


@SETTINGS
@given(
    spans=spans_st,
    fmt=st.sampled_from(["otlp-json", "jaeger-json", "zipkin-json", "nezha-csv"]),
    cut=st.floats(0.0, 1.0),
)
def test_truncated_files_fail_or_give_a_subset(spans: list, fmt: str, cut: float) -> None:
    text, name = _valid_file(fmt, spans)
    with TemporaryDirectory() as tmp:
        full = Path(tmp) / name
        full.write_text(text, encoding="utf-8")
        whole = _key_rows(traces.load(full, format=fmt))
        data = text.encode()
        short = Path(tmp) / ("cut_" + name)
        short.write_bytes(data[: int(len(data) * cut)])
        try:
            part = traces.load(short, format=fmt)
        except FleetlabError:
            return
    assert _key_rows(part) <= whole


@SETTINGS
@given(data=st.binary(max_size=300), fmt=st.sampled_from([None, *SPAN_FORMATS]))
def test_random_bytes_only_raise_fleetlab_errors(data: bytes, fmt: str | None) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_bytes(data)
        with contextlib.suppress(FleetlabError):
            traces.load(path, format=fmt)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "traceID",
                    "spanID",
                    "id",
                    "data",
                    "result",
                    "processes",
                    "kind",
                    "references",
                    "startTime",
                    "timestamp",
                    "duration",
                    "tags",
                    "localEndpoint",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@SETTINGS
@given(value=json_values, fmt=st.sampled_from(["otlp-json", "jaeger-json", "zipkin-json"]))
def test_random_json_only_raises_input_errors(value: object, fmt: str) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_text(json.dumps(value))
        try:
            frame = traces.load(path, format=fmt)
        except FleetlabError:
            return
    # whatever was accepted has real ids
    assert frame["trace_id"].null_count() == 0 and frame["span_id"].null_count() == 0


@SETTINGS
@given(spans=spans_st, order=st.randoms(use_true_random=False))
def test_zipkin_shared_calls_counted_once(spans: list, order: object) -> None:
    records = []
    for tid, sid, start, dur, svc in spans:
        base = {"traceId": tid, "id": sid, "parentId": "ab", "timestamp": start, "duration": dur}
        records.append(
            {
                **base,
                "kind": "CLIENT",
                "localEndpoint": {"serviceName": "caller"},
                "remoteEndpoint": {"serviceName": svc},
            }
        )
        records.append(
            {**base, "kind": "SERVER", "shared": True, "localEndpoint": {"serviceName": svc}}
        )
    order.shuffle(records)  # type: ignore[attr-defined]
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "z.json"
        path.write_text(json.dumps(records))
        frame = traces.load(path)
    assert frame.height == 2 * len(spans)
    servers = frame.filter(pl.col("kind") == "server")
    clients = frame.filter(pl.col("kind") == "client")
    assert sorted(servers["parent_id"]) == sorted(clients["span_id"])
    assert sorted(servers["span_id"]) == sorted(s + ":server" for s in clients["span_id"])
    assert set(clients["parent_id"]) == {"00000000000000ab"}
