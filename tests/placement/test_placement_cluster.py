"""Cluster specs, node lists and bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fleetlab.errors import ConfigError, DataNotFoundError, InputFormatError, UnknownFormatError
from fleetlab.placement import (
    ClusterSpec,
    ServerType,
    build_cluster,
    cluster_from_nodes,
    load_cluster,
    read_node_list,
)


def test_yaml_spec_builds_servers_racks_and_dims(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: mixed\nservers_per_rack: 3\nserver_types:\n"
        "  - {name: cpu, count: 4, capacity: {cores: 48, memory_gb: 384, ssd_gb: 1000}}\n"
        "  - {name: gpu, count: 2, capacity: {cores: 96, memory_gb: 768}, gpus: 8,"
        " gpu_model: V100}\n"
    )
    cl = load_cluster(path)
    assert cl.size == 6
    assert cl.dims == ("cores", "memory_gb", "ssd_gb", "gpus")
    assert cl.rack.tolist() == [0, 0, 0, 1, 1, 1]
    assert cl.capacity[4].tolist() == [96, 768, 0, 8]
    assert cl.total()["gpus"] == 16
    assert cl.domains()["gpu-00001"] == "rack-1"


def test_unknown_dimension_is_a_config_error_naming_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server_types:\n  - {name: a, count: 1, capacity: {cores: 4, fpga: 2}}\n")
    with pytest.raises(ConfigError, match="fpga"):
        load_cluster(path)


def test_empty_cluster_is_refused():
    with pytest.raises(ConfigError, match="no servers"):
        build_cluster(
            ClusterSpec(server_types=(ServerType(name="a", count=0, capacity={"cores": 4}),))
        )
    with pytest.raises(ConfigError, match="empty"):
        cluster_from_nodes(pl.DataFrame({"node_id": [], "cores": [], "memory_gb": []}))


def test_missing_file_and_foreign_node_list(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_cluster(tmp_path / "nope.yaml")
    bad = tmp_path / "n.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UnknownFormatError, match="nodes"):
        read_node_list(bad)


def test_a_vms_file_is_not_a_node_list(tmp_path):
    path = tmp_path / "v.parquet"
    pl.DataFrame(
        {"vm_id": ["a"], "created_s": [0.0], "deleted_s": [1.0], "cores": [1.0], "memory_gb": [1.0]}
    ).write_parquet(path)
    with pytest.raises(InputFormatError, match="not a node list"):
        load_cluster(path)


def test_openb_node_list_matches_the_published_cluster(openb):
    _, nodes = openb
    cl = load_cluster(nodes)
    # FGD paper: "an emulated cluster of more than 6,200 GPUs" (1,213 GPU nodes)
    assert cl.size == 1213
    assert int(cl.gpus.sum()) == 6212
    assert cl.dims == ("cores", "memory_gb", "gpus")
    assert np.isclose(cl.capacity[:, 0].max(), 128.0)
