"""Requests from vms tables: validation and GPU demand semantics."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import vms_table

from fleetlab.errors import InputFormatError
from fleetlab.placement import (
    ClusterSpec,
    ServerType,
    build_cluster,
    requests_from_vms,
    simulate,
)


def test_departure_before_arrival_names_row_and_field(small_cluster):
    vms = vms_table([("a", 0, 10, 1, 1), ("b", 5, 4, 1, 1)])
    with pytest.raises(InputFormatError) as info:
        requests_from_vms(vms, small_cluster, source="t.parquet")
    msg = str(info.value)
    assert "t.parquet" in msg and "row 2" in msg and "deleted_s" in msg and "'b'" in msg


def test_negative_demand_and_missing_column(small_cluster):
    with pytest.raises(InputFormatError, match="cores"):
        requests_from_vms(vms_table([("a", 0, 10, -1, 1)]), small_cluster)
    with pytest.raises(InputFormatError, match="memory_gb"):
        requests_from_vms(vms_table([("a", 0, 10, 1, 1)]).drop("memory_gb"), small_cluster)


def test_request_larger_than_any_server_is_a_failure_not_a_crash(small_cluster):
    vms = vms_table([("big", 0, 10, 50, 1), ("ok", 1, 10, 1, 1)])
    res = simulate(small_cluster, vms, "best-fit")
    assert res.metrics["failures"] == 1
    assert res.metrics["too_large"] == 1
    assert res.placements["outcome"].to_list() == ["too_large", "placed"]


def test_gpu_share_and_whole_gpu_semantics():
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="g", count=1, capacity={"cores": 8, "memory_gb": 8}, gpus=2),
            )
        )
    )
    vms = vms_table(
        [
            ("half", 0, None, 1, 1, 1.0, 500),
            ("two", 0, None, 1, 1, 2.0, None),
            ("frac", 0, None, 1, 1, 0.25, None),
        ],
        columns=("gpus", "gpu_milli"),
    )
    r = requests_from_vms(vms, cl)
    assert r.gpu_count.tolist() == [1, 2, 1]
    assert r.gpu_milli.tolist() == [500, 1000, 250]
    assert r.demand[:, cl.dims.index("gpus")].tolist() == [0.5, 2.0, 0.25]
    assert np.isinf(r.departure).all()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0, 50), st.floats(0, 12), st.floats(0, 12)),
        min_size=1,
        max_size=40,
    )
)
def test_parsed_requests_keep_every_row_sorted_by_arrival(rows):
    cl = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=2, capacity={"cores": 10, "memory_gb": 10}),)
        )
    )
    vms = vms_table([(f"v{i}", a, a + life, c, m) for i, (a, life, c, m) in enumerate(rows)])
    r = requests_from_vms(vms, cl)
    assert r.size == len(rows)
    assert np.all(np.diff(r.arrival) >= 0)
    assert np.all(r.departure >= r.arrival)
    assert sorted(r.vm_id.tolist()) == sorted(vms["vm_id"].to_list())
    assert pl.Series(r.demand[:, 0]).sum() == pytest.approx(vms["cores"].sum())


def test_missing_creation_times_error_start_or_drop(small_cluster):
    vms = vms_table([("a", 5, 10, 1, 1), ("b", None, 20, 1, 1)])
    with pytest.raises(InputFormatError, match="created_s"):
        requests_from_vms(vms, small_cluster)
    assert requests_from_vms(vms, small_cluster, missing_created="start").arrival.tolist() == [5, 5]
    assert requests_from_vms(vms, small_cluster, missing_created="drop").size == 1
