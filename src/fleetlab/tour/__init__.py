"""``fleetlab tour``: every capability on defaults, offline, in one report.

Each stop is a function ``(workdir, *, seed) -> (Report, summary dict)`` from an area;
the tour runs them in order and joins their reports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetlab import chaos, depgraph, inference, placement, workload
from fleetlab.report import Report
from fleetlab.tour._data import data_stop
from fleetlab.tour._foundation import demo_requests, ingest_stop
from fleetlab.tour._spans import tour_stop as spans_stop
from fleetlab.tour._store import store_stop
from fleetlab.tour._traces import tour_stop as traces_stop

Stop = Callable[..., tuple[Report, dict[str, Any]]]

#: the stops in tour order: (name, function)
STOPS: tuple[tuple[str, Stop], ...] = (
    ("ingest", ingest_stop),
    ("data", data_stop),
    ("traces", traces_stop),
    ("spans", spans_stop),
    ("store", store_stop),
    ("workload", workload.tour_stop),
    ("inference", inference.tour_stop),
    ("placement", placement.tour_stop),
    ("depgraph", depgraph.tour_stop),
    ("chaos", chaos.tour_stop),
)


def run_tour(
    workdir: Path,
    *,
    seed: int = 0,
    only: list[str] | None = None,
    on_stop: Callable[[str], None] | None = None,
) -> tuple[Report, dict[str, dict[str, Any]]]:
    """Run the tour's stops (or just ``only``) in ``workdir``; returns the report and summaries."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report("fleetlab tour", f"seed {seed}; every stop runs offline on defaults")
    summary: dict[str, dict[str, Any]] = {}
    for name, stop in STOPS:
        if only and name not in only:
            continue
        if on_stop:
            on_stop(name)
        part, stats = stop(workdir, seed=seed)
        report.extend(part)
        summary[name] = stats
    return report, summary


__all__ = ["STOPS", "demo_requests", "run_tour"]
