"""Zipkin v2 reader on zipkin-lens-testdata: shared ids, fragments, headless and skewed traces."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError, UnknownFormatError

ZK = "zipkin-lens-testdata"


def _calls_into(frame: pl.DataFrame, service: str) -> dict[str, int]:
    parents = frame.select(
        "trace_id", pl.col("span_id").alias("parent_id"), pl.col("service").alias("caller")
    )
    links = frame.join(parents, on=["trace_id", "parent_id"])
    into = links.filter((pl.col("service") == service) & (pl.col("caller") != service))
    return dict(into.group_by("caller").len().rows())


def test_smartthings_shared_halves_fragments_and_counts(shared_data: Path) -> None:
    path = shared_data / ZK / "smartthings-mobile-web-install.json"
    assert traces.detect(path).name == "zipkin-json"
    frame = traces.load(path)
    quality = traces.inspect(path)["quality"]
    # 1,041 records: 84 are fragments (no kind, no timestamp) of a span reported elsewhere
    assert frame.height == 957
    assert quality["shared_server_halves"] == 294
    assert quality["missing_start"] == 0 and quality["missing_duration"] == 91
    assert quality["unknown_parent"] == 0 and quality["roots"] == 1
    # bookie serves 33 calls (33 shared server halves): 17 from platformapi, 16 from execution
    assert _calls_into(frame, "bookie") == {"platformapi": 17, "execution": 16}
    assert frame["service"].n_unique() == 16


def test_skew_server_half_hangs_under_client_half(shared_data: Path) -> None:
    frame = traces.load(shared_data / ZK / "skew.json")
    rows = {r["span_id"]: r for r in frame.iter_rows(named=True)}
    server = rows["74280ae0c10d8062:server"]
    assert server["parent_id"] == "74280ae0c10d8062" and server["service"] == "serviceb"
    assert rows["74280ae0c10d8062"]["kind"] == "client"
    assert rows["74280ae0c10d8062"]["service"] == "servicea"
    # serviceb's local work under the shared id hangs under the server half
    assert rows["43210ae0c10d1234"]["parent_id"] == "74280ae0c10d8062:server"
    # the deliberate skew is kept, not "fixed"
    assert server["start_us"] < rows["74280ae0c10d8062"]["start_us"]


def test_headless_trace_and_128_bit_ids(shared_data: Path) -> None:
    assert traces.inspect(shared_data / ZK / "messaging2.json")["quality"]["unknown_parent"] == 6
    messaging = traces.load(shared_data / ZK / "messaging.json")
    assert messaging["trace_id"].unique().to_list() == ["5aab74dbb904746bb33447baae403ed6"]
    assert "rabbitmq" in messaging["peer_service"].to_list()
    assert set(messaging["kind"].drop_nulls()) == {"server", "producer", "consumer"}


def test_yelp_root_server_half_without_client(shared_data: Path) -> None:
    frame = traces.load(shared_data / ZK / "yelp.json")
    root = frame.filter(pl.col("parent_id").is_null()).row(0, named=True)
    assert root["span_id"] == "2e8cfb154b59a41f:server" and root["service"] == "routing"
    # the caller's client span hangs under that server half (no client half was reported)
    assert frame.filter(pl.col("parent_id") == "2e8cfb154b59a41f:server").height == 2


def test_folder_reads_every_file(shared_data: Path) -> None:
    frame = traces.load(shared_data / ZK)
    assert frame["trace_id"].n_unique() == 10 and frame.height == 1_206


def test_fragments_merge_and_error_tag(tmp_path: Path) -> None:
    spans = [
        {
            "traceId": "a",
            "id": "1",
            "name": "get",
            "localEndpoint": {"serviceName": "A"},
            "tags": {"error": ""},
        },
        {
            "traceId": "a",
            "id": "1",
            "kind": "SERVER",
            "timestamp": 10,
            "duration": 5,
            "localEndpoint": {"serviceName": "A"},
        },
        {
            "traceId": "a",
            "id": "2",
            "parentId": "1",
            "kind": "CLIENT",
            "timestamp": 11,
            "duration": 2,
            "localEndpoint": {"serviceName": "A"},
            "remoteEndpoint": {"serviceName": "DB"},
        },
    ]
    path = tmp_path / "z.json"
    path.write_text(json.dumps(spans))
    frame = traces.load(path)
    assert frame.height == 2
    first = frame.row(0, named=True)
    assert (first["operation"], first["kind"], first["start_us"], first["status"]) == (
        "get",
        "server",
        10,
        "error",
    )
    assert first["service"] == "a" and frame["peer_service"][1] == "db"


def test_zipkin_v1_and_dependency_links_are_not_v2(tmp_path: Path) -> None:
    v1 = [
        {
            "traceId": "a",
            "id": "1",
            "name": "x",
            "annotations": [],
            "binaryAnnotations": [{"key": "k", "value": "v"}],
        }
    ]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1))
    with pytest.raises(UnknownFormatError):
        traces.detect(path)


@pytest.mark.parametrize(
    ("span", "field"),
    [
        ({"traceId": "a", "id": "1", "kind": "SERVERX"}, "[1].kind"),
        ({"traceId": "a", "id": "xyz"}, "[1].id"),
        ({"traceId": "a", "id": "1", "timestamp": "noon"}, "[1].timestamp"),
        ({"traceId": "a", "id": "1", "shared": "yes"}, "[1].shared"),
    ],
)
def test_bad_spans_are_located(tmp_path: Path, span: dict, field: str) -> None:
    path = tmp_path / "z.json"
    path.write_text(json.dumps([{"traceId": "a", "id": "2"}, span]))
    with pytest.raises(InputFormatError) as info:
        traces.load(path, format="zipkin-json")
    assert info.value.field == field
