"""Graph-guided search finds every documented flaw of the demo system, and prunes."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import pytest

from fleetlab.chaos import (
    ExploreResult,
    ExploreSpec,
    ProxyClient,
    demo_graph,
    demo_system,
    explore,
    explore_report,
)
from fleetlab.chaos._demo import FLAWS
from fleetlab.chaos._explore import blast_order
from fleetlab.errors import ConfigError, SafetyError

SPEC = ExploreSpec(rate_per_s=40.0, window_s=0.4, slow_ms=500.0, settle_s=0.02)


def test_explorer_on_the_demo_system() -> None:
    """One exploration (about 12 s), checked from every side below."""
    with demo_system() as demo:
        result = explore(demo.graph, entry_url=demo.entry_url, api=demo.api_url, spec=SPEC)
        with ProxyClient(demo.api_url) as client:
            left = [p["toxics"] for p in client.proxies().values()]
    explored = (result, left)
    for check in (
        _every_documented_flaw_is_found,
        _minimal_failing_sets_include_the_exhausted_fallback,
        _matrix_numbers,
        _pruning_saves_runs_and_says_why,
        _order_follows_blast_radius,
        _no_fault_is_left_behind,
        _every_run_is_an_experiment_in_the_journal,
        _report_renders,
    ):
        check(explored)


def _every_documented_flaw_is_found(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    result, _ = explored
    found = {(f["service"], f["finding"]) for f in result.findings}
    for service, _kind, finding in FLAWS:
        assert (service, finding) in found, result.findings
    # correct behaviour is not reported as a flaw
    assert ("recommendations", "hard dependency") not in found
    assert not any(
        f["service"] in ("cache", "catalog") and f["finding"] == "missing timeout"
        for f in result.findings
    )


def _minimal_failing_sets_include_the_exhausted_fallback(
    explored: tuple[ExploreResult, list[list[dict]]],
) -> None:
    result, _ = explored
    assert ["cache:down", "catalog:down"] in result.minimal_failing
    assert ["queue:down"] in result.minimal_failing
    assert ["recommendations:slow"] in result.minimal_failing
    # a minimal set never contains a smaller failing set
    sets = [frozenset(s) for s in result.minimal_failing]
    assert not any(a < b for a in sets for b in sets)


def _matrix_numbers(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    result, _ = explored
    m = {row["faults"]: row for row in result.matrix.to_dicts()}
    base = m["(none: baseline)"]
    assert base["ok"] and base["error_rate"] == 0.0
    assert m["inventory:error"]["max_amplification"] == pytest.approx(5.0)
    assert m["inventory:error"]["amplified"] == "inventory"
    assert m["queue:down"]["error_rate"] == 1.0 and m["queue:down"]["slo_error_rate"] == "fail"
    assert m["recommendations:error"]["ok"] and m["recommendations:down"]["ok"]
    assert m["recommendations:slow"]["slo_p99_ms"] == "fail"
    assert m["recommendations:slow"]["p99_ms"] >= 450
    assert m["cache:down"]["ok"] and "catalog" in m["cache:down"]["called"]
    assert all(r["requests"] == 16 for r in m.values())  # 40 req/s for 0.4 s, open loop


def _pruning_saves_runs_and_says_why(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    result, _ = explored
    mt = result.metrics
    # 6 dependencies x 3 kinds + C(6, 2) pairs of 'down' = 33 candidate sets
    assert mt["candidates"] == 33
    assert mt["runs"] + mt["runs_saved"] == 33
    assert mt["pruned_not_exercised"] >= 3  # catalog is never called while the cache works
    assert mt["pruned_implied_by_failure"] >= 10
    assert mt["runs"] <= 18
    faults = result.matrix["faults"].to_list()
    assert "catalog:down" not in faults  # pruned: unexercised
    assert "auth:down + queue:down" not in faults  # pruned: implied by auth:down


def _order_follows_blast_radius(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    result, _ = explored
    order = [r["service"] for r in result.order]
    assert order[-1] == "catalog"  # 5 calls per 1000 checkouts: smallest radius
    assert result.order[0]["share_of_traffic"] == pytest.approx(1.0)


def _no_fault_is_left_behind(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    _, left = explored
    assert all(t == [] for t in left)


def _every_run_is_an_experiment_in_the_journal(
    explored: tuple[ExploreResult, list[list[dict]]],
) -> None:
    result, _ = explored
    j, mt = result.journal, result.metrics
    exps = j["experiments"]
    assert j["format"] == "fleetlab-chaos-explore-journal"
    # the baseline, every run, every confirmation rerun (and a retried unmet steady state)
    assert len(exps) == mt["experiments"] >= 1 + mt["runs"] + mt["confirmation_reruns"]
    assert exps[0]["explore"]["faults"] == [] and list(exps[0]["phases"]) == ["before"]
    for row in result.matrix.to_dicts():
        e = exps[row["experiment"]]
        assert e["format"] == "fleetlab-chaos-journal"
        assert e["status"] == row["status"]
        label = " + ".join(e["explore"]["faults"]) or "(none: baseline)"
        assert label == row["faults"]
        phase = e["phases"]["during" if row["size"] else "before"]
        assert (phase["requests"], phase["error_rate"]) == (row["requests"], row["error_rate"])
        if row["size"]:  # a real experiment: steady state, the faults, rollback, steady state
            assert row["status"] in ("completed", "deviated")
            assert e["phases"]["before"]["ok"] and "after" in e["phases"]
            assert sorted(f["name"] for f in e["faults"]) == [
                f.replace(":", "-") for f in e["explore"]["faults"]
            ]
            assert all(f["end_s"] is not None for f in e["faults"])  # each fault removed
            assert all(r["ok"] for r in e["rollbacks"])


def _report_renders(explored: tuple[ExploreResult, list[list[dict]]]) -> None:
    result, _ = explored
    html = explore_report(result).to_html()
    assert "Resilience matrix" in html and "retry storm" in html


@dataclass
class _Plain:
    graph: nx.DiGraph
    entry_points: list[str]


def test_blast_order_on_a_plain_graph() -> None:
    g = nx.DiGraph([("gw", "a"), ("gw", "b"), ("a", "db"), ("b", "db")])
    order = blast_order(_Plain(g, ["gw"]), ["a", "b", "db"])
    assert order[0]["service"] == "db" and order[0]["affected"] == 3
    dg = demo_graph()
    assert [r["service"] for r in blast_order(dg, ["catalog", "auth"])] == ["auth", "catalog"]


def test_explore_refuses_unsafe_entries_and_graphs_without_proxies() -> None:
    with pytest.raises(SafetyError):
        explore(demo_graph(), entry_url="http://8.8.8.8/", api="http://127.0.0.1:1")
    from fleetlab.chaos import running_proxy

    with running_proxy() as handle, pytest.raises(ConfigError, match="no dependency"):
        explore(demo_graph(), entry_url="http://127.0.0.1:9/", api=handle.api_url)
