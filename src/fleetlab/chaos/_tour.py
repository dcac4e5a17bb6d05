"""The chaos stop of ``fleetlab tour``: explore the bundled demo system, graph-guided."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleetlab.chaos._demo import demo_system
from fleetlab.chaos._explore import ExploreSpec, explore
from fleetlab.chaos._report import explore_report
from fleetlab.report import Report

#: short runs so the stop fits in the tour's budget on two cores
TOUR_SPEC = ExploreSpec(rate_per_s=40.0, window_s=0.4, slow_ms=500.0, settle_s=0.02)


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Start the demo system on loopback, explore its faults, report what breaks.

    No data is needed: the demo system and its dependency graph are built in code (the
    graph as a trace of 1000 checkouts would show it). Everything started is stopped and
    every fault removed before this returns, whatever happens.

    Parameters
    ----------
    workdir
        Folder for ``chaos_matrix.parquet``, ``chaos_findings.json`` and
        ``chaos_journal.json`` (the exploration's journal: every experiment it ran).
    seed
        Unused by the search itself (it is exhaustive up to pruning); recorded.

    Returns
    -------
    (Report, dict)
        Report sections and headline numbers: runs, runs saved, flaws found/expected.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with demo_system() as demo:
        result = explore(
            demo.graph,
            entry_url=demo.entry_url,
            api=demo.api_url,
            proxies=demo.proxies,
            spec=TOUR_SPEC,
        )
        flaws = demo.flaws
    found = {(f["service"], f["finding"]) for f in result.findings}
    expected = [(svc, finding) for svc, _kind, finding in flaws]
    hit = [f"{s}: {f}" for s, f in expected if (s, f) in found]
    result.matrix.write_parquet(workdir / "chaos_matrix.parquet")
    (workdir / "chaos_findings.json").write_text(
        json.dumps(
            {
                "findings": result.findings,
                "minimal_failing": result.minimal_failing,
                "metrics": result.metrics,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    (workdir / "chaos_journal.json").write_text(
        json.dumps(result.journal, indent=1, default=str), encoding="utf-8"
    )
    report = explore_report(result, title="the bundled demo system")
    intro = report.sections[0]
    intro.blocks.insert(
        0,
        (
            "<p>A gateway with six backends (auth, cache, catalog, inventory, recommendations, "
            "queue) runs on loopback, each backend behind a fleetlab proxy. The explorer walks "
            "single and pairwise dependency faults (down, slow, error) in order of blast radius, "
            "each run as an experiment (steady state under open-loop load, the faults, "
            "rollback, steady state again), and reports which break the SLO. Data: synthesized in code "
            "(no trace needed). Documented flaws found: "
            f"{len(hit)} of {len(expected)} ({'; '.join(hit) or 'none'}).</p>"
        ),
    )
    summary = {
        "data": "demo system synthesized in code",
        "runs": result.metrics["runs"],
        "experiments": result.metrics["experiments"],
        "runs_saved": result.metrics["runs_saved"],
        "minimal_failing_sets": result.metrics["minimal_failing_sets"],
        "flaws_found": len(hit),
        "flaws_expected": len(expected),
        "elapsed_s": round(result.metrics["elapsed_s"], 2),
        "seed": seed,
    }
    return report, summary
