"""Fault localisation against reference windows: consensus suspects, early-return evidence.

Synthetic topologies (known ground truth) check each rule; the Nezha tests (skipped
without FLEETLAB_MIRROR) check the published fault labels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from fleetlab import depgraph
from fleetlab import traces as traces_io
from fleetlab.depgraph._rca import consensus_rows, early_return_evidence, lost_share

SHOP = depgraph.Topology(
    name="shop",
    entry={"web": 1.0},
    services=(
        depgraph.Service(name="web", work_ms=1.0, calls=(depgraph.Call(callee="api"),)),
        depgraph.Service(
            name="api",
            work_ms=2.0,
            calls=(depgraph.Call(callee="cart"), depgraph.Call(callee="db")),
        ),
        depgraph.Service(name="cart", work_ms=3.0, calls=(depgraph.Call(callee="db"),)),
        depgraph.Service(name="db", work_ms=1.5),
    ),
)
TRAFFIC = depgraph.Traffic(rate_per_s=40, duration_s=10)


def _with(topo: depgraph.Topology, name: str, **update: Any) -> depgraph.Topology:
    services = tuple(s.model_copy(update=update) if s.name == name else s for s in topo.services)
    return topo.model_copy(update={"services": services})


def _window(topo: depgraph.Topology, seed: int) -> depgraph.DependencyGraph:
    return depgraph.mine_spans(depgraph.generate_spans(topo, TRAFFIC, seed=seed))


@pytest.fixture(scope="module")
def normal() -> list[depgraph.DependencyGraph]:
    return [_window(SHOP, seed) for seed in range(6)]


def test_one_drifted_baseline_makes_a_suspect_but_the_reference_windows_do_not(
    normal: list[depgraph.DependencyGraph],
) -> None:
    # the "before" window was recorded when cart did a quarter of its work (drift);
    # the window under study is normal except for a slow db
    drifted = _window(_with(SHOP, "cart", work_ms=0.75), 10)
    after = _window(_with(SHOP, "db", work_ms=6.0), 11)
    one = depgraph.diff_graphs(drifted, after)["suspects"]
    assert {r["service"] for r in one[:2]} == {"cart", "db"}
    assert next(r for r in one if r["service"] == "cart")["self_latency_log2"] > 1.5  # x4
    many = depgraph.diff_graphs(drifted, after, references=normal)["suspects"]
    assert many[0]["service"] == "db"
    cart = next(r for r in many if r["service"] == "cart")
    assert cart["self_latency_log2"] < 0.3  # median over 7 baselines: ~0 (x4 in one)
    assert many[0]["self_latency_log2"] > 1.5  # db x4 own time: log2 = 2


def test_without_references_the_suspects_are_those_of_the_single_baseline(
    normal: list[depgraph.DependencyGraph],
) -> None:
    after = _window(_with(SHOP, "db", work_ms=6.0), 11)
    plain = depgraph.diff_graphs(normal[0], after)
    assert "early_return" not in plain["suspects"][0]
    # two windows: median of two = their mean, no early-return evidence (needs 5)
    two = depgraph.diff_graphs(normal[0], after, references=normal[1:2])["suspects"]
    assert "early_return" not in two[0]
    a = {r["service"]: r["score"] for r in plain["suspects"]}
    b = {r["service"]: r["score"] for r in depgraph.diff_graphs(normal[1], after)["suspects"]}
    assert {r["service"]: r["score"] for r in two} == {
        s: pytest.approx((a[s] + b[s]) / 2, abs=2e-4) for s in a
    }


def test_a_service_that_returns_early_is_blamed_for_the_calls_that_vanished(
    normal: list[depgraph.DependencyGraph],
) -> None:
    # api throws before calling anything: no calls to cart or db, and it answers sooner
    after = _window(_with(SHOP, "api", work_ms=0.5, calls=()), 12)
    d = depgraph.diff_graphs(normal[0], after, references=normal[1:])
    top = d["suspects"][0]
    assert top["service"] == "api"
    assert top["lost_calls_share"] == pytest.approx(1.0)
    assert top["kept_callees"] == 0
    assert top["entry_p50_z"] < -1
    assert top["early_return"] == pytest.approx(0.3 * top["lost_calls_z"], rel=1e-3)
    assert top["early_return"] > 1
    # cart and db are never reached now; nobody else is blamed for a cut
    assert d["removed_services"] == ["cart", "db"]
    assert all(r["early_return"] == 0 for r in d["suspects"][1:])
    # without reference windows there is no spread to calibrate against: not scored
    assert "early_return" not in depgraph.diff_graphs(normal[0], after)["suspects"][0]


def test_a_service_that_still_calls_one_callee_as_usual_is_not_blamed_for_the_cut(
    normal: list[depgraph.DependencyGraph],
) -> None:
    # api still calls cart, then bails out before db: cart's answer may have caused it
    after = _window(_with(SHOP, "api", work_ms=0.5, calls=(depgraph.Call(callee="cart"),)), 13)
    ev = early_return_evidence(normal, after)
    assert ev["api"]["lost_calls_share"] == pytest.approx(0.5, abs=0.05)
    assert ev["api"]["kept_callees"] == 1
    assert ev["api"]["early_return"] == 0
    assert ev["api"]["lost_calls_z"] > 3  # the evidence is there, the blame is not


def test_lost_share_and_consensus_rows_golden() -> None:
    assert lost_share({"a": 2.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 3.0}) == pytest.approx(0.5)
    assert lost_share({}, {"a": 1.0}) is None
    rows = [
        [{"service": "x", "score": 1.0}, {"service": "y", "score": 5.0}],
        [{"service": "x", "score": 3.0}],
        [{"service": "x", "score": 9.0}, {"service": "y", "score": 1.0}],
    ]
    out = {r["service"]: r["score"] for r in consensus_rows(rows)}
    assert out == {"x": 3.0, "y": 3.0}  # y scored against 2 of 3 baselines: kept
    assert consensus_rows([*rows, [], []]) == [{"service": "x", "score": 3.0}]


def test_split_at_keeps_whole_traces_on_the_side_of_their_root() -> None:
    spans = pl.DataFrame(
        {
            "trace_id": ["a", "a", "b", "b", "c"],
            "span_id": ["1", "2", "1", "2", "9"],
            "parent_id": [None, "1", None, "1", "gone"],
            "start_us": [10, 120, 100, 101, 50],  # a straddles 100; c has no root
        }
    )
    before, after = depgraph.split_at(spans, 100)
    assert before["trace_id"].to_list() == ["a", "a"]
    assert after["trace_id"].to_list() == ["b", "b"]


# --- Nezha (real fault labels) -----------------------------------------------------------

NEZHA_DAYS = {
    "2022-08-22": ("OnlineBoutique", "2022-08-23/trace/17_00"),
    "2022-08-23": ("OnlineBoutique", "2022-08-23/trace/17_00"),
    "2023-01-29": ("TrainTicket", "2023-01-29/trace/08_50"),
    "2023-01-30": ("TrainTicket", "2023-01-30/trace/11_39"),
}


def _service(pod: str) -> str:
    m = re.match(r"^(.*?)-[0-9a-f]{6,10}-[0-9a-z]{5}$", pod)
    return m.group(1) if m else pod


@pytest.fixture(scope="module")
def nezha(shared_data: Path) -> dict[str, Any]:
    """Every labelled case whose three trace files are present, mined once."""
    root = shared_data / "nezha-rca"
    if not root.is_dir():
        pytest.skip(f"no Nezha data at {root} (FLEETLAB_MIRROR, default ../shared/data)")
    cases = []
    for day, (system, fault_free) in NEZHA_DAYS.items():
        labels = json.loads((root / f"rca_data/{day}/{day}-fault_list.json").read_text())
        for case in (c for cs in labels.values() for c in cs):
            h, m = map(int, case["inject_time"][11:16].split(":"))
            files = [
                root / f"rca_data/{day}/trace/"
                f"{(h * 60 + m + i) // 60:02d}_{(h * 60 + m + i) % 60:02d}_trace.csv.gz"
                for i in range(3)
            ]
            if not all(f.exists() for f in files):
                continue
            spans = pl.concat([traces_io.load(f) for f in files])
            pre, during = depgraph.split_at(spans, int(case["inject_timestamp"]) * 1_000_000)
            cases.append(
                {
                    "system": system,
                    "fault_free": fault_free,
                    "type": case["inject_type"],
                    "time": case["inject_time"],
                    "faulty": _service(case["inject_pod"]),
                    "window": depgraph.mine_spans(spans),
                    "pre": depgraph.mine_spans(pre) if pre["trace_id"].n_unique() >= 30 else None,
                    "during": depgraph.mine_spans(during),
                }
            )
    bases = {
        ff: depgraph.mine_spans(traces_io.load(root / f"construct_data/{ff}_trace.csv.gz"))
        for _, ff in NEZHA_DAYS.values()
    }
    return {"cases": cases, "bases": bases}


@pytest.fixture(scope="module")
def nezha_suspects(nezha: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each case diffed against its "before" window with the system's other windows (and
    fault-free phases) as references; no label is used to pick them."""
    out = []
    cases, bases = nezha["cases"], nezha["bases"]
    for i, c in enumerate(cases):
        before = c["pre"] or bases[c["fault_free"]]
        refs = [o["window"] for j, o in enumerate(cases) if j != i and o["system"] == c["system"]]
        free = {ff for system, ff in NEZHA_DAYS.values() if system == c["system"]}
        refs += [bases[ff] for ff in sorted(free) if bases[ff] is not before]
        out.append((c, depgraph.diff_graphs(before, c["during"], references=refs)["suspects"]))
    return out


@pytest.mark.slow
def test_nezha_reference_windows_localise_every_resource_fault(
    nezha_suspects: list[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> None:
    """The other windows of the system as references: OnlineBoutique 5/5 and TrainTicket's
    21 CPU/network cases all rank the faulty service first (one window: 18/21 top-1), and
    the code-level cases are at least as good as with one window (top-3 2 of 24)."""
    tally: dict[str, list[int]] = {}
    for c, suspects in nezha_suspects:
        names = [s["service"] for s in suspects]
        rank = names.index(c["faulty"]) + 1 if c["faulty"] in names else 0
        code = c["type"] in ("return", "exception")
        key = "OB" if c["system"] == "OnlineBoutique" else ("TT code" if code else "TT resource")
        tally.setdefault(key, []).append(rank)
    assert {k: len(v) for k, v in tally.items()} == {"OB": 5, "TT resource": 21, "TT code": 24}
    assert all(r == 1 for r in tally["OB"]), tally["OB"]
    assert all(r == 1 for r in tally["TT resource"]), tally["TT resource"]
    code = tally["TT code"]
    assert sum(r == 1 for r in code) >= 2 and sum(1 <= r <= 3 for r in code) >= 3, code


@pytest.mark.slow
def test_nezha_code_faults_in_price_and_route_leave_no_trace_in_their_spans(
    nezha_suspects: list[tuple[dict[str, Any], list[dict[str, Any]]]],
) -> None:
    """The 6 exception cases of ts-price-service and ts-route-service: the faulty service
    makes all its usual calls and its latency is within the spread of the other windows,
    so no span-based rule can single it out (docs/depgraph.md, Nezha section)."""
    seen = 0
    for c, suspects in nezha_suspects:
        if c["type"] != "exception" or c["faulty"] not in ("ts-price-service", "ts-route-service"):
            continue
        row = next(s for s in suspects if s["service"] == c["faulty"])
        seen += 1
        assert row["lost_calls_share"] < 0.02, (c["time"], row)
        assert abs(row["entry_p50_z"]) < 2.5, (c["time"], row)
        assert row["self_latency_log2"] < 0.5, (c["time"], row)
        assert row["early_return"] == 0
    assert seen == 6
