"""A demonstration of the run store for ``fleetlab tour``: concurrent writers and a crash.

:func:`tour_demo` records runs from several processes at once into a fresh store,
kills one process with SIGKILL in the middle of writing an artifact, reopens the
store, and returns what it finds: a table of the runs and headline numbers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from fleetlab.errors import StoreError
from fleetlab.store._store import RunStore, _atomic_write


def _writer(root: str, worker: int, runs: int, seed_words: list[int]) -> list[float]:
    """Record ``runs`` runs; returns each run's wall time in seconds."""
    rng = np.random.default_rng(np.random.SeedSequence(seed_words))
    took = []
    for i in range(runs):
        t0 = time.perf_counter()
        store = RunStore(root)  # as every CLI command does
        with store.run("demo simulate", config={"worker": worker, "i": i}) as run:
            latency = float(rng.lognormal(np.log(120.0), 0.4))
            run.log_metrics({"p99_latency_ms": round(latency, 2), "worker": worker})
            run.write_json("result.json", {"worker": worker, "i": i, "p99_latency_ms": latency})
        took.append(time.perf_counter() - t0)
    return took


def _doomed(root: str) -> None:
    """Start a run, begin writing an artifact, and die with SIGKILL half-way through."""
    store = RunStore(root)
    with store.run("demo doomed", config={"note": "killed with SIGKILL mid-artifact"}) as run:
        run.log_metrics({"progress": 0.5})

        def half_then_die(tmp: Path) -> None:
            with tmp.open("wb") as f:
                f.write(b"half of a parquet file")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        _atomic_write(run.dir / "table.parquet", half_then_die)


def tour_demo(
    workdir: Path, *, seed: int, writers: int = 4, runs_per_writer: int = 10
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Exercise a fresh run store in ``workdir/store-demo``: concurrent writers plus one crash.

    Parameters
    ----------
    workdir
        Folder for the demo store, ``workdir/store-demo`` (replaced if it is a previous
        demo store; any other folder of that name is refused, never deleted).
    seed
        Seeds the metrics the writers log.
    writers, runs_per_writer
        Processes writing at once, and runs each records.

    Returns
    -------
    rows : list of dict
        One row per run in the store afterwards: id, command, status, error,
        worker, p99_latency_ms, artifacts.
    summary : dict
        Headline numbers: runs, finished, failed (the killed one, recovered on
        reopen), half-written artifacts listed (0), runs per second, median and
        p99 wall time per run in ms (open store, start, log, write an
        artifact, finish), store path.
    """
    import shutil

    root = Path(workdir) / "store-demo"
    if root.exists():
        if not (root / "runs.sqlite").is_file():
            raise StoreError(f"{root}: exists and is not a demo run store; refusing to replace it")
        shutil.rmtree(root)
    RunStore(root)
    ctx = multiprocessing.get_context("spawn")
    children = np.random.SeedSequence(seed).spawn(writers)
    with ctx.Pool(writers + 1) as pool:
        jobs = [
            pool.apply_async(
                _writer, (str(root), w, runs_per_writer, [int(x) for x in c.generate_state(4)])
            )
            for w, c in enumerate(children)
        ]
        per_writer = [job.get(timeout=120) for job in jobs]
    took = [t for times in per_writer for t in times]
    busy = max(sum(times) for times in per_writer)  # wall time of the busiest writer's runs
    killer = ctx.Process(target=_doomed, args=(str(root),))
    killer.start()
    killer.join(timeout=60)
    store = RunStore(root)  # reopening marks the killed run failed
    records = store.list(limit=None)
    rows = [
        {
            "id": r.id,
            "command": r.command,
            "status": r.status,
            "error": r.error or "",
            "worker": r.config.get("worker"),
            "p99_latency_ms": r.metrics.get("p99_latency_ms"),
            "artifacts": ", ".join(sorted(r.artifacts)),
        }
        for r in records
    ]
    half_listed = sum(
        1
        for r in records
        for p in r.artifacts.values()
        if not p.is_file() or p.name.startswith(".")
    )
    leftovers = sum(1 for _ in (root / "artifacts").rglob(".tmp-*"))
    ms = np.array(took) * 1000
    summary = {
        "runs": len(records),
        "finished": sum(r.status == "finished" for r in records),
        "failed": sum(r.status == "failed" for r in records),
        "killed_run_status": next(
            (f"{r.status} ({r.error})" for r in records if r.command == "demo doomed"), "missing"
        ),
        "half_written_artifacts_listed": half_listed,
        "temp_files_left": leftovers,
        "writers": writers,
        "runs_per_s": round(len(took) / busy, 1),
        "median_run_ms": round(float(np.median(ms)), 1),
        "p99_run_ms": round(float(np.percentile(ms, 99)), 1),
        "killer_exit_code": killer.exitcode,
        "store": str(root),
    }
    return rows, summary
