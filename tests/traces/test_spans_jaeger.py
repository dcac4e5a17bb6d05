"""Jaeger JSON reader: UI/API export, model JSON, TraceWeaver DeathStarBench JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError
from fleetlab.traces._read_jaeger import duration_us, rfc3339_us
from fleetlab.traces._spans_common import span_quality

FIX = "otel-jaeger-fixtures"
TW = "traceweaver-deathstarbench"


def _links(frame: pl.DataFrame) -> pl.DataFrame:
    parents = frame.select(
        "trace_id",
        pl.col("span_id").alias("parent_id"),
        pl.col("service").alias("caller"),
        pl.col("start_us").alias("parent_start"),
    )
    return frame.join(parents, on=["trace_id", "parent_id"])


def _service_edges(frame: pl.DataFrame) -> list[tuple[str, str]]:
    links = _links(frame).filter(pl.col("caller") != pl.col("service"))
    return sorted(links.select("caller", "service").unique().rows())


def test_ui_and_model_json_of_the_same_trace_agree(shared_data: Path) -> None:
    ui = traces.load(shared_data / FIX / "jaeger" / "ui_01.json")
    model = traces.load(shared_data / FIX / "jaeger" / "domain_01.json")
    assert traces.detect(shared_data / FIX / "jaeger" / "domain_01.json").name == "jaeger-json"
    assert ui.equals(model)
    assert ui["trace_id"].unique().to_list() == ["0000000000000001"]
    # span 4: CHILD_OF a span of another trace, CHILD_OF ...02, FOLLOWS_FROM ...02
    four = ui.filter(pl.col("span_id") == "0000000000000004").row(0, named=True)
    assert four["parent_id"] == "0000000000000002"
    # the error=true tag and the peer.service tag of the second span
    assert ui["status"].to_list() == ["unset", "error", "unset", "unset", "unset"]
    assert ui["peer_service"][1] == "service-y"
    # model times: RFC 3339 with a -05:00 offset and "5000ns" durations
    assert model["start_us"][0] == 1485467191639875 and model["duration_us"].to_list() == [
        5
    ] * 4 + [4]


def test_query_api_export_equals_its_otlp_source(shared_data: Path) -> None:
    out = traces.load(shared_data / FIX / "jaeger" / "otlp2jaeger-out.json")
    src = traces.load(shared_data / FIX / "jaeger" / "otlp2jaeger-in.json")
    assert out.equals(src)
    assert (
        traces.inspect(shared_data / FIX / "jaeger" / "otlp2jaeger-out.json")["quality"][
            "duplicate_span_ids"
        ]
        == 1
    )


def test_dependency_links_are_not_spans(shared_data: Path) -> None:
    from fleetlab.errors import UnknownFormatError

    with pytest.raises(UnknownFormatError):
        traces.detect(shared_data / FIX / "jaeger-ui" / "DependencyGraph_sample_small.json")


@pytest.mark.parametrize(
    ("name", "spans", "skewed", "edges"),
    [
        ("hotel_reservation/hotel_load50.jsonl.gz", 11_000, 1_868, 5),
        ("hotel_reservation/hotel_load100.jsonl.gz", 11_000, 1_082, 5),
        ("media_microservices/media_load25.jsonl.gz", 27_000, 0, 13),
        ("nodejs_microservices/node_load25.jsonl.gz", 6_000, 0, 5),
    ],
)
def test_traceweaver_counts_match_sources(
    shared_data: Path, name: str, spans: int, skewed: int, edges: int
) -> None:
    path = shared_data / TW / name
    assert traces.detect(path).name == "jaeger-json"
    frame = traces.load(path)
    links = _links(frame)
    assert frame.height == spans and frame["trace_id"].n_unique() == 1_000
    assert frame["parent_id"].null_count() == 1_000  # one root per trace
    assert links.height == spans - 1_000  # no dangling parents
    assert int((links["start_us"] < links["parent_start"]).sum()) == skewed  # clock skew kept
    assert len(_service_edges(frame)) == edges
    assert span_quality(frame)["starts_before_parent"] == skewed


def test_hotel_ground_truth_edges_and_kinds(shared_data: Path) -> None:
    frame = traces.load(shared_data / TW / "hotel_reservation" / "hotel_load25.jsonl.gz")
    assert _service_edges(frame) == [
        ("frontend", "profile"),
        ("frontend", "reservation"),
        ("frontend", "search"),
        ("search", "geo"),
        ("search", "rate"),
    ]
    assert dict(frame["kind"].value_counts().rows()) == {"client": 5_000, "server": 6_000}


def test_nodejs_short_ids_are_padded_consistently(shared_data: Path) -> None:
    frame = traces.load(shared_data / TW / "nodejs_microservices" / "node_load25.jsonl.gz")
    assert frame["span_id"].str.len_chars().unique().to_list() == [16]
    assert frame["trace_id"].str.len_chars().unique().to_list() == [16]
    service1 = frame.filter(pl.col("service") == "service1")
    assert service1["span_id"].unique().to_list() == ["0000000000000001"]
    # the root span id equals the trace id (as upstream) and the ms-precision times stay µs
    roots = frame.filter(pl.col("parent_id").is_null())
    assert (roots["span_id"] == roots["trace_id"]).all()
    assert (frame["start_us"] % 1000 == 0).all() and frame["start_us"].min() > 1.6e15


@pytest.mark.slow
def test_whole_traceweaver_folder_reads_as_one_table(shared_data: Path) -> None:
    frame = traces.load(shared_data / TW)
    assert frame.height == 295_500 and frame["trace_id"].n_unique() == 21_500


def _trace(spans: list[dict], processes: dict | None = None) -> dict:
    return {
        "traceID": "abc",
        "spans": spans,
        "processes": processes or {"p1": {"serviceName": "a"}, "p2": {"serviceName": "b"}},
    }


def _jspan(
    span_id: str, *, refs: list | None = None, tags: list | None = None, pid: str = "p1"
) -> dict:
    return {
        "traceID": "abc",
        "spanID": span_id,
        "operationName": "op",
        "references": refs or [],
        "startTime": 1_600_000_000_000_000,
        "duration": 10,
        "tags": tags or [],
        "processID": pid,
    }


def test_status_from_tags_and_follows_from_parent(tmp_path: Path) -> None:
    spans = [
        _jspan("1", tags=[{"key": "http.status_code", "type": "int64", "value": 503}]),
        _jspan(
            "2",
            refs=[{"refType": "FOLLOWS_FROM", "traceID": "abc", "spanID": "1"}],
            tags=[
                {"key": "otel.status_code", "type": "string", "value": "OK"},
                {"key": "span.kind", "type": "string", "value": "consumer"},
            ],
            pid="p2",
        ),
        _jspan("3", tags=[{"key": "otel.status_code", "type": "string", "value": "ERROR"}]),
        _jspan(
            "4",
            tags=[
                {"key": "error", "type": "string", "value": "true"},
                {"key": "http.status_code", "type": "string", "value": "200"},
            ],
        ),
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"data": [_trace(spans)], "total": 0}))
    frame = traces.load(path)
    assert frame["status"].to_list() == ["error", "ok", "error", "error"]
    assert frame["parent_id"].to_list() == [None, "0000000000000001", None, None]
    assert frame["kind"].to_list() == [None, "consumer", None, None]
    assert frame["trace_id"].to_list() == ["0000000000000abc"] * 4


def test_unknown_process_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"data": [_trace([_jspan("1"), _jspan("2", pid="p9")])]}))
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert info.value.field == "data[0].spans[1].processID" and info.value.found == "p9"


def test_bad_line_in_jsonl_names_the_line(tmp_path: Path) -> None:
    good = json.dumps(_trace([_jspan("1")]))
    bad = json.dumps(_trace([_jspan("zz")]))
    path = tmp_path / "t.jsonl"
    path.write_text(f"{good}\n{good}\n{bad}\n")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert info.value.row == 3 and info.value.field == "spans[0].spanID"


def test_time_and_duration_parsers() -> None:
    assert rfc3339_us("1970-01-01T00:00:01.0000019Z", "t") == 1_000_001
    assert rfc3339_us("2017-01-26T16:46:31.639875139-05:00", "t") == 1485467191639875
    assert duration_us("5000ns", "d") == 5
    assert duration_us("1.5ms", "d") == 1500
    assert duration_us("1m0.5s", "d") == 60_500_000
    assert duration_us("0.000005s", "d") == 5
