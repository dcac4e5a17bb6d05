"""The depgraph stop of ``fleetlab tour`` runs offline and reports real numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetlab import depgraph


def test_tour_stop_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    report, summary = depgraph.tour_stop(tmp_path, seed=0)
    assert summary["edges_match_truth"] is True
    assert summary["flow_mining_f1"]["generated"] >= 0.9
    assert "generated" in summary["data"] and "mirror" not in summary["data"]
    assert summary["top_blast_radius"].startswith("nginx")
    assert (
        depgraph.read_graph(tmp_path / "depgraph.json").graph.number_of_edges() == summary["edges"]
    )
    assert "plotly_click" in report.to_html()


def test_public_names_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "depgraph.md").read_text()
    for name in depgraph.__all__:
        assert re.search(rf"`{name}[`(]", doc), name
