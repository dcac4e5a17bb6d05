"""The spans tour stop: offline on synthesized traces, and on the mirror when it is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlab import traces
from fleetlab.tour._spans import TOPOLOGY, demo_jaeger_lines, service_edges, tour_stop


def test_synthetic_stop_runs_offline_and_is_deterministic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    report, summary = tour_stop(tmp_path / "a", seed=3)
    assert summary["source"] == "synthetic"
    assert summary["formats"] == ["jaeger-json", "zipkin-json"]
    # 300 traces x 6 spans in Jaeger + 10 traces in Zipkin: 10 roots + 50 client/server pairs
    assert summary["spans"] == 1_800 + 110 and summary["traces"] == 310
    assert (summary["services"], summary["edges"]) == (6, 5)
    assert "Spans" in report.to_html()
    again = tour_stop(tmp_path / "b", seed=3)[1]
    assert again == summary
    zipkin = traces.inspect(tmp_path / "a" / "demo_spans_zipkin.json")["quality"]
    assert zipkin["shared_server_halves"] == 50 and zipkin["unknown_parent"] == 0


def test_demo_edges_are_the_topology(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(demo_jaeger_lines(0))
    edges = service_edges(traces.load(path))
    expected = sorted((a, b) for a, calls in TOPOLOGY.items() for b, _ in calls)
    assert sorted(edges.select("caller", "callee").rows()) == expected
    assert set(edges["calls"]) == {300}
    # children run inside their parents: the generator never makes skewed traces
    frame = traces.load(path)
    parents = frame.select("trace_id", "span_id", "start_us", "duration_us").rename(
        {"span_id": "parent_id", "start_us": "ps", "duration_us": "pd"}
    )
    links = frame.join(parents, on=["trace_id", "parent_id"])
    assert (links["start_us"] >= links["ps"]).all()
    assert (links["start_us"] + links["duration_us"] <= links["ps"] + links["pd"]).all()


def test_mirror_stop_reads_real_files(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    _, summary = tour_stop(tmp_path, seed=0)
    assert summary["source"] == "mirror"
    assert summary["formats"] == ["jaeger-json", "zipkin-json", "nezha-csv"]
    assert summary["spans"] == 11_000 + 172 + 4_890
    assert (summary["services"], summary["edges"]) == (6, 5)
