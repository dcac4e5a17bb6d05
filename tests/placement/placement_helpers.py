"""Small vms tables built in code for the placement tests."""

from __future__ import annotations

import polars as pl

from fleetlab.placement import Cluster, ClusterSpec, ServerType, build_cluster


def vms_table(rows: list[tuple], *, columns: tuple[str, ...] = ()) -> pl.DataFrame:
    """A vms table from (vm_id, created_s, deleted_s, cores, memory_gb, *extra) tuples."""
    base = ("vm_id", "created_s", "deleted_s", "cores", "memory_gb", *columns)
    data = {c: [r[i] for r in rows] for i, c in enumerate(base)}
    schema = {
        "vm_id": pl.String,
        "created_s": pl.Float64,
        "deleted_s": pl.Float64,
        "cores": pl.Float64,
        "memory_gb": pl.Float64,
    }
    for c in columns:
        schema[c] = {"tenant": pl.String, "gpu_milli": pl.Int64, "gpu_model": pl.String}.get(
            c, pl.Float64
        )
    return pl.DataFrame(data, schema=schema)


def known_stream() -> tuple[Cluster, pl.DataFrame]:
    """3 servers of 10 cores / 10 GiB and 5 VMs whose placements the tests work out by hand.

    a (0-5 s) and b pack one server under best fit, c needs another, d arrives when a
    leaves and reuses its room, e (11 cores) is larger than any server.
    """
    cluster = build_cluster(
        ClusterSpec(
            server_types=(ServerType(name="s", count=3, capacity={"cores": 10, "memory_gb": 10}),)
        )
    )
    vms = vms_table(
        [
            ("a", 0, 5, 6, 6),
            ("b", 1, None, 3, 3),
            ("c", 2, None, 5, 5),
            ("d", 5, None, 4, 4),
            ("e", 6, None, 11, 1),
        ]
    )
    return cluster, vms
