"""Alibaba microservices call-graph reader.

No real rows are in the mirror (see ../shared/data/SOURCES.md), so these tests write
files that follow the published schema exactly (alibaba/clusterdata
cluster-trace-microservices-v2021 and -v2022 READMEs): v2021 ``MSCallGraph`` as pandas
writes it (leading unnamed index column) and v2022 ``CallGraph`` column order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleetlab import traces
from fleetlab.errors import InputFormatError

V2021 = ["traceid", "timestamp", "rpcid", "um", "rpctype", "dm", "interface", "rt"]
V2022 = [
    "timestamp",
    "traceid",
    "service",
    "rpc_id",
    "um",
    "uminstanceid",
    "rpctype",
    "interface",
    "dm",
    "dminstanceid",
    "rt",
]


def _calls(trace: str, t0: int) -> list[dict]:
    """One call graph: USER -> A (http) -> B (rpc) -> db; A -> C (mq); both sides for rpc/http."""
    calls = [
        ("0.1", "USER", "http", "MS_A", "if_a", 40.0, 38.0),
        ("0.1.1", "MS_A", "rpc", "MS_B", "if_b", 12.0, 9.0),
        ("0.1.1.1", "MS_B", "db", "DB_1", "", 2.0, None),
        ("0.1.2", "MS_A", "mq", "MS_C", "", 5.0, None),
    ]
    rows = []
    for k, (rpcid, um, rtype, dm, iface, um_rt, dm_rt) in enumerate(calls):
        base = {
            "traceid": trace,
            "rpcid": rpcid,
            "um": um,
            "rpctype": rtype,
            "dm": dm,
            "interface": iface,
        }
        rows.append({**base, "timestamp": t0 + k, "rt": um_rt})
        if dm_rt is not None:
            rows.append({**base, "timestamp": t0 + k + 1, "rt": -dm_rt})
    return rows


def _write(path: Path, rows: list[dict], version: str) -> None:
    if version == "v2021":
        lines = ["," + ",".join(V2021)]
        for i, r in enumerate(rows):
            lines.append(f"{i}," + ",".join(str(r[c]) for c in V2021))
    else:
        lines = [",".join(V2022)]
        for r in rows:
            full = {
                **r,
                "rpc_id": r["rpcid"],
                "service": "S_1",
                "uminstanceid": r["um"] + "_POD_0",
                "dminstanceid": r["dm"] + "_POD_1",
            }
            lines.append(",".join(str(full[c]) for c in V2022))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("version", ["v2021", "v2022"])
def test_two_sided_calls_become_one_span_each(tmp_path: Path, version: str) -> None:
    rows = _calls("T_1", 1000) + _calls("T_2", 5000)
    path = tmp_path / "MSCallGraph_0.csv"
    _write(path, rows, version)
    assert traces.detect(path).name == "alibaba-callgraph"
    frame = traces.load(path)
    assert frame.height == 8  # 12 rows, 4 DM-side duplicates merged
    t1 = {r["span_id"]: r for r in frame.iter_rows(named=True) if r["trace_id"] == "T_1"}
    assert set(t1) == {"0.1", "0.1.1", "0.1.1.1", "0.1.2"}  # rpcid "0.1" is not a float
    assert t1["0.1"]["parent_id"] == "0" and t1["0.1.1.1"]["parent_id"] == "0.1.1"
    # UM side kept: the latency the caller saw, ms -> µs
    assert t1["0.1"]["duration_us"] == 40_000 and t1["0.1.1"]["duration_us"] == 12_000
    assert t1["0.1.1"]["start_us"] == 1_001_000
    assert (t1["0.1.1"]["service"], t1["0.1.1"]["peer_service"]) == ("MS_B", "MS_A")
    assert [t1[k]["kind"] for k in ("0.1", "0.1.1", "0.1.1.1", "0.1.2")] == [
        "server",
        "server",
        "server",
        "consumer",
    ]
    assert (t1["0.1.1"]["operation"], t1["0.1.2"]["operation"]) == ("if_b", "mq")
    quality = traces.inspect(path)["quality"]
    assert (quality["rows"], quality["dm_side_rows"], quality["sides_merged"]) == (12, 4, 4)
    assert quality["duplicate_span_ids"] == 0


def test_dm_side_only_keeps_absolute_rt(tmp_path: Path) -> None:
    rows = [r for r in _calls("T_9", 0) if not (r["rpcid"] == "0.1.1" and r["rt"] > 0)]
    path = tmp_path / "cg.csv"
    _write(path, rows, "v2021")
    frame = traces.load(path)
    row = frame.filter(frame["span_id"] == "0.1.1").row(0, named=True)
    assert row["duration_us"] == 9_000


def test_generated_graph_parents_all_resolve(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rows: list[dict] = []
    for t in range(50):
        rows += _calls(f"T_{t}", int(rng.integers(0, 10**6)))
    path = tmp_path / "cg.csv"
    _write(path, rows, "v2022")
    quality = traces.inspect(path)["quality"]
    # every span's parent is in its trace except the entry call's "0"
    assert quality["spans"] == 200 and quality["unknown_parent"] == 50


def test_bad_rt_names_line_and_field(tmp_path: Path) -> None:
    rows = _calls("T_1", 0)
    rows[3]["rt"] = "fast"
    path = tmp_path / "cg.csv"
    _write(path, rows, "v2021")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert (info.value.row, info.value.field) == (5, "rt")
