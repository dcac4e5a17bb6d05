"""Canonical spans Parquet: name columns stored dictionary-encoded, old String files still read."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fleetlab import traces

NAMES = ("service", "operation", "status", "kind", "peer_service")

SPANS = (
    "trace_id,span_id,parent_id,service,operation,start_us,duration_us,status,kind,peer_service\n"
    "t1,s1,,api,GET /,10,50,ok,server,\n"
    "t1,s2,s1,api,call db,12,30,ok,client,db\n"
    "t1,s3,s2,db,query,13,20,error,server,\n"
    "t2,s1,,web,GET /x,100,9,unset,,\n"
    "t2,s2,s1,api,GET /,101,5,ok,server,\n"
)


def test_spans_schema_names_the_dictionary_columns() -> None:
    spans = traces.TABLES["spans"]
    assert spans.dictionary == NAMES
    assert set(spans.dictionary) <= set(spans.columns)
    assert all(spans.columns[c] == pl.String for c in spans.dictionary)  # String in memory
    assert traces.TABLES["flows"].dictionary == ()


def test_convert_writes_name_columns_dictionary_encoded(tmp_path: Path) -> None:
    src = tmp_path / "spans.csv"
    src.write_text(SPANS)
    out = tmp_path / "spans.parquet"
    assert traces.convert(src, out)["rows"] == 5
    arrow = pq.read_schema(out)
    for c in NAMES:
        assert pa.types.is_dictionary(arrow.field(c).type), c
        assert arrow.field(c).type.value_type in (pa.string(), pa.large_string()), c
    for c in ("trace_id", "span_id", "parent_id"):  # ids are unique: plain strings
        assert not pa.types.is_dictionary(arrow.field(c).type), c
    meta = pq.ParquetFile(out).metadata.row_group(0)
    col = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in col["service"].encodings
    scanned = pl.scan_parquet(out).collect_schema()
    assert all(scanned[c] == pl.Categorical for c in NAMES)
    # load() gives the canonical String table, identical to reading the CSV
    back, direct = traces.load(out), traces.load(src)
    assert all(back.schema[c] == pl.String for c in NAMES)
    assert back.equals(direct)
    assert back["peer_service"].to_list() == [None, "db", None, None, None]
    assert back["kind"].to_list() == ["server", "client", "server", None, "server"]


def test_old_string_parquet_reads_the_same(tmp_path: Path) -> None:
    """Files written before the dictionary columns (String Arrow type) still read, and
    read exactly like the new ones."""
    src = tmp_path / "spans.csv"
    src.write_text(SPANS)
    old = tmp_path / "old.parquet"
    traces.load(src).write_parquet(old)  # String columns, as convert wrote them before
    assert not pa.types.is_dictionary(pq.read_schema(old).field("service").type)
    new = tmp_path / "new.parquet"
    traces.convert(src, new)
    assert traces.detect(old).table == traces.detect(new).table == "spans"
    assert traces.load(old).equals(traces.load(new))
    assert traces.inspect(old)["columns"] == traces.inspect(new)["columns"]
    # converting an old canonical file again gives the new layout
    again = tmp_path / "again.parquet"
    traces.convert(old, again)
    assert pa.types.is_dictionary(pq.read_schema(again).field("operation").type)
    assert traces.load(again).equals(traces.load(new))


def test_all_null_name_column_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "spans.csv"
    src.write_text(
        "trace_id,span_id,parent_id,service,operation,start_us,duration_us,status\n"
        "t1,s1,,api,GET /,10,5,ok\nt1,s2,s1,db,query,11,2,error\n"
    )
    out = tmp_path / "spans.parquet"
    traces.convert(src, out)
    back = traces.load(out)
    assert back["kind"].to_list() == [None, None]
    assert back["peer_service"].dtype == pl.String
    assert back.equals(traces.load(src))


def test_other_tables_keep_their_layout(tmp_path: Path) -> None:
    src = tmp_path / "flows.csv"
    src.write_text("ts_us,src,dst\n5,a,b\n7,b,c\n")
    out = tmp_path / "flows.parquet"
    traces.convert(src, out)
    arrow = pq.read_schema(out)
    assert not any(pa.types.is_dictionary(f.type) for f in arrow)
