"""The flows table through the generic canonical readers, and spans through Parquet/CSV."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError

FLOWS = """ts_us,src,dst,port,bytes,duration_us
1700000000000000,frontend,search,8082,512,1200
1700000000000450,search,geo,8083,128,300
1700000000000900,search,rate,8084,256,
"""


def test_flows_csv_reads_as_canonical_flows(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text(FLOWS)
    fmt = traces.detect(path)
    assert fmt.table == "flows"
    frame = traces.load(path)
    assert frame.columns[:6] == ["ts_us", "src", "dst", "port", "bytes", "duration_us"]
    assert dict(frame.schema)["ts_us"] == pl.Int64 and dict(frame.schema)["bytes"] == pl.Int64
    assert frame["ts_us"].to_list() == [1700000000000000, 1700000000000450, 1700000000000900]
    assert frame["duration_us"].to_list() == [1200, 300, None]
    info = traces.inspect(path)
    assert info["table"] == "flows" and info["time_span"]["duration_s"] == pytest.approx(0.0009)


def test_minimal_flows_and_parquet_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("ts_us,src,dst\n5,a,b\n7,b,c\n")
    out = tmp_path / "flows.parquet"
    result = traces.convert(path, out)
    assert result["table"] == "flows" and result["rows"] == 2
    back = traces.load(out)
    assert back.select("ts_us", "src", "dst").rows() == [(5, "a", "b"), (7, "b", "c")]
    assert back["port"].null_count() == 2


def test_bad_flow_timestamp_is_located(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("ts_us,src,dst\n5,a,b\nlater,b,c\n")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert (info.value.row, info.value.field) == (3, "ts_us")


def test_spans_convert_to_parquet_and_back(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "zipkin-lens-testdata" / "yelp.json"
    out = tmp_path / "yelp.parquet"
    result = traces.convert(src, out)
    assert (result["format"], result["table"], result["rows"]) == ("zipkin-json", "spans", 16)
    assert traces.detect(out).table == "spans"
    assert traces.load(out).select(list(traces.TABLES["spans"].columns)).equals(traces.load(src))


def test_spans_canonical_csv(tmp_path: Path) -> None:
    path = tmp_path / "spans.csv"
    path.write_text(
        "trace_id,span_id,parent_id,service,operation,start_us,duration_us,status\n"
        "t1,s1,,api,GET /,10,5,ok\nt1,s2,s1,db,query,11,2,error\n"
    )
    spans = traces.load(path)
    assert traces.detect(path).table == "spans"
    assert spans["parent_id"].to_list() == [None, "s1"]
    assert spans["status"].to_list() == ["ok", "error"]
