"""Alibaba GPU cluster traces: openb pods and nodes (2023), DLRM instances (2025) and the
spot-GPU node list (2026).

Mappings (documented in docs/formats.md): ``cpu_milli / 1000`` -> cores,
``memory_mib / 1024`` -> memory_gb, ``num_gpu`` -> gpus, ``gpu_milli`` (thousandths of
one GPU, for pods that share a GPU) -> gpu_milli, ``gpu_spec`` -> gpu_model (``a|b``
means either), ``qos`` -> priority, ``pod_phase`` -> status. All times are already
seconds from the trace start; the DLRM trace leaves a time empty when it falls outside
the trace (created before it started, deleted after it ended) and so do we.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from fleetlab.traces._checks import Field, Kind, check_last_line, csv_diagnoser, header_names
from fleetlab.traces._formats import Format, head_lines
from fleetlab.traces._schemas import conform

OPENB_POD = [
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
]
OPENB_NODE = ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
DLRM = [
    "instance_sn",
    "role",
    "app_name",
    "cpu_request",
    "cpu_limit",
    "gpu_request",
    "gpu_limit",
    "rdma_request",
    "rdma_limit",
    "memory_request",
    "memory_limit",
    "disk_request",
    "disk_limit",
    "max_instance_per_node",
    "creation_time",
    "scheduled_time",
    "deletion_time",
]
SPOT_NODE = ["gpu_model", "gpu_capacity_num", "cpu_num", "node_name"]


def _header_is(columns: list[str]) -> Callable[[Path, bytes], bool]:
    def sniff(path: Path, head: bytes) -> bool:
        lines = head_lines(head, 1)
        return bool(lines) and header_names(lines[0]) == columns

    return sniff


def _scan_openb_pods(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    schema = {
        "name": pl.String,
        "cpu_milli": pl.Float64,
        "memory_mib": pl.Float64,
        "num_gpu": pl.Float64,
        "gpu_milli": pl.Int64,
        "gpu_spec": pl.String,
        "qos": pl.String,
        "pod_phase": pl.String,
        "creation_time": pl.Float64,
        "deletion_time": pl.Float64,
        "scheduled_time": pl.Float64,
    }
    raw = pl.scan_csv(path, schema=schema, has_header=True)
    frame = raw.select(
        pl.col("name").alias("vm_id"),
        pl.col("creation_time").alias("created_s"),
        pl.col("deletion_time").alias("deleted_s"),
        (pl.col("cpu_milli") / 1000.0).alias("cores"),
        (pl.col("memory_mib") / 1024.0).alias("memory_gb"),
        pl.col("qos").alias("priority"),
        pl.col("num_gpu").alias("gpus"),
        pl.col("gpu_milli"),
        pl.col("gpu_spec").alias("gpu_model"),
        pl.col("scheduled_time").alias("scheduled_s"),
        pl.col("pod_phase").alias("status"),
    )
    return conform(frame, "vms")


def _scan_openb_nodes(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    schema = {
        "sn": pl.String,
        "cpu_milli": pl.Float64,
        "memory_mib": pl.Float64,
        "gpu": pl.Int64,
        "model": pl.String,
    }
    raw = pl.scan_csv(path, schema=schema, has_header=True)
    frame = raw.select(
        pl.col("sn").alias("node_id"),
        (pl.col("cpu_milli") / 1000.0).alias("cores"),
        (pl.col("memory_mib") / 1024.0).alias("memory_gb"),
        pl.col("gpu").alias("gpus"),
        pl.col("model").alias("gpu_model"),
    )
    return conform(frame, "nodes")


def _scan_dlrm(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    schema = pl.Schema(
        {
            **{c: pl.Float64 for c in DLRM},
            "instance_sn": pl.String,
            "role": pl.String,
            "app_name": pl.String,
            "max_instance_per_node": pl.Int64,
        }
    )
    raw = pl.scan_csv(path, schema=schema, has_header=True, null_values=["", "NaN", "nan"])
    frame = raw.select(
        pl.col("instance_sn").alias("vm_id"),
        pl.col("creation_time").alias("created_s"),
        pl.col("deletion_time").alias("deleted_s"),
        pl.col("cpu_request").alias("cores"),
        pl.col("memory_request").alias("memory_gb"),
        pl.col("app_name").alias("tenant"),
        pl.lit("LS").alias("priority"),  # the README: every instance is latency-sensitive
        pl.col("gpu_request").alias("gpus"),
        (pl.col("gpu_request") * 1000).cast(pl.Int64).alias("gpu_milli"),
        pl.col("scheduled_time").alias("scheduled_s"),
        pl.col("app_name").alias("job"),
        pl.col("role").alias("category"),
    )
    return conform(frame, "vms")


def _scan_spot_nodes(path: Path) -> pl.LazyFrame:
    check_last_line(path)
    schema = {
        "gpu_model": pl.String,
        "gpu_capacity_num": pl.Int64,
        "cpu_num": pl.Float64,
        "node_name": pl.String,
    }
    raw = pl.scan_csv(path, schema=schema, has_header=True)
    frame = raw.select(
        pl.col("node_name").alias("node_id"),
        pl.col("cpu_num").alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),  # not published for this trace
        pl.col("gpu_capacity_num").alias("gpus"),
        pl.col("gpu_model"),
    )
    return conform(frame, "nodes")


def _vm_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "deleted_before_created": frame.filter(pl.col("deleted_s") < pl.col("created_s")).height,
        "created_before_trace": frame["created_s"].null_count(),
        "not_deleted": frame["deleted_s"].null_count(),
        "zero_resources": frame.filter((pl.col("cores") == 0) & (pl.col("memory_gb") == 0)).height,
    }


def _node_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "nodes": frame.height,
        "duplicate_ids": frame.height - frame["node_id"].n_unique(),
        "gpu_nodes": frame.filter(pl.col("gpus") > 0).height,
    }


def _fields(names: list[str], kinds: dict[str, Kind], optional: set[str]) -> list[Field]:
    return [Field(n, kinds.get(n, "number"), required=n not in optional) for n in names]


FORMATS: tuple[Format, ...] = (
    Format(
        "alibaba-gpu-2023-pods",
        "vms",
        "Alibaba GPU cluster 2023 openb pod list (cpu_milli, memory_mib, num_gpu, gpu_milli, ...)",
        _header_is(OPENB_POD),
        _scan_openb_pods,
        diagnose=csv_diagnoser(
            _fields(
                OPENB_POD,
                {
                    "name": "id",
                    "gpu_spec": "text",
                    "qos": "text",
                    "pod_phase": "text",
                    "gpu_milli": "int",
                },
                {"gpu_spec", "qos", "pod_phase", "deletion_time", "scheduled_time"},
            ),
            header=True,
        ),
        nonnull=("vm_id", "created_s", "cores", "memory_gb"),
        quality=_vm_quality,
    ),
    Format(
        "alibaba-gpu-2023-nodes",
        "nodes",
        "Alibaba GPU cluster 2023 openb node list (sn, cpu_milli, memory_mib, gpu, model)",
        _header_is(OPENB_NODE),
        _scan_openb_nodes,
        diagnose=csv_diagnoser(
            _fields(OPENB_NODE, {"sn": "id", "model": "text", "gpu": "int"}, {"model"}), header=True
        ),
        nonnull=("node_id", "cores", "memory_gb", "gpus"),
        quality=_node_quality,
    ),
    Format(
        "alibaba-gpu-2025-dlrm",
        "vms",
        "Alibaba GPU 2025 disaggregated DLRM instances (cpu/gpu/memory requests, times)",
        _header_is(DLRM),
        _scan_dlrm,
        diagnose=csv_diagnoser(
            _fields(
                DLRM,
                {
                    "instance_sn": "id",
                    "role": "text",
                    "app_name": "text",
                    "max_instance_per_node": "int",
                },
                {"creation_time", "scheduled_time", "deletion_time"},
            ),
            header=True,
        ),
        nonnull=("vm_id", "cores", "memory_gb", "gpus"),
        quality=_vm_quality,
    ),
    Format(
        "alibaba-spot-gpu-nodes",
        "nodes",
        "Alibaba spot-GPU 2026 node_info (gpu_model, gpu_capacity_num, cpu_num, node_name)",
        _header_is(SPOT_NODE),
        _scan_spot_nodes,
        diagnose=csv_diagnoser(
            _fields(
                SPOT_NODE,
                {"gpu_model": "text", "node_name": "id", "gpu_capacity_num": "int"},
                set(),
            ),
            header=True,
        ),
        nonnull=("node_id", "cores", "gpus"),
        quality=_node_quality,
    ),
)
