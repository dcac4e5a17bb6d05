"""Opening inputs by path: a spans or flows file of any supported format, or a graph file."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from fleetlab import traces
from fleetlab.depgraph._flows import FlowMiningSpec, mine_flows
from fleetlab.depgraph._graph import DependencyGraph, read_graph
from fleetlab.depgraph._spans import mine_spans
from fleetlab.errors import InputFormatError

_GRAPH_SUFFIXES = (".graphml",)


def load_table(
    path: str | os.PathLike[str], *, format: str | None = None
) -> tuple[str, pl.DataFrame]:
    """Read a trace file (any format ``fleetlab traces formats`` lists) as spans or flows.

    Returns
    -------
    (table, frame)
        ``'spans'`` or ``'flows'`` and the canonical table.

    Raises
    ------
    InputFormatError
        The file holds another canonical table (requests, vms, ...).
    DataNotFoundError, UnknownFormatError
        From :func:`fleetlab.traces.read`.
    """
    fmt = traces.format_named(format) if format else traces.detect(path)
    if fmt.table not in ("spans", "flows"):
        raise InputFormatError(
            path,
            "not a spans or flows table",
            expected="spans or flows",
            found=f"{fmt.table} ({fmt.name})",
        )
    return fmt.table, traces.load(path, format=format)


def mine_file(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    spec: FlowMiningSpec | None = None,
) -> DependencyGraph:
    """Mine the dependency graph of a spans file (trace links) or a flows file (timing).

    Parameters
    ----------
    path
        A trace file in any supported format, or a canonical Parquet table.
    format
        Skip format detection.
    spec
        Settings of the flow miner (flows input only).

    Returns
    -------
    DependencyGraph
    """
    fmt = traces.format_named(format) if format else traces.detect(path)
    if fmt.name == "parquet" and fmt.table == "spans":
        # canonical spans Parquet stores names dictionary-encoded: mine on the codes
        scan = traces.conform(
            pl.scan_parquet(Path(path)), "spans", keep_extra=True, keep_dictionary=True
        )
        return mine_spans(traces.collect(scan, path, format="parquet"), source=str(path))
    table, frame = load_table(path, format=format)
    if table == "spans":
        return mine_spans(frame, source=str(path))
    return mine_flows(frame, spec, source=str(path))


def graph_of(path: str | os.PathLike[str]) -> DependencyGraph:
    """A graph file (``.json`` from ``depgraph mine``, ``.graphml``) read, anything else mined.

    Returns
    -------
    DependencyGraph
    """
    p = Path(path)
    if p.suffix.lower() in _GRAPH_SUFFIXES:
        return read_graph(p)
    if p.suffix.lower() == ".json" and p.is_file():
        with p.open("rb") as f:
            head = f.read(4096)
        if b"fleetlab-depgraph" in head or b'"callCount"' in head:
            return read_graph(p)
    return mine_file(p)
