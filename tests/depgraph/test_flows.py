"""Orion-style mining from flows: accuracy on generated traffic with known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fleetlab import depgraph
from fleetlab.errors import InputFormatError


@pytest.mark.parametrize(
    "name",
    ["fanout", "shared-backends", "async-retry-cycle", "hotel-reservation", "social-network"],
)
def test_f1_on_concurrent_generated_traffic(name: str) -> None:
    topo = depgraph.topology(name)
    spans = depgraph.generate_spans(topo, depgraph.Traffic(rate_per_s=300, duration_s=8), seed=5)
    r = depgraph.evaluate_flow_mining(spans, seed=5)
    assert r["concurrency"] > 1.0  # requests overlap: timing alone is ambiguous
    assert r["edges"]["f1"] >= 0.9, r["edges"]
    assert r["triples"]["f1"] >= 0.9, r["triples"]


def test_background_traffic_is_rejected_and_edges_get_confidence() -> None:
    topo = depgraph.topology("chain")
    flows, truth = depgraph.generate_flows(
        topo,
        depgraph.Traffic(rate_per_s=200, duration_s=10),
        seed=1,
        background_pairs=4,
        background_rate_per_s=20.0,
    )
    g = depgraph.mine_flows(flows)
    assert set(g.graph.edges) == {e for e in truth if e[0] != "client"}
    assert g.entry_points == ["frontend"] and g.meta["origins"] == ["client"]
    rejected = {(r["caller"], r["callee"]) for r in g.meta["rejected"]}
    assert len(rejected) == 4 and not rejected & truth
    assert all(r["confidence"] < 0.3 for r in g.meta["rejected"])
    assert all(d["confidence"] > 0.8 for _, _, d in g.graph.edges(data=True))
    assert (
        g.graph.edges["frontend", "api"]["calls"]
        == flows.filter((pl.col("src") == "frontend") & (pl.col("dst") == "api")).height
    )


def test_flow_scores_on_a_hand_built_service() -> None:
    # A calls S at Poisson times (mean gap 5 ms); S calls B 100 µs into each request, which
    # lasts 500 µs; S's timer calls X every 7.3 ms, unrelated to the requests
    rng = np.random.default_rng(0)
    n = 2000
    t = np.cumsum(rng.exponential(5000, n)).astype(np.int64)
    rows = [(int(ts), "A", "S", 500) for ts in t] + [(int(ts) + 100, "S", "B", 50) for ts in t]
    rows += [(i * 7300 + 17, "S", "X", 50) for i in range(int(t[-1] // 7300))]
    rows += [(int(ts) - 50, "client", "A", 900) for ts in t]
    flows = pl.DataFrame(rows, schema=["ts_us", "src", "dst", "duration_us"], orient="row")
    spec = depgraph.FlowMiningSpec(skew_ms=0.0)
    scores = depgraph.flow_dependencies(flows, spec)
    sb = scores.filter((pl.col("service") == "S") & (pl.col("callee") == "B")).row(0, named=True)
    # every window [t, t + 500 µs] holds its own S->B call, plus ~10% unrelated ones
    assert n <= sb["after"] <= 1.2 * n
    assert sb["expected"] == pytest.approx(0.1 * n, rel=0.2)
    assert sb["explained"] == pytest.approx(min(1.0, (sb["after"] - sb["expected"]) / n))
    assert sb["explained"] > 0.95 and sb["significant"]
    sx = scores.filter((pl.col("service") == "S") & (pl.col("callee") == "X")).row(0, named=True)
    assert sx["explained"] < 0.1 and not sx["significant"]
    g = depgraph.mine_flows(flows, spec)
    assert set(g.graph.edges) == {("A", "S"), ("S", "B")}
    assert g.meta["rejected"] == [
        {"caller": "S", "callee": "X", "calls": sx["outbound"], "confidence": 0.0}
    ]


def test_missing_flow_column_is_reported() -> None:
    with pytest.raises(InputFormatError, match="dst"):
        depgraph.mine_flows(pl.DataFrame({"ts_us": [1], "src": ["a"]}), source="f.csv")


def test_background_flows_over_untimed_flows_come_back_unchanged() -> None:
    """Flows whose timestamps are all null have no span to add traffic over (was a TypeError)."""
    flows = pl.DataFrame(
        {"ts_us": [None, None, None], "src": ["a", "b", "a"], "dst": ["b", "c", "c"]},
        schema={"ts_us": pl.Int64, "src": pl.String, "dst": pl.String},
    )
    out, pairs = depgraph.add_background_flows(flows, pairs=2)
    assert pairs == set()
    assert out.equals(flows)
