"""Blast radius, single points of failure, cycles, diffs: golden values on small graphs."""

from __future__ import annotations

import networkx as nx
import polars as pl
import pytest

from fleetlab import depgraph
from fleetlab.errors import DataNotFoundError


def _graph() -> depgraph.DependencyGraph:
    # web (100 requests) -> api (100) -> db (100); web -> search (30) -> db (30);
    # mobile (50 requests) -> api (50); worker -> queue async
    g = nx.DiGraph()
    for u, v, calls, kind in [
        ("web", "api", 100, "sync"),
        ("api", "db", 150, "sync"),
        ("web", "search", 30, "sync"),
        ("search", "db", 30, "sync"),
        ("mobile", "api", 50, "sync"),
        ("api", "queue", 150, "async"),
    ]:
        g.add_edge(u, v, calls=calls, kind=kind, p50_ms=1.0, p99_ms=2.0, error_rate=0.0)
    return depgraph.DependencyGraph(
        g, ["mobile", "web"], meta={"entry_traces": {"web": 100, "mobile": 50}}
    )


def test_blast_radius_by_propagation() -> None:
    g = _graph()
    b = depgraph.blast_radius(g, "search")
    assert b["affected_services"] == ["web"]
    assert b["entry_points"] == ["web"]
    assert b["method"] == "propagation"
    # 30 of web's 100 requests call search; web is 100 of 150 requests
    assert b["share_by_entry"] == {"web": pytest.approx(0.3)}
    assert b["share_of_traffic"] == pytest.approx(0.3 * 100 / 150)
    api = depgraph.blast_radius(g, "api")
    assert api["share_of_traffic"] == pytest.approx(1.0)
    db = depgraph.blast_radius(g, "db")
    assert db["affected_services"] == ["api", "mobile", "search", "web"]
    assert db["share_of_traffic"] == pytest.approx(1.0)
    q = depgraph.blast_radius(g, "queue", through_async=False)
    assert q["affected_services"] == [] and q["share_of_traffic"] == 0.0
    assert depgraph.blast_radius(g, "queue")["affected_services"] == ["api", "mobile", "web"]


def test_blast_radius_exact_from_traces() -> None:
    spans = depgraph.generate_spans(
        depgraph.topology("shared-backends"), depgraph.Traffic(rate_per_s=50, duration_s=20), seed=1
    )
    g = depgraph.mine_spans(spans)
    b = depgraph.blast_radius(g, "cart")
    assert b["method"] == "traces"
    # only web calls cart, with probability 0.5; web is 70% of requests
    assert b["share_by_entry"]["web"] == pytest.approx(0.5, abs=0.03)
    assert b["share_of_traffic"] == pytest.approx(0.35, abs=0.03)
    assert b["entry_points"] == ["web"]
    # the propagation estimate agrees on this tree-like part of the graph
    est = depgraph.reach_probabilities(g, "web")["cart"]
    assert est == pytest.approx(b["share_by_entry"]["web"], abs=0.02)


def test_unknown_service_suggests_names() -> None:
    with pytest.raises(DataNotFoundError, match="did you mean search"):
        depgraph.blast_radius(_graph(), "serch")


def test_single_points_of_failure_and_cycles() -> None:
    g = _graph()
    spof = {r["service"]: r for r in depgraph.single_points_of_failure(g)}
    # from mobile, db and queue are only reached through api; from web, db is also
    # reached through search, so search is no single point of failure
    assert spof["api"]["cut_off"] == ["db", "queue"]
    assert spof["api"]["entry_points"] == ["mobile", "web"]
    assert "search" not in spof and "db" not in spof
    assert depgraph.cycles(g) == []
    topo = depgraph.topology("async-retry-cycle")
    mined = depgraph.mine_spans(
        depgraph.generate_spans(topo, depgraph.Traffic(rate_per_s=50, duration_s=20), seed=2)
    )
    cyc = depgraph.cycles(mined)
    assert [c["services"] for c in cyc] == [["orders", "queue", "worker"]]
    assert cyc[0]["async"] is True


def test_diff_finds_new_edges_and_the_slow_service() -> None:
    topo = depgraph.topology("chain")
    tr = depgraph.Traffic(rate_per_s=50, duration_s=10)
    before = depgraph.mine_spans(depgraph.generate_spans(topo, tr, seed=1))
    slow = topo.model_copy(
        update={
            "services": tuple(
                s.model_copy(update={"work_ms": s.work_ms * 8}) if s.name == "inventory" else s
                for s in topo.services
            )
        }
    )
    after = depgraph.mine_spans(depgraph.generate_spans(slow, tr, seed=2))
    d = depgraph.diff_graphs(before, after)
    assert d["added_edges"] == [] and d["removed_edges"] == []
    assert ["orders", "inventory"] in [[r["caller"], r["callee"]] for r in d["changed_edges"]]
    assert d["suspects"][0]["service"] == "inventory"
    extra = after.graph.copy()
    extra.add_edge("api", "cache", calls=10)
    d2 = depgraph.diff_graphs(before, depgraph.DependencyGraph(extra, after.entry_points))
    assert d2["added_edges"] == [["api", "cache"]] and d2["added_services"] == ["cache"]


def _delay_calls_into(spans: pl.DataFrame, service: str, delay_us: int) -> pl.DataFrame:
    """A slow network in front of ``service``: every client span calling it, and every span
    around that client span, lasts ``delay_us`` longer; the callee's own spans do not."""
    parents = spans.filter(pl.col("service") == service).select(
        "trace_id", pl.col("parent_id").alias("span_id")
    )
    clients = spans.join(parents, on=["trace_id", "span_id"], how="semi").select(
        "trace_id",
        pl.col("start_us").alias("_s"),
        (pl.col("start_us") + pl.col("duration_us")).alias("_e"),
    )
    # in the chain each trace calls the service once: the enclosing spans are the ancestors
    return (
        spans.join(clients, on="trace_id", how="left")
        .with_columns(
            pl.when(
                (pl.col("start_us") <= pl.col("_s"))
                & (pl.col("start_us") + pl.col("duration_us") >= pl.col("_e"))
                & (pl.col("service") != service)
            )
            .then(pl.col("duration_us") + delay_us)
            .otherwise(pl.col("duration_us"))
            .alias("duration_us")
        )
        .drop("_s", "_e")
    )


def test_diff_blames_the_service_behind_a_slow_network_not_its_caller() -> None:
    topo = depgraph.topology("chain")
    tr = depgraph.Traffic(rate_per_s=50, duration_s=10)
    spans = depgraph.generate_spans(topo, tr, seed=3)
    before = depgraph.mine_spans(depgraph.generate_spans(topo, tr, seed=4))
    slow = depgraph.mine_spans(_delay_calls_into(spans, "inventory", 20_000))
    # the gap is on the calls into inventory, not in anybody's own time
    assert slow.graph.edges["orders", "inventory"]["net_ms_mean"] == pytest.approx(
        depgraph.mine_spans(spans).graph.edges["orders", "inventory"]["net_ms_mean"] + 20.0
    )
    assert slow.graph.nodes["orders"]["net_out_ms_mean"] > 9.9  # 2 spans per call
    d = depgraph.diff_graphs(before, slow)
    top = d["suspects"][0]
    assert top["service"] == "inventory"
    assert top["network_in_log2"] > 4  # ~0.4 ms -> ~20.4 ms
    orders = next(s for s in d["suspects"] if s["service"] == "orders")
    assert orders["self_latency_log2"] < 0.3 and orders["network_in_log2"] < 0.3
