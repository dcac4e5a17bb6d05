"""Per-trace analytics: critical path (CRISP), skew, shapes and patterns."""

from __future__ import annotations

import polars as pl
import pytest

from fleetlab import depgraph

T0 = 1_700_000_000_000_000


def _trace(rows: list[tuple], tid: str = "t") -> list[dict]:
    return [
        {
            "trace_id": tid,
            "span_id": s,
            "parent_id": p,
            "service": svc,
            "operation": "op",
            "start_us": T0 + st,
            "duration_us": d,
            "status": "ok",
            "kind": None,
        }
        for s, p, svc, st, d in rows
    ]


def test_critical_path_golden() -> None:
    # fe [0, 100 ms]: calls a [10, 40] and b [10, 70] in parallel, then c [75, 95]
    rows = _trace(
        [
            ("r", None, "fe", 0, 100_000),
            ("a", "r", "a", 10_000, 30_000),
            ("b", "r", "b", 10_000, 60_000),
            ("c", "r", "c", 75_000, 20_000),
            ("b1", "b", "db", 20_000, 30_000),
        ]
    )
    tr = depgraph.analyze_traces(pl.DataFrame(rows))
    row = tr.row(0, named=True)
    # the last child to finish is c, before it b (a overlaps b and ends earlier: not critical)
    assert row["critical_path"] == ["fe", "b", "db", "c"]
    # fe: 10 + 5 + 5 = 20 ms; b: 60 - 30 = 30 ms; db: 30 ms; c: 20 ms -> sums to e2e
    assert row["critical_ms"] == pytest.approx([20.0, 30.0, 30.0, 20.0])
    assert sum(row["critical_ms"]) == pytest.approx(row["e2e_ms"])
    assert row["dominant"] in ("b", "db") and row["depth"] == 3 and row["max_fanout"] == 3
    svc = depgraph.critical_services(tr)
    assert svc.filter(pl.col("service") == "a").height == 0


def test_skewed_child_is_moved_into_its_parent() -> None:
    # the child's clock is 5 ms behind: it appears to start before the parent
    rows = _trace([("r", None, "fe", 0, 10_000), ("x", "r", "api", -5_000, 8_000)])
    row = depgraph.analyze_traces(pl.DataFrame(rows)).row(0, named=True)
    assert row["critical_path"] == ["fe", "api"]
    assert row["critical_ms"] == pytest.approx([2.0, 8.0])
    assert sum(row["critical_ms"]) == pytest.approx(10.0)


def test_patterns_group_identical_trees() -> None:
    a = _trace([("r", None, "fe", 0, 9), ("1", "r", "x", 1, 2), ("2", "r", "y", 3, 2)], "t1")
    b = _trace([("r", None, "fe", 0, 9), ("1", "r", "y", 1, 2), ("2", "r", "x", 3, 2)], "t2")
    c = _trace([("r", None, "fe", 0, 9), ("1", "r", "x", 1, 2)], "t3")
    tr = depgraph.analyze_traces(pl.DataFrame(a + b + c))
    pats = depgraph.trace_patterns(tr)
    assert pats["traces"].to_list() == [2, 1]  # child order does not matter
    stats = depgraph.shape_stats(tr)
    assert stats["patterns"] == 2 and stats["spans"]["max"] == 3


def test_sampling_is_seeded_and_bounded() -> None:
    spans = depgraph.generate_spans(
        depgraph.topology("fanout"), depgraph.Traffic(rate_per_s=50, duration_s=10), seed=0
    )
    a = depgraph.analyze_traces(spans, max_traces=100, seed=4)
    b = depgraph.analyze_traces(spans, max_traces=100, seed=4)
    assert a.height == 100 and a.sort("trace_id").equals(b.sort("trace_id"))
