"""Cluster specs: server types with multi-dimensional capacity, counts and racks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleetlab.errors import ConfigError, DataNotFoundError, InputFormatError

#: resource dimensions a server type may declare (GPUs are declared with ``gpus``)
KNOWN_DIMS: tuple[str, ...] = ("cores", "memory_gb", "ssd_gb", "nic_gbps")
#: the dimension name under which whole GPUs are scored (free milli-GPUs / 1000)
GPU_DIM = "gpus"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ServerType(BaseModel):
    """One kind of server and how many of them the cluster has.

    Attributes
    ----------
    name
        Label of the type (e.g. ``"gpu-8xV100"``).
    count
        Number of servers of this type (>= 0).
    capacity
        Capacity per dimension: ``cores`` (vCPUs), ``memory_gb`` (GiB), ``ssd_gb`` (GB),
        ``nic_gbps`` (Gbit/s). Dimensions not given are 0.
    gpus
        Whole GPUs per server; each is shareable in milli-GPU units (1000 = one GPU).
    gpu_model
        GPU model name (informational; requests with a ``gpu_model`` must match it).
    """

    model_config = _FROZEN

    name: str
    count: int = Field(ge=0)
    capacity: dict[str, float]
    gpus: int = Field(default=0, ge=0, le=64)
    gpu_model: str | None = None

    @field_validator("capacity")
    @classmethod
    def _dims(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if key not in KNOWN_DIMS:
                raise ValueError(
                    f"unknown resource dimension {key!r} (expected one of {list(KNOWN_DIMS)})"
                )
            if not amount >= 0:
                raise ValueError(f"capacity {key!r} must be >= 0, found {amount!r}")
        return value


class ClusterSpec(BaseModel):
    """A cluster: server types, counts and fault domains.

    Attributes
    ----------
    name
        Label of the cluster.
    server_types
        The server types; servers are numbered type by type in this order.
    servers_per_rack
        Servers per rack (fault domain); racks are filled in server order.
    """

    model_config = _FROZEN

    name: str = "cluster"
    server_types: tuple[ServerType, ...]
    servers_per_rack: int = Field(default=40, ge=1)


@dataclass(frozen=True)
class Cluster:
    """A materialised cluster: one row per server, numpy arrays for fast scoring.

    Attributes
    ----------
    node_ids
        Server names, shape (N,).
    dims
        Scored dimensions, e.g. ``("cores", "memory_gb", "gpus")``.
    capacity
        Capacity per server and dimension, shape (N, D) (``gpus`` in whole GPUs).
    gpus
        GPUs per server, shape (N,).
    gpu_model
        GPU model per server (``""`` for none), shape (N,).
    rack
        Fault-domain index per server, shape (N,).
    server_type
        Type label per server, shape (N,).
    """

    node_ids: np.ndarray
    dims: tuple[str, ...]
    capacity: np.ndarray
    gpus: np.ndarray
    gpu_model: np.ndarray
    rack: np.ndarray
    server_type: np.ndarray

    @property
    def size(self) -> int:
        """Number of servers."""
        return int(self.capacity.shape[0])

    @property
    def max_gpus(self) -> int:
        """Most GPUs on one server (0 for a CPU-only cluster)."""
        return int(self.gpus.max()) if self.size else 0

    def total(self) -> dict[str, float]:
        """Total capacity per dimension."""
        return {d: float(self.capacity[:, j].sum()) for j, d in enumerate(self.dims)}

    def domains(self) -> dict[str, str]:
        """Node name -> rack name, for the shared fault models."""
        return {str(n): f"rack-{int(r)}" for n, r in zip(self.node_ids, self.rack, strict=True)}


def _make(
    names: list[str],
    caps: dict[str, np.ndarray],
    gpus: np.ndarray,
    models: list[str],
    types: list[str],
    servers_per_rack: int,
) -> Cluster:
    if not names:
        raise ConfigError("cluster: the cluster has no servers (expected at least one, found 0)")
    dims = [d for d in KNOWN_DIMS if d in caps and float(np.max(caps[d])) > 0]
    cap = np.column_stack([caps[d] for d in dims]) if dims else np.zeros((len(names), 0))
    if gpus.max() > 0:
        dims.append(GPU_DIM)
        cap = np.column_stack([cap, gpus.astype(np.float64)])
    if not dims:
        raise ConfigError("cluster: every server has zero capacity in every dimension")
    n = len(names)
    return Cluster(
        node_ids=np.asarray(names, dtype=object),
        dims=tuple(dims),
        capacity=np.ascontiguousarray(cap, dtype=np.float64),
        gpus=gpus.astype(np.int64),
        gpu_model=np.asarray(models, dtype=object),
        rack=np.arange(n, dtype=np.int64) // servers_per_rack,
        server_type=np.asarray(types, dtype=object),
    )


def build_cluster(spec: ClusterSpec) -> Cluster:
    """Materialise ``spec`` into per-server arrays.

    Raises
    ------
    ConfigError
        The spec has no servers or no capacity.
    """
    names: list[str] = []
    caps: dict[str, list[float]] = {d: [] for d in KNOWN_DIMS}
    gpus: list[int] = []
    models: list[str] = []
    types: list[str] = []
    for st in spec.server_types:
        for i in range(st.count):
            names.append(f"{st.name}-{i:05d}")
            for d in KNOWN_DIMS:
                caps[d].append(float(st.capacity.get(d, 0.0)))
            gpus.append(st.gpus)
            models.append(st.gpu_model or "")
            types.append(st.name)
    return _make(
        names,
        {d: np.asarray(v, dtype=np.float64) for d, v in caps.items()},
        np.asarray(gpus, dtype=np.int64),
        models,
        types,
        spec.servers_per_rack,
    )


def cluster_from_nodes(nodes: pl.DataFrame, *, servers_per_rack: int = 40) -> Cluster:
    """A cluster from a canonical ``nodes`` table (``node_id``, ``cores``, ``memory_gb``, ...).

    Raises
    ------
    ConfigError
        The table is empty or has negative capacities.
    """
    if nodes.height == 0:
        raise ConfigError("cluster: the node list is empty (expected at least one node)")
    for col in ("node_id", "cores", "memory_gb"):
        if col not in nodes.columns:
            raise ConfigError(f"cluster: node list lacks column {col!r} (found {nodes.columns})")
    caps = {}
    for d in KNOWN_DIMS:
        if d in nodes.columns:
            values = nodes[d].fill_null(0).cast(pl.Float64).to_numpy()
            bad = np.flatnonzero(values < 0)
            if bad.size:
                raise ConfigError(
                    f"cluster: node {nodes['node_id'][int(bad[0])]!r} field {d!r}: expected "
                    f">= 0, found {values[bad[0]]}"
                )
            caps[d] = values
    gpus = (
        nodes["gpus"].fill_null(0).cast(pl.Int64).to_numpy()
        if "gpus" in nodes.columns
        else np.zeros(nodes.height, dtype=np.int64)
    )
    models = (
        nodes["gpu_model"].fill_null("").to_list()
        if "gpu_model" in nodes.columns
        else [""] * nodes.height
    )
    types = [
        f"{c:g}c/{m:g}g/{g}x{mo or '-'}"
        for c, m, g, mo in zip(caps["cores"], caps["memory_gb"], gpus, models, strict=True)
    ]
    return _make(
        nodes["node_id"].cast(pl.String).to_list(),
        caps,
        gpus,
        models,
        types,
        servers_per_rack,
    )


def read_node_list(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read a node list as a canonical ``nodes`` table.

    Any format :mod:`fleetlab.traces` reads to a ``nodes`` table works: Alibaba GPU
    2023 (openb) and spot-GPU node lists, canonical ``nodes`` CSV/JSONL/Parquet.

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist.
    UnknownFormatError
        No reader recognises the file.
    InputFormatError
        The file is not a node list (names the table found).
    """
    from fleetlab import traces

    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    fmt = traces.detect(p)
    if fmt.table != "nodes":
        raise InputFormatError(
            p,
            "not a node list",
            expected="a nodes table (node_id, cores, memory_gb)",
            found=fmt.table,
        )
    return traces.load(p)


def load_cluster_spec(path: str | os.PathLike[str]) -> ClusterSpec:
    """Load a :class:`ClusterSpec` from YAML.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    ConfigError
        The YAML is malformed or a field is invalid (the message names the field).
    """
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"{p}: field {field!r}: {first['msg']} (found {first.get('input')!r})"
        ) from exc


def load_cluster(path: str | os.PathLike[str], *, servers_per_rack: int = 40) -> Cluster:
    """A cluster from a YAML spec (``.yaml``/``.yml``) or a node list (CSV/Parquet).

    Parameters
    ----------
    path
        The spec or node list.
    servers_per_rack
        Rack size used for node lists (a YAML spec carries its own).

    Raises
    ------
    DataNotFoundError, ConfigError, InputFormatError
        Missing file, invalid spec, or unreadable node list.
    """
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        return build_cluster(load_cluster_spec(p))
    return cluster_from_nodes(read_node_list(p), servers_per_rack=servers_per_rack)
