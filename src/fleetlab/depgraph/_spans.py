"""Mining the service graph and the operation graph from a spans table (Polars group-bys)."""

from __future__ import annotations

import math
from typing import Any, cast

import networkx as nx
import numpy as np
import polars as pl

from fleetlab.depgraph._clean import clean_spans_indexed
from fleetlab.depgraph._graph import DependencyGraph

_ASYNC_KINDS = ["producer", "consumer"]


def call_links(frame: pl.DataFrame, *, async_tolerance_us: int = 1000) -> pl.DataFrame:
    """Cross-service calls of a cleaned spans frame, one row per call.

    A call is a parent->child link whose services differ (client/server pairs and
    in-service child spans therefore count once and never make self-loops), plus leaf client or
    producer spans whose callee is only named by ``peer_service`` (an uninstrumented
    database or broker), plus server/consumer spans whose parent is missing but whose
    caller is named by ``peer_service`` (broken Alibaba call graphs keep their edges).

    Returns
    -------
    polars.DataFrame
        ``caller, callee, caller_op, callee_op, trace_id, tk, start_us, latency_us, is_error,
        is_async``; latency is the caller-side client span when there is one, else the
        callee's span (µs). ``trace_id`` is left out when the frame has none (the lean
        frame ``mine_spans`` uses), and the names keep the frame's dtype (String, or
        Categorical in a lean frame).
    """
    cross = pl.col("p_service").is_not_null() & (pl.col("p_service") != pl.col("service"))
    ids = [c for c in ("trace_id", "tk") if c in frame.columns]  # a lean frame has no trace_id
    links = (
        frame.lazy()
        .filter(cross)
        .select(
            pl.col("p_service").alias("caller"),
            pl.col("service").alias("callee"),
            pl.col("p_operation").alias("caller_op"),
            pl.col("operation").alias("callee_op"),
            *ids,
            pl.col("start_us"),
            pl.when(pl.col("p_kind") == "client")
            .then(pl.col("p_duration_us"))
            .otherwise(pl.col("duration_us"))
            .alias("latency_us"),
            (pl.col("is_error") | ((pl.col("p_kind") == "client") & pl.col("p_is_error")))
            .fill_null(False)
            .alias("is_error"),
            (
                pl.col("kind").is_in(_ASYNC_KINDS).fill_null(False)
                | (pl.col("p_kind") == "producer").fill_null(False)
                | (pl.col("duration_us") > pl.col("p_duration_us") + async_tolerance_us).fill_null(
                    False
                )
            ).alias("is_async"),
            pl.col("pk").alias("_ck"),
        )
        .collect()
    )
    if frame["peer_service"].null_count() == frame.height:  # nothing names a peer
        return links.drop("_ck")
    has_cross_child = links["_ck"].unique().implode()
    leaf = (
        frame.lazy()
        .filter(
            pl.col("kind").is_in(["client", "producer"])
            & pl.col("peer_service").is_not_null()
            & (pl.col("peer_service") != pl.col("service"))
            & ~pl.col("k").is_in(has_cross_child)
        )
        .select(
            pl.col("service").alias("caller"),
            pl.col("peer_service").alias("callee"),
            pl.col("operation").alias("caller_op"),
            pl.col("operation").alias("callee_op"),
            *ids,
            "start_us",
            pl.col("duration_us").alias("latency_us"),
            pl.col("is_error").fill_null(False),
            (pl.col("kind") == "producer").alias("is_async"),
        )
        .collect()
    )
    # a span whose parent is missing but whose caller is named (Alibaba's um, Zipkin's
    # remote endpoint of a server span): the call is still known, from its callee side
    named = (
        frame.lazy()
        .filter(
            pl.col("pk").is_not_null()
            & pl.col("p_service").is_null()
            & pl.col("kind").is_in(["server", "consumer"])
            & pl.col("peer_service").is_not_null()
            & (pl.col("peer_service") != pl.col("service"))
        )
        .select(
            pl.col("peer_service").alias("caller"),
            pl.col("service").alias("callee"),
            pl.lit(None).cast(frame.schema["operation"]).alias("caller_op"),
            pl.col("operation").alias("callee_op"),
            *ids,
            "start_us",
            pl.col("duration_us").alias("latency_us"),
            pl.col("is_error").fill_null(False),
            (pl.col("kind") == "consumer").alias("is_async"),
        )
        .collect()
    )
    return pl.concat([links.drop("_ck"), leaf, named], how="vertical_relaxed")


def _edge_stats(links: pl.DataFrame, keys: list[str], window_s: float | None) -> pl.LazyFrame:
    # times the reciprocal, which is what Polars computes for ``/ 1000.0`` over a column
    # of more than one value, but not over one value (a one-row chunk or group, which
    # depends on the plan and on thread timing): written out, the last bit is the same
    # in every run
    lat_ms = pl.col("latency_us").cast(pl.Float64) * 0.001
    rate = pl.len() / window_s if window_s else pl.lit(math.nan)
    return (
        links.lazy()
        .group_by(keys)
        .agg(
            pl.len().alias("calls"),
            rate.alias("rate_per_s"),
            lat_ms.quantile(0.5, "linear").alias("p50_ms"),
            lat_ms.quantile(0.99, "linear").alias("p99_ms"),
            lat_ms.mean().alias("mean_ms"),
            pl.col("is_error").mean().alias("error_rate"),
            pl.col("is_async").mean().alias("async_share"),
        )
        .with_columns(pl.col(keys).cast(pl.String))  # Categorical keys (encoded spans)
        .sort(keys)
    )


def mine_spans(
    spans: pl.DataFrame | pl.LazyFrame,
    *,
    window_s: float | None = None,
    async_tolerance_us: int = 1000,
    trace_stats: bool = True,
    source: str = "<spans>",
) -> DependencyGraph:
    """Mine the service graph and the operation graph from a canonical spans table.

    Every step is a Polars join or group-by over whole columns. Duplicated rows are dropped,
    Zipkin's shared client/server ids split, ns/ms timestamps in a µs table rescaled,
    negative durations kept as calls but left out of latency statistics, and spans whose
    parent is unknown (broken traces) counted; all of it is in ``graph.meta['quality']``.

    Parameters
    ----------
    spans
        Canonical ``spans`` table (see ``fleetlab.traces.TABLES['spans']``), eager or lazy.
    window_s
        Length of the observation window in seconds for ``rate_per_s``; default: from the
        first span start to the last span end.
    async_tolerance_us
        A call is asynchronous when the callee's span outlives the caller's by more than
        this (µs; robust to clock skew, which shifts spans but does not stretch them), or
        when a span kind is ``producer``/``consumer``.
    trace_stats
        Also count, per service, the traces that touch it and the entry point of each
        (exact blast-radius shares), and mine its exclusive time and the network gaps of
        calls (``self_ms_mean``, ``net_out_ms_mean``, ``net_in_ms_mean`` on nodes,
        ``net_ms_mean`` on edges: what ``diff_graphs`` ranks suspects by).
    source
        Name used in error messages (a file path).

    Returns
    -------
    DependencyGraph
        Edges carry ``calls``, ``rate_per_s``, ``p50_ms``, ``p99_ms``, ``mean_ms``,
        ``error_rate``, ``kind`` and ``confidence`` = 1 (and ``net_ms_mean`` with
        ``trace_stats``, on edges with calls made through a client span).

    Raises
    ------
    InputFormatError
        A required span column is missing or has the wrong type.
    """
    frame, quality, parent_row = clean_spans_indexed(spans, source=source, lean=True)
    if window_s is None and frame.height:
        # clean_spans makes start_us and end_us Int64: int, or None when all are null
        lo = cast("int | None", frame["start_us"].min())
        hi = cast("int | None", frame["end_us"].max())
        window_s = (hi - lo) / 1e6 if lo is not None and hi is not None and hi > lo else None
    links = call_links(frame, async_tolerance_us=async_tolerance_us)
    quality["calls"] = links.height
    quality["async_calls"] = int(links["is_async"].sum())
    quality["negative_or_missing_latency_calls"] = int(links["latency_us"].null_count())
    # the edge statistics run on Polars' threads in the background while this thread does
    # the node statistics (the numpy steps hold one core; the group-bys use the others)
    edge_queries = [
        _edge_stats(links, keys, window_s).collect(background=True)
        for keys in (["caller", "callee"], ["caller", "caller_op", "callee", "callee_op"])
    ]

    roots = frame.lazy().filter(pl.col("pk").is_null()).select("service", "tk").collect()
    entry_counts = (
        roots.group_by("service")
        .agg(pl.len().alias("n"))
        .with_columns(pl.col("service").cast(pl.String))
        .sort("service")
    )
    entry_points = entry_counts["service"].to_list()
    # latency and errors of a service's entry spans (roots, and spans called from another
    # service): a group-by of those rows alone, joined to the group-by of all spans (one
    # filter instead of one per aggregate; services without entry spans get nulls)
    is_entry_span = pl.col("pk").is_null() | (pl.col("p_service") != pl.col("service"))
    entry_ms = pl.col("duration_us").cast(pl.Float64) * 0.001
    entry_nodes = (
        frame.lazy()
        .filter(is_entry_span.fill_null(False))
        .group_by("service")
        .agg(
            entry_ms.quantile(0.5, "linear").alias("p50_ms"),
            entry_ms.quantile(0.99, "linear").alias("p99_ms"),
            pl.col("is_error").mean().alias("error_rate"),
        )
    )
    node_aggs = [pl.len().alias("spans")]
    if not (trace_stats and frame.height):
        nodes = (
            frame.lazy()
            .group_by("service")
            .agg(node_aggs)
            .join(entry_nodes, on="service", how="left")
            .collect()
        )
        by_entry = pl.DataFrame({"service": [], "entry": [], "n": []})
        net_edges = pl.DataFrame({"caller": [], "callee": [], "net_ms_mean": []})
    else:
        # exclusive ("self") time: a span's duration minus its children's (clipped at zero),
        # the latency the service adds itself. Summed per service without a join:
        # sum(self) = sum(dur) - sum over parents of min(kids, dur); the children's
        # durations are summed per parent row by index (no group-by on random keys), and
        # everything per service is one group-by
        dur = pl.col("duration_us").fill_null(0)
        kids, net_out, net_in = _child_sums(frame, parent_row)
        # traces touching a service: when every trace's spans are one block of rows (as
        # written by tracers and readers), they are the runs of the trace key within the
        # service's rows (4x cheaper than a hash set of trace keys per service)
        runs = frame.select(pl.col("tk").rle_id().max() + 1).item()
        contiguous = runs == quality["traces"]
        traces = (pl.col("tk").rle_id().max() + 1) if contiguous else pl.col("tk").n_unique()
        nodes = (
            frame.lazy()
            .with_columns(
                pl.Series("_kids", kids),
                pl.Series("_net_out", net_out),
                pl.Series("_net_in", net_in, nan_to_null=True),
            )
            .group_by("service")
            .agg(
                *node_aggs,
                dur.sum().alias("_dur"),
                pl.min_horizontal("_kids", dur).sum().alias("_cov"),
                pl.col("_net_out").sum().alias("_net_out"),
                pl.col("_net_in").mean().alias("_net_in"),
                traces.cast(pl.UInt32).alias("traces"),
            )
            .select(
                "service",
                "spans",
                # µs -> ms times the reciprocal (see _edge_stats: deterministic last bit)
                ((pl.col("_dur") - pl.col("_cov")) / pl.col("spans") * 0.001).alias("self_ms_mean"),
                (pl.col("_net_out") / pl.col("spans") * 0.001).alias("net_out_ms_mean"),
                (pl.col("_net_in") * 0.001).alias("net_in_ms_mean"),
                "traces",
            )
            .join(entry_nodes, on="service", how="left")
            .select(
                "service",
                "spans",
                "p50_ms",
                "p99_ms",
                "error_rate",
                "self_ms_mean",
                "net_out_ms_mean",
                "net_in_ms_mean",
                "traces",
            )
            .collect()
        )
        # the network/queueing gap per edge: calls made through a client span only
        net_edges = (
            frame.lazy()
            .select(
                pl.col("p_service").alias("caller"),
                pl.col("service").alias("callee"),
                pl.Series("_net_in", net_in, nan_to_null=True),
            )
            .drop_nulls("_net_in")
            .group_by("caller", "callee")
            .agg((pl.col("_net_in").mean() / 1000).alias("net_ms_mean"))
            .collect()
        )
        totals = nodes.select("service", "traces")
        if len(entry_points) == 1 and quality["root_spans"] == quality["traces"]:
            # one entry point and one root per trace: every trace entered there
            by_entry = totals.select(
                "service", pl.lit(entry_points[0]).alias("entry"), pl.col("traces").alias("n")
            )
        else:
            touched = frame.select("service", "tk").unique()
            root_of = roots.select("tk", pl.col("service").alias("entry")).unique(subset="tk")
            by_entry = (
                touched.join(root_of, on="tk", how="left")
                .group_by("service", "entry")
                .agg(pl.len().alias("n"))
            )

    svc, ops = (q.fetch_blocking() for q in edge_queries)
    g = nx.DiGraph()
    entries = set(entry_points)
    for row in (
        nodes.with_columns(pl.col("service").cast(pl.String)).sort("service").iter_rows(named=True)
    ):
        name = row.pop("service")
        g.add_node(name, **_finite_or_nan(row), entry=name in entries)
    for row in by_entry.drop_nulls("entry").iter_rows(named=True):
        g.nodes[row["service"]].setdefault("traces_by_entry", {})[row["entry"]] = int(row["n"])
    for row in svc.iter_rows(named=True):
        u, v = row.pop("caller"), row.pop("callee")
        for n in (u, v):
            if n not in g:  # a peer_service callee with no spans of its own
                g.add_node(n, spans=0, p50_ms=math.nan, error_rate=0.0, entry=False)
        g.add_edge(u, v, **_edge_attrs(row))
    for u, v, net in net_edges.iter_rows():
        if g.has_edge(u, v):
            g.edges[u, v]["net_ms_mean"] = float(net)
    og = nx.DiGraph()
    for row in ops.iter_rows(named=True):
        u = f"{row.pop('caller')}:{row.pop('caller_op')}"
        v = f"{row.pop('callee')}:{row.pop('callee_op')}"
        og.add_edge(u, v, **_edge_attrs(row))
    meta = {
        "source": "spans",
        "window_s": window_s,
        "traces": quality["traces"],
        "spans": quality["spans_used"],
        "entry_traces": dict(
            zip(
                entry_counts["service"].to_list(),
                [int(n) for n in entry_counts["n"].to_list()],
                strict=True,
            )
        ),
        "quality": quality,
    }
    return DependencyGraph(g, entry_points, og, meta)


def _child_sums(
    frame: pl.DataFrame, parent_row: pl.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per span: its children's summed durations, and the network/queueing gaps of calls.

    A span whose only child runs in another service is the caller's client span of that
    call; its duration minus the callee's span is time on the wire and in the callee's
    queue, not work of either service. Returns ``kids`` (int64 µs per span), ``net_out``
    (that gap on the caller's client span, 0 elsewhere) and ``net_in`` (the same gap on
    the callee's span, NaN where the span was not called through a client span). Sums
    are bincounts over parent row numbers: no group-by on random keys.
    """
    n = frame.height
    has_parent = parent_row.is_not_null()
    pr = parent_row.filter(has_parent).to_numpy()
    child_dur = frame["duration_us"].fill_null(0).filter(has_parent).to_numpy()
    # float64 sums: exact below 2**53 µs (285 years)
    kids = np.bincount(pr, weights=child_dur, minlength=n).astype(np.int64)
    cross = (frame["p_service"] != frame["service"]).fill_null(False).filter(has_parent)
    n_kids = np.bincount(pr, minlength=n)
    n_cross = np.bincount(pr[cross.to_numpy()], minlength=n)
    dur = frame["duration_us"].to_numpy()  # float with NaN where unknown (negative)
    wrapper = (n_kids == 1) & (n_cross == 1)
    gap = np.where(wrapper, np.maximum(np.nan_to_num(dur, nan=0.0) - kids, 0.0), 0.0)
    net_in = np.full(n, np.nan)
    rows = np.flatnonzero(has_parent.to_numpy())
    called = wrapper[pr]
    net_in[rows[called]] = gap[pr[called]]
    return kids, gap, net_in


def _edge_attrs(row: dict[str, Any]) -> dict[str, Any]:
    share = row.pop("async_share") or 0.0
    out = _finite_or_nan(row)
    out["calls"] = int(out["calls"])
    out["kind"] = "async" if share > 0.5 else "sync"
    out["async_share"] = float(share)
    out["confidence"] = 1.0
    out["error_rate"] = float(out.get("error_rate") or 0.0)
    return out


def _finite_or_nan(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None and "_ms" in k else v) for k, v in row.items()}
