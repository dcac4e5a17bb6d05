"""Helpers for the placement tests: small vms tables and clusters built in code."""

from __future__ import annotations

import pytest

from fleetlab.placement import ClusterSpec, ServerType, build_cluster


@pytest.fixture
def small_cluster():
    """Three servers of 10 cores / 10 GiB, two per rack."""
    return build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=3, capacity={"cores": 10, "memory_gb": 10}),),
            servers_per_rack=2,
        )
    )


@pytest.fixture
def openb(shared_data):
    """Paths of the openb pod list and GPU node list in the mirror."""
    base = shared_data / "alibaba-gpu-2023-openb"
    return base / "openb_pod_list_default.csv", base / "openb_node_list_gpu_node.csv"
