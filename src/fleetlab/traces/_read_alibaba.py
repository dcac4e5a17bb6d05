"""Alibaba batch-cluster traces as vms-like lifetime tables.

* cluster-trace-v2018 batch sample of the ``spar`` package (no header):
  ``sample_tasks``: ``arrival_s, job, task, duration_s, plan_cpu, plan_mem, instance_num``;
  ``sample_instances``: ``arrival_s, job, task, instance, duration_s, cpu_avg, mem_avg``.
  Column meanings were checked on the real files: every (job, task) of the instances
  file has exactly ``instance_num`` instances, all with the task's arrival time; the
  task's duration equals the longest instance's in 43 % of tasks and is never shorter.
* cluster-trace-v2018 original ``batch_task`` (``task_name, instance_num, job_name,
  task_type, status, start_time, end_time, plan_cpu, plan_mem``) and ``batch_instance``
  (``instance_name, task_name, job_name, task_type, status, start_time, end_time,
  machine_id, seq_no, total_seq_no, cpu_avg, cpu_max, mem_avg, mem_max``), no header.
* cluster-trace-v2017 ``batch_task`` (``create_timestamp, modify_timestamp, job_id,
  task_id, instance_num, status, plan_cpu, plan_mem``), with or without the header line
  some copies add.

Mapping: ``cores = plan_cpu / 100`` (100 = one core); memory is only published
normalised, so ``memory_gb`` stays empty and ``memory_norm`` holds the fraction of the
largest machine's memory (v2018 publishes percent: divided by 100; v2017 a fraction).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, Kind, check_last_line, csv_diagnoser, header_names
from fleetlab.traces._formats import Format, head_lines, read_head
from fleetlab.traces._schemas import conform

_INT = re.compile(r"-?\d+")
_NUM = re.compile(r"-?\d+(\.\d*)?([eE][+-]?\d+)?")
_STATUS = {"Terminated", "Failed", "Waiting", "Running", "Ready", "Cancelled", "Interrupted"}


def _rows(head: bytes, n: int = 5) -> list[list[str]]:
    return [next(csv.reader([line])) for line in head_lines(head, n)]


# --- spar sample (v2018) -----------------------------------------------------------

_SPAR_TASKS = {
    "arrival_s": pl.Float64,
    "job": pl.String,
    "task": pl.String,
    "duration_s": pl.Float64,
    "plan_cpu": pl.Float64,
    "plan_mem": pl.Float64,
    "instance_num": pl.Int64,
}
_SPAR_INSTANCES = {
    "arrival_s": pl.Float64,
    "job": pl.String,
    "task": pl.String,
    "instance": pl.String,
    "duration_s": pl.Float64,
    "cpu_avg": pl.Float64,
    "mem_avg": pl.Float64,
}


def _sniff_spar_tasks(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 7
        and _NUM.fullmatch(r[0])
        and r[1].startswith("j_")
        and _NUM.fullmatch(r[3])
        and _NUM.fullmatch(r[4])
        and _NUM.fullmatch(r[5])
        and _INT.fullmatch(r[6])
        for r in rows
    )


def _sniff_spar_instances(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 7
        and _NUM.fullmatch(r[0])
        and r[1].startswith("j_")
        and r[3].startswith("ins_")
        and _NUM.fullmatch(r[4])
        for r in rows
    )


def _spar_tasks(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=7, header=False)
    return pl.scan_csv(path, has_header=False, schema=_SPAR_TASKS)


def _scan_spar_tasks(path: Path) -> pl.LazyFrame:
    raw = _spar_tasks(path)
    frame = raw.select(
        pl.format("{}/{}", "job", "task").alias("vm_id"),
        pl.col("arrival_s").alias("created_s"),
        (pl.col("arrival_s") + pl.col("duration_s")).alias("deleted_s"),
        (pl.col("plan_cpu") / 100.0).alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),
        pl.col("job"),
        pl.col("task"),
        (pl.col("plan_mem") / 100.0).alias("memory_norm"),
        pl.col("instance_num").alias("instances"),
    )
    return conform(frame, "vms")


def _tasks_sibling(path: Path) -> Path | None:
    name = path.name.replace("instances", "tasks")
    sibling = path.with_name(name)
    return sibling if name != path.name and sibling.is_file() else None


def _scan_spar_instances(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=7, header=False)
    raw = pl.scan_csv(path, has_header=False, schema=_SPAR_INSTANCES)
    tasks = _tasks_sibling(path)
    if tasks is not None:
        plan = _spar_tasks(tasks).select("job", "task", "plan_cpu", "plan_mem")
        raw = raw.join(plan, on=["job", "task"], how="left", maintain_order="left")
    else:
        raw = raw.with_columns(
            pl.lit(None, pl.Float64).alias("plan_cpu"), pl.lit(None, pl.Float64).alias("plan_mem")
        )
    frame = raw.select(
        pl.col("instance").alias("vm_id"),
        pl.col("arrival_s").alias("created_s"),
        (pl.col("arrival_s") + pl.col("duration_s")).alias("deleted_s"),
        (pl.col("plan_cpu") / 100.0).alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),
        (pl.col("cpu_avg") / pl.col("plan_cpu") * 100.0).alias("cpu_avg"),
        pl.col("job"),
        pl.col("task"),
        (pl.col("plan_mem") / 100.0).alias("memory_norm"),
        (pl.col("cpu_avg") / 100.0).alias("used_cores"),
        (pl.col("mem_avg") / 100.0).alias("used_memory_norm"),
    )
    return conform(frame, "vms")


_SPAR_TASK_FIELDS = [
    Field("arrival_s", "number", column=0),
    Field("job", "id", column=1),
    Field("task", "id", column=2),
    Field("duration_s", "number", column=3),
    Field("plan_cpu", "number", column=4),
    Field("plan_mem", "number", column=5),
    Field("instance_num", "int", column=6),
]
_SPAR_INSTANCE_FIELDS = [
    Field("arrival_s", "number", column=0),
    Field("job", "id", column=1),
    Field("task", "id", column=2),
    Field("instance", "id", column=3),
    Field("duration_s", "number", column=4),
    Field("cpu_avg", "number", column=5),
    Field("mem_avg", "number", column=6),
]


def _diagnose_spar_instances(path: Path) -> InputFormatError | None:
    found = csv_diagnoser(_SPAR_INSTANCE_FIELDS, header=False, ncols=7)(path)
    tasks = _tasks_sibling(path)
    if found is None and tasks is not None:
        found = csv_diagnoser(_SPAR_TASK_FIELDS, header=False, ncols=7)(tasks)
    return found


# --- cluster-trace-v2018 originals ---------------------------------------------------

_V2018_TASK = {
    "task_name": pl.String,
    "instance_num": pl.Int64,
    "job_name": pl.String,
    "task_type": pl.String,
    "status": pl.String,
    "start_time": pl.Float64,
    "end_time": pl.Float64,
    "plan_cpu": pl.Float64,
    "plan_mem": pl.Float64,
}
_V2018_INSTANCE = {
    "instance_name": pl.String,
    "task_name": pl.String,
    "job_name": pl.String,
    "task_type": pl.String,
    "status": pl.String,
    "start_time": pl.Float64,
    "end_time": pl.Float64,
    "machine_id": pl.String,
    "seq_no": pl.Int64,
    "total_seq_no": pl.Int64,
    "cpu_avg": pl.Float64,
    "cpu_max": pl.Float64,
    "mem_avg": pl.Float64,
    "mem_max": pl.Float64,
}


def _sniff_v2018_task(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 9 and r[2].startswith("j_") and r[4] in _STATUS and _INT.fullmatch(r[1])
        for r in rows
    )


def _sniff_v2018_instance(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 14 and r[2].startswith("j_") and r[4] in _STATUS for r in rows
    )


def _ended(status: str = "status") -> pl.Expr:
    return pl.col(status).is_in(["Terminated", "Failed", "Cancelled", "Interrupted"])


def _scan_v2018_task(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=9, header=False)
    raw = pl.scan_csv(path, has_header=False, schema=_V2018_TASK)
    frame = raw.select(
        pl.format("{}/{}", "job_name", "task_name").alias("vm_id"),
        pl.col("start_time").alias("created_s"),
        pl.when(_ended() & (pl.col("end_time") > 0)).then(pl.col("end_time")).alias("deleted_s"),
        (pl.col("plan_cpu") / 100.0).alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),
        pl.col("job_name").alias("job"),
        pl.col("task_name").alias("task"),
        pl.col("status"),
        (pl.col("plan_mem") / 100.0).alias("memory_norm"),
        pl.col("instance_num").alias("instances"),
        pl.col("task_type").alias("category"),
    )
    return conform(frame, "vms")


def _scan_v2018_instance(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=14, header=False)
    raw = pl.scan_csv(path, has_header=False, schema=_V2018_INSTANCE)
    frame = raw.select(
        pl.col("instance_name").alias("vm_id"),
        pl.col("start_time").alias("created_s"),
        pl.when(_ended() & (pl.col("end_time") > 0)).then(pl.col("end_time")).alias("deleted_s"),
        pl.lit(None, pl.Float64).alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),
        pl.col("job_name").alias("job"),
        pl.col("task_name").alias("task"),
        pl.col("status"),
        (pl.col("cpu_avg") / 100.0).alias("used_cores"),
        (pl.col("mem_avg") / 100.0).alias("used_memory_norm"),
        pl.col("task_type").alias("category"),
    )
    return conform(frame, "vms")


# --- cluster-trace-v2017 batch_task --------------------------------------------------

_V2017_HEADER = [
    "task_create_time",
    "task_end_time",
    "job_id",
    "task_id",
    "number_of_instances",
    "status",
    "number_of_cpus_requested_per_instance_in_the_task",
    "normalized_memory_requested_per_instance_in_the_task",
]
_V2017 = {
    "create_timestamp": pl.Float64,
    "modify_timestamp": pl.Float64,
    "job_id": pl.String,
    "task_id": pl.String,
    "instance_num": pl.Int64,
    "status": pl.String,
    "plan_cpu": pl.Float64,
    "plan_mem": pl.Float64,
}


def _v2017_has_header(head: bytes) -> bool:
    lines = head_lines(head, 1)
    return bool(lines) and header_names(lines[0]) == _V2017_HEADER


def _sniff_v2017(path: Path, head: bytes) -> bool:
    if _v2017_has_header(head):
        return True
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 8
        and _NUM.fullmatch(r[0])
        and _NUM.fullmatch(r[1])
        and _INT.fullmatch(r[2])
        and _INT.fullmatch(r[3])
        and r[5] in _STATUS
        for r in rows
    )


def _scan_v2017(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=8, header=False)
    skip = 1 if _v2017_has_header(read_head(path, 4096)) else 0
    raw = pl.scan_csv(path, has_header=False, skip_rows=skip, schema=_V2017)
    frame = raw.select(
        pl.format("{}/{}", "job_id", "task_id").alias("vm_id"),
        pl.col("create_timestamp").alias("created_s"),
        # modify_timestamp is the last state change: an end time only once the task ended
        pl.when(_ended()).then(pl.col("modify_timestamp")).alias("deleted_s"),
        (pl.col("plan_cpu") / 100.0).alias("cores"),
        pl.lit(None, pl.Float64).alias("memory_gb"),
        pl.col("job_id").alias("job"),
        pl.col("task_id").alias("task"),
        pl.col("status"),
        pl.col("plan_mem").alias("memory_norm"),
        pl.col("instance_num").alias("instances"),
    )
    return conform(frame, "vms")


def _diagnose_v2017(path: Path) -> InputFormatError | None:
    spec: list[tuple[str, Kind, bool]] = [
        ("create_timestamp", "number", True),
        ("modify_timestamp", "number", True),
        ("job_id", "int", True),
        ("task_id", "int", True),
        ("instance_num", "int", True),
        ("status", "text", True),
        ("plan_cpu", "number", False),
        ("plan_mem", "number", False),
    ]
    fields = [Field(n, k, required=r, column=i) for i, (n, k, r) in enumerate(spec)]
    if _v2017_has_header(read_head(path, 4096)):
        named = [Field(h, f.kind, f.required) for h, f in zip(_V2017_HEADER, fields, strict=True)]
        return csv_diagnoser(named, header=True, strip_names=True)(path)
    return csv_diagnoser(fields, header=False, ncols=8)(path)


def _batch_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "rows_without_cpu_request": frame["cores"].null_count(),
        "negative_times": frame.filter(
            (pl.col("created_s") < 0) | (pl.col("deleted_s") < 0)
        ).height,
        "ended_before_created": frame.filter(pl.col("deleted_s") < pl.col("created_s")).height,
        "not_ended": frame["deleted_s"].null_count(),
    }


def _kind(dtype: object) -> Kind:
    return "text" if dtype == pl.String else "int" if dtype == pl.Int64 else "number"


_FIELDS_2018_TASK = [
    Field(n, _kind(t), required=n in ("task_name", "job_name", "start_time"), column=i)
    for i, (n, t) in enumerate(_V2018_TASK.items())
]
_FIELDS_2018_INSTANCE = [
    Field(n, _kind(t), required=n in ("instance_name", "job_name", "start_time"), column=i)
    for i, (n, t) in enumerate(_V2018_INSTANCE.items())
]

FORMATS: tuple[Format, ...] = (
    Format(
        "alibaba-2018-spar-tasks",
        "vms",
        "Alibaba cluster-trace-v2018 batch tasks, spar sample (arrival, job, task, duration, "
        "plan_cpu, plan_mem, instances)",
        _sniff_spar_tasks,
        _scan_spar_tasks,
        diagnose=csv_diagnoser(_SPAR_TASK_FIELDS, header=False, ncols=7),
        nonnull=("vm_id", "created_s", "deleted_s", "cores", "memory_norm", "instances"),
        quality=_batch_quality,
    ),
    Format(
        "alibaba-2018-spar-instances",
        "vms",
        "Alibaba cluster-trace-v2018 batch instances, spar sample (+ sample_tasks beside it)",
        _sniff_spar_instances,
        _scan_spar_instances,
        diagnose=_diagnose_spar_instances,
        nonnull=("vm_id", "created_s", "deleted_s", "used_cores", "used_memory_norm"),
        quality=_batch_quality,
    ),
    Format(
        "alibaba-2018-batch-task",
        "vms",
        "Alibaba cluster-trace-v2018 batch_task (task_name, instance_num, job_name, ...)",
        _sniff_v2018_task,
        _scan_v2018_task,
        diagnose=csv_diagnoser(_FIELDS_2018_TASK, header=False, ncols=9),
        nonnull=("vm_id", "created_s"),
        quality=_batch_quality,
    ),
    Format(
        "alibaba-2018-batch-instance",
        "vms",
        "Alibaba cluster-trace-v2018 batch_instance (instance_name, task_name, job_name, ...)",
        _sniff_v2018_instance,
        _scan_v2018_instance,
        diagnose=csv_diagnoser(_FIELDS_2018_INSTANCE, header=False, ncols=14),
        nonnull=("vm_id", "created_s"),
        quality=_batch_quality,
    ),
    Format(
        "alibaba-2017-batch-task",
        "vms",
        "Alibaba cluster-trace-v2017 batch_task (create/modify time, job, task, plan_cpu, ...)",
        _sniff_v2017,
        _scan_v2017,
        diagnose=_diagnose_v2017,
        nonnull=("vm_id", "created_s"),
        quality=_batch_quality,
    ),
)
