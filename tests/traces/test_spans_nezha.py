"""Nezha span CSV reader on the real TrainTicket / OnlineBoutique files."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError
from fleetlab.traces import _read_nezha
from fleetlab.traces._spans_common import span_quality

NZ = "nezha-rca"
HEADER = "TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration"
ROWS = [
    "b0103bb0161ad7fa352fe1828eeb643a,520b067330e3ede5,root,ts-gateway-service-6f6cfc45b-h5m2n,/*,"
    "1674981768697000000,1674981769015316530,318316",
    "b0103bb0161ad7fa352fe1828eeb643a,a4424f20bffee416,520b067330e3ede5,"
    "ts-route-service-b6c59fb57-zv8dt,FilteringWebHandler.handle,1674981768697763387,"
    "1674981769015072039,317308",
]


def _links(frame: pl.DataFrame) -> pl.DataFrame:
    parents = frame.select(
        "trace_id",
        pl.col("span_id").alias("parent_id"),
        pl.col("service").alias("caller"),
        pl.col("start_us").alias("ps"),
    )
    return frame.join(parents, on=["trace_id", "parent_id"])


def test_trainticket_day_folder_matches_sources(shared_data: Path) -> None:
    path = shared_data / NZ / "rca_data" / "2023-01-29"
    assert traces.detect(path).name == "nezha-csv"
    notes = _read_nezha.notes(path)
    assert (notes["files"], notes["rows"], notes["duplicate_rows_removed"]) == (84, 328_848, 7_780)
    frame = traces.load(path)
    quality = span_quality(frame)
    assert frame.height == 321_068 and quality["traces"] == 4_483
    assert quality["roots"] == 4_483 and quality["duplicate_span_ids"] == 0
    assert quality["unknown_parent"] == 0
    links = _links(frame)
    assert frame["service"].n_unique() == 28
    cross = links.filter(pl.col("caller") != pl.col("service"))
    assert cross.select("caller", "service").unique().height == 55
    assert int((links["start_us"] < links["ps"]).sum()) == 88  # child starts before parent


def test_online_boutique_fault_free_file(shared_data: Path) -> None:
    path = shared_data / NZ / "construct_data" / "2022-08-23" / "trace" / "17_00_trace.csv.gz"
    frame = traces.load(path)
    assert frame.height == 22_969 and frame["trace_id"].n_unique() == 502
    assert sorted(frame["service"].unique())[:3] == ["adservice", "cartservice", "checkoutservice"]
    assert set(frame["status"]) == {"unset"} and frame["kind"].null_count() == frame.height


def test_service_strips_pod_suffix_and_times(tmp_path: Path) -> None:
    path = tmp_path / "00_00_trace.csv"
    path.write_text("\n".join([HEADER, *ROWS, ROWS[0]]) + "\n")  # last row repeats the first
    frame = traces.load(path)
    assert frame.height == 2  # the exact duplicate is removed
    assert frame["service"].to_list() == ["ts-gateway-service", "ts-route-service"]
    assert frame["parent_id"].to_list() == [None, "520b067330e3ede5"]
    assert frame["start_us"].to_list() == [1674981768697000, 1674981768697763]
    assert frame["duration_us"].to_list() == [318316, 317308]
    assert traces.inspect(path)["quality"]["duplicate_rows_removed"] == 1


def test_folder_skips_traceid_lists_and_gz_works(tmp_path: Path) -> None:
    (tmp_path / "trace").mkdir()
    (tmp_path / "traceid").mkdir()
    (tmp_path / "trace" / "00_00_trace.csv.gz").write_bytes(
        gzip.compress(("\n".join([HEADER, ROWS[0]]) + "\n").encode())
    )
    (tmp_path / "trace" / "00_01_trace.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    (tmp_path / "traceid" / "00_00_traceid.csv").write_text("b0103bb0161ad7fa352fe1828eeb643a\n")
    frame = traces.load(tmp_path)
    assert frame.height == 2
    assert traces.inspect(tmp_path)["quality"]["files"] == 2


def test_bad_number_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    bad = ROWS[1].replace("1674981768697763387", "16749817686977x3387")
    path.write_text("\n".join([HEADER, ROWS[0], bad]) + "\n")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert (info.value.row, info.value.field) == (3, "StartTimeUnixNano")


def test_cut_last_line_is_an_error_not_a_wrong_duration(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\n".join([HEADER, ROWS[0], ROWS[1][:-3]]))  # Duration 317308 -> 317
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert (info.value.row, info.value.field) == (3, "Duration")


@pytest.mark.slow
def test_whole_mirror_folder(shared_data: Path) -> None:
    frame = traces.load(shared_data / NZ)
    assert (
        frame.height == 792_103
        and frame.select(pl.struct("trace_id", "span_id").n_unique()).item() == 792_103
    )


def test_folder_with_other_csvs_is_not_claimed(tmp_path: Path) -> None:
    (tmp_path / "00_00_trace.csv").write_text("\n".join([HEADER, ROWS[0]]) + "\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    from fleetlab.traces._read_nezha import sniff

    assert not sniff(tmp_path, b"")
    (tmp_path / "other.csv").unlink()
    assert sniff(tmp_path, b"")
