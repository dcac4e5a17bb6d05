"""The tour's run-store stop: several processes record runs at once, one is killed mid-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.report import Report
from fleetlab.store import tour_demo


def store_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Run the store demo in ``workdir`` and describe what the store holds afterwards."""
    rows, summary = tour_demo(workdir, seed=seed)
    report = Report("store")
    sec = report.section("Run store: concurrent writers and a crash")
    sec.text(
        "Four processes record runs into one fresh store at the same time while one more "
        "process is killed (SIGKILL) in the middle of writing an artifact. Reopening the store "
        "marks the killed run failed; no half-written artifact is listed."
    )
    sec.metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    frame = pl.DataFrame(rows).drop("artifacts", strict=False)
    sec.table(frame.group_by("status").len().sort("status"))
    return report, {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
