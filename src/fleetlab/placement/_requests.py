"""Placement requests from the canonical ``vms`` table, as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.placement._cluster import GPU_DIM, Cluster

#: optional extra columns a vms table may carry for lifetime-aware placement
PREDICTED_LIFETIME = "predicted_lifetime_s"


@dataclass(frozen=True)
class Requests:
    """Placement requests in arrival order, one row per VM/pod.

    Attributes
    ----------
    vm_id
        Request names, shape (R,).
    arrival, departure
        Seconds; ``departure`` is ``inf`` for requests that never leave.
    demand
        Demand per request and cluster dimension, shape (R, D); the ``gpus`` column is
        the total GPU amount (``gpu_count * gpu_milli / 1000``).
    gpu_count, gpu_milli
        GPUs asked for and milli-GPUs per GPU (1000 = whole GPU), shape (R,).
    gpu_model
        Accepted GPU models separated by ``|`` (``""``: any), shape (R,).
    tenant
        Integer tenant code (-1: none), shape (R,).
    predicted_departure
        Predicted departure time (the true one when no prediction is given), seconds.
    p95_demand
        Predicted P95 core usage (``cores * p95_cpu / 100``; ``cores`` when unknown).
    """

    vm_id: np.ndarray
    arrival: np.ndarray
    departure: np.ndarray
    demand: np.ndarray
    gpu_count: np.ndarray
    gpu_milli: np.ndarray
    gpu_model: np.ndarray
    tenant: np.ndarray
    predicted_departure: np.ndarray
    p95_demand: np.ndarray

    @property
    def size(self) -> int:
        """Number of requests."""
        return int(self.arrival.shape[0])

    @property
    def horizon_s(self) -> float:
        """The last finite arrival or departure time (at least 1 s): the trace's span."""
        finite = self.departure[np.isfinite(self.departure)]
        last = max(
            float(finite.max()) if finite.size else 0.0,
            float(self.arrival.max()) if self.size else 0.0,
        )
        return max(last, 1.0)

    def take(self, index: np.ndarray) -> Requests:
        """The requests at ``index`` (in that order)."""
        return Requests(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})


def _col(vms: pl.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in vms.columns:
        return np.full(vms.height, default, dtype=np.float64)
    return vms[name].cast(pl.Float64).fill_null(default).to_numpy().astype(np.float64)


def _bad(source: str, vms: pl.DataFrame, mask: np.ndarray, field: str, expected: str) -> None:
    idx = np.flatnonzero(mask)
    if idx.size:
        i = int(idx[0])
        raise InputFormatError(
            source,
            f"{idx.size} request(s) invalid, first vm_id {vms['vm_id'][i]!r}",
            row=i + 1,
            field=field,
            expected=expected,
            found=vms[field][i] if field in vms.columns else None,
        )


def requests_from_vms(
    vms: pl.DataFrame,
    cluster: Cluster,
    *,
    source: str = "vms table",
    missing_created: Literal["error", "start", "drop"] = "error",
) -> Requests:
    """Turn a canonical ``vms`` table into requests over ``cluster``'s dimensions.

    Parameters
    ----------
    vms
        Canonical ``vms`` table: ``vm_id, created_s, deleted_s, cores, memory_gb`` and
        optionally ``gpus, gpu_milli, gpu_model, tenant, p95_cpu`` (percent) and
        ``predicted_lifetime_s``. A null ``deleted_s`` means the VM never leaves.
    cluster
        The cluster whose dimensions the demand is expressed in.
    source
        Name of the input used in error messages (file name).
    missing_created
        What to do with rows lacking ``created_s`` (e.g. instances already running
        when a trace starts): raise (``"error"``), treat them as created at the
        trace's first timestamp, creation or deletion (``"start"``), or drop them
        (``"drop"``).

    Returns
    -------
    Requests
        Sorted by arrival (stable).

    Raises
    ------
    InputFormatError
        A required column is missing, a demand is negative or NaN, a creation time is
        missing, or a VM departs before it arrives (names the row and field).
    """
    for col in ("vm_id", "created_s", "deleted_s", "cores", "memory_gb"):
        if col not in vms.columns:
            raise InputFormatError(
                source,
                "missing column",
                field=col,
                expected="a canonical vms table",
                found=vms.columns,
            )
    if missing_created == "drop":
        vms = vms.filter(pl.col("created_s").is_not_null())
    elif missing_created == "start":
        first = vms.select(pl.min_horizontal(pl.col("created_s").min(), pl.col("deleted_s").min()))
        start = first.item()
        vms = vms.with_columns(pl.col("created_s").fill_null(start if start is not None else 0.0))
    vms = vms.with_row_index("_row").sort("created_s", maintain_order=True, nulls_last=True)
    created = vms["created_s"].cast(pl.Float64).to_numpy()
    _bad(source, vms, np.isnan(created.astype(float)), "created_s", "a creation time (seconds)")
    deleted = vms["deleted_s"].cast(pl.Float64).fill_null(np.inf).to_numpy().astype(np.float64)
    _bad(source, vms, np.isnan(deleted), "deleted_s", "a deletion time or null")
    _bad(
        source, vms, deleted < created, "deleted_s", ">= created_s (a departure after its arrival)"
    )
    n = vms.height
    gpus = _col(vms, "gpus", 0.0)
    milli_raw = (
        vms["gpu_milli"].cast(pl.Float64).to_numpy().astype(np.float64)
        if "gpu_milli" in vms.columns
        else np.full(n, np.nan)
    )
    frac = (gpus > 0) & (gpus < 1)
    count = np.where(frac, 1, np.floor(gpus)).astype(np.int64)
    milli = np.where(frac, np.round(gpus * 1000), 1000.0)
    has = ~np.isnan(milli_raw) & (milli_raw > 0) & (count == 1)
    milli = np.where(has, milli_raw, milli)
    milli = np.where(count == 0, 0, milli).astype(np.int64)
    _bad(source, vms, (gpus < 0) | (milli > 1000), "gpus", "0..N GPUs with gpu_milli in 1..1000")
    cols = []
    for d in cluster.dims:
        if d == GPU_DIM:
            cols.append(count * milli / 1000.0)
        else:
            values = _col(vms, d, 0.0)
            _bad(source, vms, ~(values >= 0), d, "a demand >= 0")
            cols.append(values)
    demand = np.column_stack(cols) if cols else np.zeros((n, 0))
    models = (
        vms["gpu_model"].fill_null("").cast(pl.String).to_numpy().astype(object)
        if "gpu_model" in vms.columns
        else np.full(n, "", dtype=object)
    )
    if "tenant" in vms.columns and vms["tenant"].null_count() < n:
        codes = vms["tenant"].cast(pl.String).cast(pl.Categorical).to_physical().to_numpy()
        tenant = np.where(vms["tenant"].is_null().to_numpy(), -1, codes).astype(np.int64)
    else:
        tenant = np.full(n, -1, dtype=np.int64)
    lifetime = _col(vms, PREDICTED_LIFETIME, np.nan)
    predicted = np.where(np.isnan(lifetime), deleted, created + np.maximum(lifetime, 0))
    p95 = _col(vms, "p95_cpu", np.nan)
    cores = _col(vms, "cores", 0.0)
    p95_demand = np.where(np.isnan(p95), cores, cores * np.clip(p95, 0, 100) / 100.0)
    return Requests(
        vm_id=vms["vm_id"].cast(pl.String).to_numpy().astype(object),
        arrival=created.astype(np.float64),
        departure=deleted,
        demand=np.ascontiguousarray(demand, dtype=np.float64),
        gpu_count=count,
        gpu_milli=milli,
        gpu_model=models,
        tenant=tenant,
        predicted_departure=predicted,
        p95_demand=p95_demand,
    )
