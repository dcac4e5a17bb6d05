"""The main job: `fleetlab tour` runs every stop offline on defaults and writes one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetlab.tour import STOPS


@pytest.mark.slow
def test_tour_runs_every_stop_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLEETLAB_MIRROR"}  # no data at all
    out = tmp_path / "tour"
    result = subprocess.run(
        [sys.executable, "-m", "fleetlab", "tour", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert list(summary["stops"]) == [name for name, _ in STOPS]
    html = Path(summary["report"]).read_text()
    assert html.count("Plotly.newPlot") >= len(STOPS)
    # each stop says it used built-in synthetic data, since there was no mirror
    assert summary["stops"]["workload"]["fidelity_passed"] is True
    assert summary["stops"]["chaos"]["flaws_found"] == summary["stops"]["chaos"]["flaws_expected"]
    assert summary["stops"]["depgraph"]["edges_match_truth"] is True
    runs = subprocess.run(
        [sys.executable, "-m", "fleetlab", "runs", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert any(
        r["command"] == "tour" and r["status"] == "finished" for r in json.loads(runs.stdout)
    )
