"""The traces stop of the tour: offline on synthesized files, and on the real mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlab.tour._traces import SYNTH, tour_stop


def test_tour_stop_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    report, summary = tour_stop(tmp_path, seed=3)
    assert summary["source"] == "synthetic"
    assert summary["formats"] == ["azure-llm", "mooncake", "azure-functions-2019"]
    rows = summary["rows_by_format"]
    expected = SYNTH["rate_per_s"] * SYNTH["duration_s"]
    assert abs(rows["azure-llm"] - expected) < 4 * expected**0.5  # Poisson count
    assert rows["mooncake"] == rows["azure-llm"]
    html = report.to_html()
    assert "azure-functions-2019" in html and "requests per minute" in html
    _, same = tour_stop(tmp_path / "again", seed=3)
    assert same == summary  # seeded: the same files, the same numbers


def test_tour_stop_on_the_mirror(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    _, summary = tour_stop(tmp_path, seed=0)
    assert summary["source"] == "mirror"
    assert summary["rows_by_format"]["azure-llm"] == 19_366
    assert summary["rows_by_format"]["servegen"] == 35 * 144
