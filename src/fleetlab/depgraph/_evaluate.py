"""Scoring flow-based mining against the parent links of a spans table (stripped, then used
as ground truth)."""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from fleetlab.depgraph._clean import clean_spans
from fleetlab.depgraph._flows import ANY, FlowMiningSpec, flow_dependencies, mine_flows
from fleetlab.depgraph._synth import add_background_flows, spans_to_flows


def true_triples(spans: pl.DataFrame | pl.LazyFrame, *, client: str = "client") -> pl.DataFrame:
    """Ground-truth (caller A, service S, callee B): S called B while serving a call from A.

    Walks each span up to the span where its trace entered its service (pointer jumping
    over same-service parents, a few joins, no loop per span); the entry span's parent
    service is A (``client`` for a trace root).

    Returns
    -------
    polars.DataFrame
        Distinct ``caller, service, callee`` rows with ``calls`` (how many calls).
    """
    frame, _ = clean_spans(spans)
    is_entry = (
        pl.col("pk").is_null()
        | (pl.col("p_service") != pl.col("service"))
        | pl.col("p_service").is_null()
    )
    up = frame.select("k", pl.when(is_entry).then(pl.col("k")).otherwise(pl.col("pk")).alias("up"))
    for _ in range(64):
        nxt = up.join(up.rename({"k": "up", "up": "up2"}), on="up", how="left").select(
            "k", pl.coalesce("up2", "up").alias("up")
        )
        if nxt.sort("k").equals(up.sort("k")):
            break
        up = nxt
    entry_caller = frame.select(
        pl.col("k").alias("up"),
        pl.col("p_service").fill_null(client).alias("caller"),
    )
    cross = frame.filter(
        pl.col("p_service").is_not_null() & (pl.col("p_service") != pl.col("service"))
    )
    calls = cross.select(
        pl.col("pk").alias("k"),
        pl.col("p_service").alias("service"),
        pl.col("service").alias("callee"),
    )
    calls = calls.join(up, on="k", how="left").join(entry_caller, on="up", how="left")
    return (
        calls.drop_nulls("caller")
        .filter(pl.col("caller") != pl.col("service"))
        .group_by("caller", "service", "callee")
        .agg(pl.len().alias("calls"))
        .sort("caller", "service", "callee")
    )


def _prf(predicted: set[Any], truth: set[Any]) -> dict[str, Any]:
    tp = len(predicted & truth)
    fp = len(predicted - truth)
    fn = len(truth - predicted)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": p,
        "recall": r,
        "f1": f1,
        "false_positives": sorted(predicted - truth),
        "false_negatives": sorted(truth - predicted),
    }


def evaluate_flow_mining(
    spans: pl.DataFrame | pl.LazyFrame,
    spec: FlowMiningSpec | None = None,
    *,
    background_pairs: int = 5,
    background_rate_per_s: float = 5.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Strip the parent links of ``spans``, mine from timing alone, score against the truth.

    The spans become a flows table (one flow per cross-service call and per request
    entering, no ids); ``background_pairs`` pairs of unrelated background traffic (health
    checks, cron jobs: flows that no request causes) are added so that seeing a pair on the
    network is not enough. Then :func:`mine_flows` runs at ``spec``.

    Returns
    -------
    dict
        ``edges``: precision/recall/F1 (with tp/fp/fn and the wrong pairs) of the mined
        service edges against the true ones, origins' edges excluded (they cannot be
        tested); ``triples``: the same for (caller, service, callee) dependencies;
        ``flows``, ``background_pairs``, ``concurrency`` (mean requests in flight, by
        Little's law) and ``requests_per_s``.
    """
    spec = spec or FlowMiningSpec()
    flows = spans_to_flows(spans)
    truth_edges = set(zip(flows["src"].to_list(), flows["dst"].to_list(), strict=True))
    flows, noise = add_background_flows(
        flows, pairs=background_pairs, rate_per_s=background_rate_per_s, seed=seed
    )
    graph = mine_flows(flows, spec)
    origins = set(graph.meta["origins"])
    truth_edges = {e for e in truth_edges if e[0] not in origins}
    mined = set(graph.graph.edges)
    triples = true_triples(spans)
    truth_t = {tuple(r) for r in triples.select("caller", "service", "callee").iter_rows()}
    scored = flow_dependencies(flows, spec)
    pred_t = {
        tuple(r)
        for r in scored.filter("significant", pl.col("caller") != ANY)
        .select("caller", "service", "callee")
        .iter_rows()
    }
    roots = flows.filter(pl.col("src").is_in(list(origins)))
    # spans_to_flows and add_background_flows give Int64 ts_us and duration_us: min/max are
    # ints and the mean a float, or None when every value is null (spans with no start_us)
    lo, hi = cast("int | None", flows["ts_us"].min()), cast("int | None", flows["ts_us"].max())
    span_s = max(1e-6, (hi - lo) / 1e6) if lo is not None and hi is not None else 1.0
    rps = roots.height / span_s
    mean_s = (cast("float | None", roots["duration_us"].mean()) or 0) / 1e6
    return {
        "edges": _prf(mined, truth_edges),
        "triples": _prf(pred_t, truth_t),
        "flows": flows.height,
        "background_pairs": sorted(noise),
        "requests_per_s": rps,
        "concurrency": rps * mean_s,
    }
