"""Azure VM traces: the 2017/2019 ``vmtable`` and ``vm_cpu_readings`` files, and the wide
per-VM CPU matrices of the 2017 dataset (one column per VM, one row per 5 minutes).

The published files have no header. ``vmtable``: ``vmid, subscriptionid, deploymentid,
vmcreated, vmdeleted, maxcpu, avgcpu, p95maxcpu, vmcategory, vmcorecountbucket,
vmmemorybucket`` (times in seconds from the trace start; CPU in percent; core and
memory buckets such as ``2``, ``>24``, ``>64``). ``vm_cpu_readings``: ``timestamp, vmid,
mincpu, maxcpu, avgcpu``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, check_last_line, csv_diagnoser, header_names
from fleetlab.traces._formats import Format, head_lines, read_head
from fleetlab.traces._schemas import conform

VMTABLE_COLUMNS = [
    "vmid",
    "subscriptionid",
    "deploymentid",
    "vmcreated",
    "vmdeleted",
    "maxcpu",
    "avgcpu",
    "p95maxcpu",
    "vmcategory",
    "vmcorecount",
    "vmmemory",
]
READING_COLUMNS = ["timestamp", "vmid", "mincpu", "maxcpu", "avgcpu"]
_CATEGORIES = {"Delay-insensitive", "Interactive", "Unknown"}
_NUM = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")
_BUCKET = re.compile(r">?\s*\d+(\.\d+)?")


def _rows(head: bytes, n: int = 5) -> list[list[str]]:
    return [next(csv.reader([line])) for line in head_lines(head, n)]


def _sniff_vmtable(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 11
        and _NUM.fullmatch(r[3])
        and _NUM.fullmatch(r[4])
        and _NUM.fullmatch(r[5])
        and r[8] in _CATEGORIES
        and _BUCKET.fullmatch(r[9])
        for r in rows
    )


def _bucket(column: str) -> pl.Expr:
    """A size bucket (``8`` or ``>24``) as a number; ``>N`` becomes N, its lower bound."""
    return (
        pl.col(column)
        .str.strip_chars()
        .str.strip_prefix(">")
        .str.strip_chars()
        .cast(pl.Float64, strict=True)
    )


def _scan_vmtable(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=11, header=False)
    schema = {
        "vmid": pl.String,
        "subscriptionid": pl.String,
        "deploymentid": pl.String,
        "vmcreated": pl.Float64,
        "vmdeleted": pl.Float64,
        "maxcpu": pl.Float64,
        "avgcpu": pl.Float64,
        "p95maxcpu": pl.Float64,
        "vmcategory": pl.String,
        "vmcorecount": pl.String,
        "vmmemory": pl.String,
    }
    raw = pl.scan_csv(path, has_header=False, schema=schema)
    frame = raw.select(
        pl.col("vmid").alias("vm_id"),
        pl.col("vmcreated").alias("created_s"),
        pl.col("vmdeleted").alias("deleted_s"),
        _bucket("vmcorecount").alias("cores"),
        _bucket("vmmemory").alias("memory_gb"),
        pl.col("subscriptionid").alias("tenant"),
        pl.col("p95maxcpu").alias("p95_cpu"),
        pl.col("avgcpu").alias("cpu_avg"),
        pl.col("maxcpu").alias("cpu_max"),
        pl.col("vmcategory").alias("category"),
        pl.col("deploymentid").alias("deployment"),
    )
    return conform(frame, "vms")


_VMTABLE_FIELDS = [
    Field("vmid", "id", column=0),
    Field("subscriptionid", "id", column=1),
    Field("deploymentid", "id", column=2),
    Field("vmcreated", "number", column=3),
    Field("vmdeleted", "number", column=4),
    Field("maxcpu", "number", column=5),
    Field("avgcpu", "number", column=6),
    Field("p95maxcpu", "number", column=7),
    Field("vmcategory", "text", column=8),
    Field("vmcorecount", "text", column=9),
    Field("vmmemory", "text", column=10),
]


def _sniff_readings(path: Path, head: bytes) -> bool:
    rows = _rows(head)
    return bool(rows) and all(
        len(r) == 5
        and _NUM.fullmatch(r[0])
        and not _NUM.fullmatch(r[1])
        and all(_NUM.fullmatch(x) for x in r[2:])
        for r in rows
    )


def _scan_readings(path: Path) -> pl.LazyFrame:
    check_last_line(path, fields=5, header=False)
    schema = {
        "timestamp": pl.Float64,
        "vmid": pl.String,
        "mincpu": pl.Float64,
        "maxcpu": pl.Float64,
        "avgcpu": pl.Float64,
    }
    raw = pl.scan_csv(path, has_header=False, schema=schema)
    frame = raw.select(
        pl.col("vmid").alias("vm_id"),
        pl.col("timestamp").alias("ts_s"),
        pl.col("avgcpu").alias("cpu_avg"),
        pl.col("maxcpu").alias("cpu_max"),
        pl.col("mincpu").alias("cpu_min"),
    )
    return conform(frame, "usage")


_READING_FIELDS = [
    Field("timestamp", "number", column=0),
    Field("vmid", "id", column=1),
    Field("mincpu", "number", column=2),
    Field("maxcpu", "number", column=3),
    Field("avgcpu", "number", column=4),
]

# The wide 2017 matrices: a header of VM ids (first cell empty or "rownames"), then one
# line per 5-minute sample: the sample number (1-based) and one CPU % per VM.
SAMPLE_S = 300.0


def _wide_header(head: bytes) -> list[str] | None:
    lines = head_lines(head, 2)
    if len(lines) < 2:
        return None
    names = header_names(lines[0])
    first = next(csv.reader([lines[1]]))
    if len(names) < 2 or names[0] not in ("", "rownames") or len(first) != len(names):
        return None
    if not all(re.fullmatch(r"\d+( \d+(\.\d+)?)?", n) for n in names[1:]):
        return None
    if not all(x == "" or x == "NA" or _NUM.fullmatch(x) for x in first):
        return None
    return names


def _sniff_wide_cpu(path: Path, head: bytes) -> bool:
    return _wide_header(head) is not None


def _max_sibling(path: Path) -> Path | None:
    if "_avg_" not in path.name:
        return None
    sibling = path.with_name(path.name.replace("_avg_", "_max_"))
    return sibling if sibling.is_file() else None


def _avg_sibling(path: Path) -> Path | None:
    if "_max_" not in path.name:
        return None
    sibling = path.with_name(path.name.replace("_max_", "_avg_"))
    return sibling if sibling.is_file() else None


def _matrix(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(VM ids, sample numbers, samples x VMs CPU %) of one wide matrix file."""
    check_last_line(path)
    names = _wide_header(read_head(path))
    if names is None:
        raise ValueError("not a wide per-VM CPU matrix")
    first = names[0] or "_sample"
    schema = {first: pl.Int64, **{n: pl.Float64 for n in names[1:]}}
    # "periodic" files name columns "<vm> <period hours>" and list a VM once per period
    # it shows (identical series): keep the first column of each VM.
    keep: dict[str, str] = {}
    for n in names[1:]:
        keep.setdefault(n.split(" ")[0], n)
    wide = pl.read_csv(
        path,
        has_header=False,
        skip_rows=1,
        new_columns=list(schema),
        schema=schema,
        null_values=["NA", ""],
    )
    if wide[first].null_count():
        raise ValueError("a sample number is missing")
    values = wide.select(list(keep.values())).to_numpy(order="fortran")
    return list(keep), wide[first].to_numpy(), values


def _long(vms: list[str], samples: np.ndarray, values: np.ndarray, column: str) -> pl.DataFrame:
    index = np.repeat(np.arange(len(vms), dtype=np.int64), len(samples))
    return pl.DataFrame(
        {
            "vm_id": pl.Series(vms, dtype=pl.String).gather(index),
            "ts_s": np.tile((samples - 1) * SAMPLE_S, len(vms)).astype(np.float64),
            column: values.ravel(order="F"),
        }
    )


def _scan_wide_cpu(path: Path) -> pl.LazyFrame:
    avg_path = _avg_sibling(path) or path
    if "_max_" in path.name and avg_path is path:  # a max matrix without its avg sibling
        frame = _long(*_matrix(path), "cpu_max").with_columns(
            pl.lit(None, pl.Float64).alias("cpu_avg")
        )
        return conform(frame.lazy().filter(pl.col("cpu_max").is_not_nan()), "usage")
    vms, samples, avg = _matrix(avg_path)
    frame = _long(vms, samples, avg, "cpu_avg")
    sibling = _max_sibling(avg_path)
    if sibling is not None:
        max_vms, max_samples, maxima = _matrix(sibling)
        if max_vms == vms and np.array_equal(max_samples, samples):
            frame = frame.with_columns(pl.Series("cpu_max", maxima.ravel(order="F")))
        else:  # different VMs or samples: match them by key
            other = _long(max_vms, max_samples, maxima, "cpu_max")
            frame = frame.join(other, on=["vm_id", "ts_s"], how="left", maintain_order="left")
    frame = frame.with_columns(pl.col(pl.Float64).fill_nan(None))
    return conform(frame.lazy().filter(pl.col("cpu_avg").is_not_null()), "usage")


def _diagnose_wide(path: Path) -> InputFormatError | None:
    names = _wide_header(read_head(path))
    if names is None:
        return None
    fields = [Field(names[0], "int")] + [Field(n, "number", required=False) for n in names[1:]]
    for p in filter(None, (path, _max_sibling(path))):
        found = csv_diagnoser(fields, header=True)(p)
        if found is not None:
            return found
    return None


def _usage_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "vms": frame["vm_id"].n_unique(),
        "cpu_out_of_range": frame.filter(
            (pl.col("cpu_avg") < 0) | (pl.col("cpu_avg") > 100)
        ).height,
        "max_below_avg": frame.filter(pl.col("cpu_max") < pl.col("cpu_avg") - 1e-9).height,
    }


def _vm_quality(frame: pl.DataFrame) -> dict[str, int]:
    return {
        "deleted_before_created": frame.filter(pl.col("deleted_s") < pl.col("created_s")).height,
        "negative_created": frame.filter(pl.col("created_s") < 0).height,
    }


FORMATS: tuple[Format, ...] = (
    Format(
        "azure-vmtable",
        "vms",
        "Azure VM 2017/2019 vmtable (no header: vmid, subscriptionid, ..., vmcategory, buckets)",
        _sniff_vmtable,
        _scan_vmtable,
        diagnose=csv_diagnoser(_VMTABLE_FIELDS, header=False, ncols=11),
        nonnull=("vm_id", "created_s", "cores", "memory_gb"),
        quality=_vm_quality,
    ),
    Format(
        "azure-vm-cpu-readings",
        "usage",
        "Azure VM 2017/2019 vm_cpu_readings (no header: timestamp, vmid, min, max, avg CPU %)",
        _sniff_readings,
        _scan_readings,
        diagnose=csv_diagnoser(_READING_FIELDS, header=False, ncols=5),
        nonnull=("vm_id", "ts_s", "cpu_avg"),
        quality=_usage_quality,
    ),
    Format(
        "azure-vm-cpu-wide",
        "usage",
        "Azure VM 2017 per-VM CPU % matrix (one column per VM, 5-minute rows; *_avg_* + *_max_*)",
        _sniff_wide_cpu,
        _scan_wide_cpu,
        diagnose=_diagnose_wide,
        nonnull=("vm_id", "ts_s"),
        quality=_usage_quality,
    ),
)
