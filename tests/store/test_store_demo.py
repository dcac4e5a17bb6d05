"""The tour's run-store demonstration: concurrent writers, a SIGKILL, and recovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleetlab.store import RunStore, tour_demo


def test_tour_demo_numbers(tmp_path: Path) -> None:
    rows, summary = tour_demo(tmp_path, seed=7, writers=2, runs_per_writer=3)
    assert summary["runs"] == 7 and summary["finished"] == 6 and summary["failed"] == 1
    assert summary["killed_run_status"] == "failed (process died)"
    assert summary["killer_exit_code"] == -9
    assert summary["half_written_artifacts_listed"] == 0 and summary["temp_files_left"] == 0
    assert {r["artifacts"] for r in rows if r["status"] == "finished"} == {"result.json"}
    store = RunStore(tmp_path / "store-demo")
    doomed = store.list(command="demo doomed")[0]
    assert doomed.metrics == {"progress": 0.5} and doomed.artifacts == {}
    # the metrics are drawn from the seed: worker w's stream is SeedSequence(7).spawn(2)[w]
    for w, child in enumerate(np.random.SeedSequence(7).spawn(2)):
        rng = np.random.default_rng(
            np.random.SeedSequence([int(x) for x in child.generate_state(4)])
        )
        expected = [round(float(rng.lognormal(np.log(120.0), 0.4)), 2) for _ in range(3)]
        got = [r["p99_latency_ms"] for r in sorted(rows, key=lambda r: r["id"]) if r["worker"] == w]
        assert got == expected


def test_tour_demo_never_deletes_a_foreign_folder(tmp_path: Path) -> None:
    import pytest

    from fleetlab.errors import StoreError

    (tmp_path / "store-demo").mkdir()
    (tmp_path / "store-demo" / "precious.txt").write_text("mine")
    with pytest.raises(StoreError, match="refusing"):
        tour_demo(tmp_path, seed=0, writers=1, runs_per_writer=1)
    assert (tmp_path / "store-demo" / "precious.txt").read_text() == "mine"
