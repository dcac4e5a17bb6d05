"""The workload stop of the tour: offline, with and without the mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlab.workload import tour_stop


def test_tour_stop_without_mirror_uses_builtin_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    report, summary = tour_stop(tmp_path, seed=0)
    assert "built-in" in summary["source"]
    assert summary["fidelity_passed"] and summary["scaled10_passed"]
    assert summary["median_prompt_tokens"] == pytest.approx(1020, rel=0.05)
    assert (tmp_path / "workload_model.yaml").exists()
    assert any("Fidelity" in s.title for s in report.sections)


def test_tour_stop_with_mirror_uses_the_azure_conversation_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    _, summary = tour_stop(tmp_path, seed=0)
    assert "AzureLLMInferenceTrace_conv" in summary["source"]
    assert summary["rows"] == 19366 and summary["median_output_tokens"] == 129
    assert summary["fidelity_passed"], summary["fidelity_failed"]
