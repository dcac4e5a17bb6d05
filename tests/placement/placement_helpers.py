"""Small vms tables built in code for the placement tests."""

from __future__ import annotations

import polars as pl


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
