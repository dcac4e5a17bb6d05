"""The graph object and its files: versioned JSON round trip, GraphML, DOT, safe writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab import depgraph
from fleetlab.errors import DataNotFoundError, FleetlabError, InputFormatError


@st.composite
def _graphs(draw: st.DrawFn) -> depgraph.DependencyGraph:
    names = draw(
        st.lists(
            st.text("abcdefgh-_.", min_size=1, max_size=8), min_size=1, max_size=8, unique=True
        )
    )
    g = nx.DiGraph()
    for n in names:
        g.add_node(
            n,
            spans=draw(st.integers(0, 10**6)),
            p50_ms=draw(st.one_of(st.just(math.nan), st.floats(0, 1e4))),
            entry=False,
        )
    for u in names:
        for v in names:
            if u != v and draw(st.booleans()):
                g.add_edge(
                    u,
                    v,
                    calls=draw(st.integers(1, 10**9)),
                    rate_per_s=draw(st.floats(0, 1e6)),
                    p50_ms=draw(st.one_of(st.just(math.nan), st.floats(0, 1e4))),
                    p99_ms=draw(st.floats(0, 1e5)),
                    mean_ms=1.0,
                    error_rate=draw(st.floats(0, 1)),
                    kind=draw(st.sampled_from(["sync", "async"])),
                    confidence=1.0,
                )
    return depgraph.DependencyGraph(g, [names[0]], meta={"source": "spans", "traces": 3})


def _same(a: depgraph.DependencyGraph, b: depgraph.DependencyGraph) -> None:
    assert sorted(a.graph.nodes) == sorted(b.graph.nodes)
    ea, eb = a.edges(), b.edges()
    assert len(ea) == len(eb)
    for x, y in zip(ea, eb, strict=True):
        for k, v in x.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(y[k])
            else:
                assert y[k] == v


@settings(max_examples=40, deadline=None)
@given(_graphs())
def test_json_round_trip(graph: depgraph.DependencyGraph) -> None:
    doc = json.loads(json.dumps(graph.to_json()))
    assert doc["format"] == "fleetlab-depgraph" and doc["version"] == 1
    back = depgraph.DependencyGraph.from_json(doc)
    _same(graph, back)
    assert back.entry_points == graph.entry_points and back.meta == graph.meta


def test_files_round_trip_and_refuse_overwrite(tmp_path: Path) -> None:
    spans = depgraph.generate_spans(
        depgraph.topology("shared-backends"), depgraph.Traffic(rate_per_s=20, duration_s=5), seed=0
    )
    g = depgraph.mine_spans(spans)
    p = depgraph.write_graph(g, tmp_path / "g.json")
    _same(g, depgraph.read_graph(p))
    with pytest.raises(FleetlabError, match="already exists"):
        depgraph.write_graph(g, p)
    gm = depgraph.read_graph(depgraph.write_graph(g, tmp_path / "g.graphml"))
    assert set(gm.graph.edges) == set(g.graph.edges)
    assert gm.entry_points == g.entry_points
    assert gm.graph.edges["web", "auth"]["calls"] == g.graph.edges["web", "auth"]["calls"]
    dot = depgraph.write_graph(g, tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and '"web" -> "auth"' in dot
    assert dot.count("->") == g.graph.number_of_edges()


def test_bad_graph_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        depgraph.read_graph(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(InputFormatError, match=r"bad\.json.*format"):
        depgraph.read_graph(bad)
    newer = tmp_path / "newer.json"
    newer.write_text('{"format": "fleetlab-depgraph", "version": 99}')
    with pytest.raises(InputFormatError, match="version"):
        depgraph.read_graph(newer)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputFormatError, match=r"broken\.json"):
        depgraph.read_graph(broken)
