"""Several processes writing one store at once, and a process killed with SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from fleetlab.store import RunStore

WRITER = textwrap.dedent(
    """
    import sys
    from fleetlab.store import RunStore

    root, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for i in range(n):
        store = RunStore(root)  # every CLI command opens the store afresh
        with store.run("stress", config={"worker": worker, "i": i}, inputs=[]) as run:
            run.log_metrics({"worker": worker, "i": i})
            run.write_json("out.json", {"worker": worker, "i": i})
            run.log_metrics({"done": True})
    """
)

KILLED = textwrap.dedent(
    """
    import shutil, sys, time
    from fleetlab.store import RunStore, _store

    def slow_copy(src, dst):
        with open(dst, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)

    store = RunStore(sys.argv[1])
    with store.run("doomed", config={}) as run:
        run.log_metrics({"step": 1})
        run.write_text("complete.txt", "fine")
        print(run.id, flush=True)
        _store.shutil.copyfile = slow_copy
        run.add_artifact("half.bin", sys.argv[2])
    """
)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_concurrent_writers_and_a_reader(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    RunStore(root)
    procs, n = 4, 25
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(w), str(n)],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(procs)
    ]
    reader = RunStore(root)
    seen = 0
    while any(p.poll() is None for p in workers):
        seen = max(seen, len(reader.list(limit=None)))  # reads while the writers write
    errors = [p.stderr.read() for p in workers if p.stderr]
    assert all(p.returncode == 0 for p in workers), errors
    assert not any("locked" in e for e in errors)
    runs = reader.list(limit=None)
    assert len(runs) == procs * n and seen <= procs * n
    assert {(r.config["worker"], r.config["i"]) for r in runs} == {
        (w, i) for w in range(procs) for i in range(n)
    }
    assert all(r.status == "finished" for r in runs)
    assert all(r.metrics == {**r.config, "done": True} for r in runs)
    assert all(set(r.artifacts) == {"out.json"} and r.artifacts["out.json"].is_file() for r in runs)
    assert len({r.id for r in runs}) == procs * n


def test_kill_9_mid_run_leaves_store_readable_and_run_failed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    src = tmp_path / "big.bin"
    src.write_bytes(b"y" * 100_000)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(root), str(src)],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "WRITING"
    run_dir = root / "artifacts" / run_id
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".tmp-")]  # mid-write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(root / "runs.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert (
        conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0] == "running"
    )
    conn.close()

    store = RunStore(root)  # opening recovers
    rec = store.get(run_id)
    assert rec.status == "failed" and rec.error == "process died"
    assert rec.ended_at is not None
    assert rec.metrics == {"step": 1}
    assert set(rec.artifacts) == {"complete.txt"}  # the half-written one is never listed
    assert rec.artifacts["complete.txt"].read_text() == "fine"
    assert sorted(p.name for p in run_dir.iterdir()) == ["complete.txt"]  # temp file cleaned
    with store.run("after", config={}) as run:  # and the store keeps working
        pass
    assert store.get(run.id).status == "finished"


def test_threads_share_one_store(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = RunStore(tmp_path / "runs")

    def work(t: int) -> None:
        for i in range(10):
            with store.run("thread", config={"t": t, "i": i}) as run:
                run.log_metrics({"t": t})
                run.write_text("x.txt", f"{t}-{i}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    runs = store.list(limit=None)
    assert len(runs) == 80 and all(r.status == "finished" for r in runs)
    assert {r.artifacts["x.txt"].read_text() for r in runs} == {
        f"{t}-{i}" for t in range(8) for i in range(10)
    }


def test_a_held_write_lock_is_waited_out_with_retries(tmp_path: Path, monkeypatch) -> None:
    import threading

    from fleetlab.store import _db

    monkeypatch.setattr(
        _db, "BUSY_TIMEOUT_MS", 20
    )  # make SQLite give up fast: our retry loop works
    store = RunStore(tmp_path / "runs")
    blocker = sqlite3.connect(store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    timer = threading.Timer(0.6, lambda: blocker.execute("COMMIT"))
    timer.start()
    try:
        with store.run("patient", config={}) as run:  # must wait ~0.6 s, then succeed
            run.log_metrics({"ok": 1})
    finally:
        timer.join()
        blocker.close()
    assert store.get(run.id).status == "finished"


def test_a_lock_held_forever_is_a_store_error(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from fleetlab.errors import StoreError
    from fleetlab.store import _db

    monkeypatch.setattr(_db, "BUSY_TIMEOUT_MS", 10)
    monkeypatch.setattr(_db, "RETRY_FOR_S", 0.3)
    store = RunStore(tmp_path / "runs")
    blocker = sqlite3.connect(store.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="still locked"), store.run("x", config={}):
            pass
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
