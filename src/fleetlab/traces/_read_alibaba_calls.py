"""Alibaba microservices call graphs (cluster-trace-microservices v2021 / v2022) -> spans.

Built from the published schema (alibaba/clusterdata ``cluster-trace-microservices-v2021``
and ``-v2022`` READMEs); no real rows are in the mirror. Columns are found by name, so
column order does not matter and a leading unnamed index column (as pandas writes it)
is ignored:

* v2021 ``MSCallGraph``: ``traceid, timestamp, rpcid, um, rpctype, dm, interface, rt``
* v2022 ``CallGraph``: ``timestamp, traceid, service, rpc_id, um, uminstanceid,
  rpctype, interface, dm, dminstanceid, rt``

One row is one call from an upstream (``um``) to a downstream microservice (``dm``).
``rpcid`` names the call; its parent is the call that ``um`` was serving, the rpcid with
its last component removed (``0.1.2`` -> ``0.1``; a one-component rpcid is a root).
RPC and HTTP calls are recorded twice, once by each side, with the same rpcid: the UM
side with a positive ``rt`` and the DM side with the negated DM response time. One row
is kept per (traceid, rpcid, um, dm, rpctype): the UM side when present (it is the
latency the caller saw), else the DM side with ``|rt|``. ``timestamp`` and ``rt`` are
milliseconds; ``timestamp`` counts from the start of the trace period (not the epoch),
so ``start_us`` is period-relative. service = ``dm`` (the callee), peer_service = ``um``
(the caller), kind = ``server`` for rpc/http/db/mc calls and ``consumer`` for mq.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, diagnose_csv
from fleetlab.traces._formats import head_lines
from fleetlab.traces._spans_common import finish

V2021 = ("traceid", "timestamp", "rpcid", "um", "rpctype", "dm", "interface", "rt")
V2022 = (
    "timestamp",
    "traceid",
    "service",
    "rpc_id",
    "um",
    "uminstanceid",
    "rpctype",
    "interface",
    "dm",
    "dminstanceid",
    "rt",
)
_KEY = ["traceid", "rpcid", "um", "dm", "rpctype"]
_KIND = {"rpc": "server", "http": "server", "db": "server", "mc": "server", "mq": "consumer"}
_STRING_COLUMNS = (
    "traceid",
    "rpcid",
    "rpc_id",
    "um",
    "rpctype",
    "dm",
    "interface",
    "service",
    "uminstanceid",
    "dminstanceid",
)


def _header(head: bytes) -> list[str]:
    lines = head_lines(head, 1)
    return [c.strip().strip('"').lower() for c in lines[0].split(",")] if lines else []


def _version(columns: list[str]) -> str | None:
    named = set(columns) - {"", "unnamed: 0"}
    if set(V2022) <= named:
        return "v2022"
    if set(V2021) <= named:
        return "v2021"
    return None


def sniff(path: Path, head: bytes) -> bool:
    """A CSV whose header has the v2021 or v2022 call-graph columns."""
    return path.is_file() and _version(_header(head)) is not None


def _raw(path: Path) -> pl.LazyFrame:
    from fleetlab.traces._formats import read_head

    header = _header(read_head(path))
    if _version(header) is None:
        raise InputFormatError(
            path,
            "not an Alibaba call-graph CSV",
            row=1,
            expected=f"columns {list(V2021)} or {list(V2022)}",
            found=header,
        )
    raw = pl.scan_csv(path, infer_schema=False, has_header=True, new_columns=header)
    rpcid = "rpc_id" if "rpc_id" in header else "rpcid"
    return raw.select(
        pl.col("traceid"),
        pl.col("timestamp").str.strip_chars().cast(pl.Float64).alias("timestamp"),
        pl.col(rpcid).str.strip_chars().alias("rpcid"),
        pl.col("um"),
        pl.col("rpctype").str.to_lowercase().alias("rpctype"),
        pl.col("dm"),
        pl.col("interface"),
        pl.col("rt").str.strip_chars().cast(pl.Float64).alias("rt"),
    )


def _one_side(raw: pl.LazyFrame) -> pl.LazyFrame:
    dm_side = (pl.col("rt") < 0).fill_null(False)
    return (
        raw.with_columns(dm_side.alias("_dm_side"))
        .filter(~pl.col("_dm_side") | (~pl.col("_dm_side")).any().not_().over(_KEY))
        .unique(subset=_KEY, keep="first", maintain_order=True)
    )


def scan(path: Path) -> pl.LazyFrame:
    """The calls of an Alibaba call-graph CSV as a lazy canonical spans table."""
    calls = _one_side(_raw(path))
    interface = pl.col("interface")
    has_interface = interface.is_not_null() & (interface.str.strip_chars() != "")
    frame = calls.select(
        pl.col("traceid").alias("trace_id"),
        pl.col("rpcid").alias("span_id"),
        pl.when(pl.col("rpcid").str.contains(".", literal=True))
        .then(pl.col("rpcid").str.replace(r"\.[^.]*$", ""))
        .otherwise(None)
        .alias("parent_id"),
        pl.col("dm").alias("service"),
        pl.when(has_interface).then(interface).otherwise(pl.col("rpctype")).alias("operation"),
        (pl.col("timestamp") * 1000).round().cast(pl.Int64).alias("start_us"),
        (pl.col("rt").abs() * 1000).round().cast(pl.Int64).alias("duration_us"),
        pl.lit("unset").alias("status"),
        pl.col("rpctype").replace_strict(_KIND, default=None, return_dtype=pl.String).alias("kind"),
        pl.col("um").alias("peer_service"),
    )
    return finish(frame)


def notes(path: Path) -> dict[str, int]:
    """Rows, DM-side rows, calls kept after merging the two sides, unknown rpctypes."""
    rows = (
        _raw(path)
        .select(
            pl.len().alias("rows"),
            (pl.col("rt") < 0).sum().alias("dm_side_rows"),
            (~pl.col("rpctype").is_in(list(_KIND))).sum().alias("unknown_rpctype"),
        )
        .collect()
        .row(0, named=True)
    )
    calls = _one_side(_raw(path)).select(pl.len()).collect().item()
    return {**{k: int(v) for k, v in rows.items()}, "sides_merged": int(rows["rows"] - calls)}


def diagnose(path: Path) -> InputFormatError | None:
    """The first bad line of an Alibaba call-graph CSV (error path only)."""
    from fleetlab.traces._formats import read_head

    header = _header(read_head(path))
    rpcid = "rpc_id" if "rpc_id" in header else "rpcid"
    fields = (
        Field("traceid", "id"),
        Field("timestamp", "number"),
        Field(rpcid, "id"),
        Field("um", "text", required=False),
        Field("dm", "text", required=False),
        Field("rt", "number", required=False),
    )
    return diagnose_csv(path, fields, header=True, strip_names=True)
