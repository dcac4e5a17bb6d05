"""The run store: lifecycle, queries, artifacts, fingerprints and bad paths."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetlab.errors import DataNotFoundError, StoreError
from fleetlab.store import RunStore, default_store_path, fingerprint, fleetlab_home, new_run_id
from fleetlab.store import _fingerprint as fp_module


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_default_location_follows_fleetlab_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLEETLAB_HOME", str(tmp_path / "home"))
    assert fleetlab_home() == tmp_path / "home"
    assert RunStore().path == tmp_path / "home" / "runs" == default_store_path()
    assert (tmp_path / "home" / "runs" / "runs.sqlite").is_file()
    monkeypatch.delenv("FLEETLAB_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert fleetlab_home() == tmp_path / "xdg" / "fleetlab"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert fleetlab_home() == Path.home() / ".local" / "share" / "fleetlab"


def test_database_is_in_wal_mode(store: RunStore) -> None:
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_finished_run_records_everything(store: RunStore, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n")
    with store.run("traces inspect", config={"path": src, "n": 3}, inputs=[src]) as run:
        run.log_metrics({"rows": 1, "mean": 2.5})
        run.log_metrics({"rows": 2})  # later values win, others stay
        p_json = run.write_json("result.json", {"rows": 2})
        p_txt = run.write_text("notes/readme.txt", "hello")
        p_pq = run.write_parquet("table.parquet", pl.DataFrame({"x": [1, 2, 3]}))
        p_art = run.add_artifact("copy.csv", src)
        assert run.dir == store.path / "artifacts" / run.id
        assert run.record.status == "running" and run.record.ended_at is None
    rec = store.get(run.id)
    assert rec.status == "finished" and rec.error is None
    assert rec.command == "traces inspect"
    assert rec.config == {"path": str(src), "n": 3}
    assert rec.metrics == {"rows": 2, "mean": 2.5}
    assert rec.pid == os.getpid() and rec.host and rec.version
    assert rec.ended_at is not None and rec.duration_s is not None and rec.duration_s >= 0
    assert rec.artifacts == {
        "copy.csv": p_art,
        "notes/readme.txt": p_txt,
        "result.json": p_json,
        "table.parquet": p_pq,
    }
    assert json.loads(p_json.read_text()) == {"rows": 2}
    assert p_txt.read_text() == "hello"
    assert pl.read_parquet(p_pq)["x"].to_list() == [1, 2, 3]
    assert p_art.read_bytes() == src.read_bytes()
    [inp] = rec.inputs
    assert inp.kind == "file" and inp.size == src.stat().st_size
    assert inp.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert inp.fingerprint == f"sha256:{inp.sha256}"
    assert not list(run.dir.rglob(".tmp-*"))


def test_failed_run_is_marked_and_reraised(store: RunStore) -> None:
    with pytest.raises(ZeroDivisionError), store.run("boom", config={}) as run:
        run.log_metrics({"before": 1})
        _ = 1 / 0
    rec = store.get(run.id)
    assert rec.status == "failed"
    assert rec.error == "ZeroDivisionError: division by zero"
    assert rec.metrics == {"before": 1}


def test_keyboard_interrupt_and_exits(store: RunStore) -> None:
    import gc

    gc.disable()  # CPython may blame a GC callback (hypothesis') for an in-flight Ctrl-C
    try:
        with pytest.raises(KeyboardInterrupt), store.run("x", config={}) as run:
            raise KeyboardInterrupt
    finally:
        gc.enable()
    assert store.get(run.id).error == "interrupted"
    with pytest.raises(SystemExit), store.run("y", config={}) as ok:
        raise SystemExit(0)
    assert store.get(ok.id).status == "finished"
    with pytest.raises(SystemExit), store.run("z", config={}) as bad:
        raise SystemExit(2)
    assert store.get(bad.id).status == "failed"
    assert store.get(bad.id).error == "exited with code 2"


def test_list_filters_orders_and_limits(store: RunStore) -> None:
    ids = []
    for i in range(5):
        cmd = "placement simulate" if i % 2 else "tour"
        with store.run(cmd, config={"i": i}) as run:
            pass
        ids.append(run.id)
    with pytest.raises(RuntimeError), store.run("tour", config={}) as bad:
        raise RuntimeError("x")
    ids.append(bad.id)
    assert [r.id for r in store.list()] == ids[::-1]
    assert [r.id for r in store.list(limit=2)] == ids[::-1][:2]
    assert {r.command for r in store.list(command="placement")} == {"placement simulate"}
    assert len(store.list(command="tour")) == 4
    assert [r.id for r in store.list(status="failed")] == [bad.id]
    assert len(store.list(limit=None, status="finished")) == 5
    assert store.list(command="place") == []  # a prefix must end at a word


def test_get_by_prefix_latest_unknown_and_ambiguous(store: RunStore) -> None:
    with store.run("a", config={}) as r1:
        pass
    with store.run("b", config={}) as r2:
        pass
    assert store.get(r1.id).command == "a"
    assert store.get(r2.id[:-3]).id == r2.id if r2.id[:-3] != r1.id[:-3] else True
    assert store.get("latest").id == r2.id
    with pytest.raises(DataNotFoundError, match="not found"):
        store.get("nope")
    with pytest.raises(DataNotFoundError, match="ambiguous"):
        store.get(r1.id[:4])  # both start with the year


def test_remove_deletes_row_and_artifacts(store: RunStore) -> None:
    with store.run("a", config={}) as run:
        path = run.write_text("x.txt", "x")
    removed = store.remove(run.id[:-2])
    assert removed.id == run.id
    assert not path.exists() and not run.dir.exists()
    with pytest.raises(DataNotFoundError):
        store.get(run.id)
    assert store.list() == []


def test_remove_refuses_a_live_running_run(store: RunStore) -> None:
    with store.run("long", config={}) as run:
        with pytest.raises(StoreError, match="still running"):
            store.remove(run.id)
        store.remove(run.id, force=True)
    assert store.list() == []


def test_artifacts_appear_only_when_complete(store: RunStore, monkeypatch) -> None:
    def broken(self, tmp: Path) -> None:  # writes half a file, then fails
        tmp.write_text("half")
        raise OSError("disk full")

    with store.run("a", config={}) as run:
        monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
        with pytest.raises(StoreError, match="disk full"):
            run.write_parquet("t.parquet", pl.DataFrame({"a": [1]}))
    rec = store.get(run.id)
    assert rec.artifacts == {}
    assert list(run.dir.iterdir()) == []


@pytest.mark.parametrize("name", ["", "../x", "/etc/passwd", "a/../../b", ".hidden", "a/.tmp-x"])
def test_bad_artifact_names_are_refused(store: RunStore, name: str) -> None:
    with store.run("a", config={}) as run, pytest.raises(StoreError, match="artifact name"):
        run.write_text(name, "x")


def test_add_artifact_missing_source(store: RunStore, tmp_path: Path) -> None:
    with store.run("a", config={}) as run, pytest.raises(DataNotFoundError, match="no such file"):
        run.add_artifact("x", tmp_path / "missing.txt")


def test_metrics_convert_numpy_and_non_finite(store: RunStore) -> None:
    import numpy as np

    with store.run("a", config={"arr": np.arange(3), "f": np.float32(1.5)}) as run:
        run.log_metrics({"n": np.int64(7), "x": np.float64(0.25), "bad": float("inf"), "ok": True})
    rec = store.get(run.id)
    assert rec.metrics == {"n": 7, "x": 0.25, "bad": None, "ok": True}
    assert rec.config == {"arr": [0, 1, 2], "f": 1.5}
    with store.run("b", config={}) as run2, pytest.raises(StoreError, match="must be a dict"):
        run2.log_metrics([1, 2])  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(metrics=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_metrics_round_trip(store: RunStore, metrics: dict) -> None:
    with store.run("prop", config={"m": metrics}) as run:
        run.log_metrics(metrics)
    rec = store.get(run.id)
    assert rec.metrics == metrics
    assert rec.config == {"m": metrics}


def test_run_ids_sort_by_time_and_are_unique() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    a, b = new_run_id(t0), new_run_id(t0 + timedelta(milliseconds=1))
    assert a.startswith("20260102-030405-006-") and a < b
    # 24 random bits: 1000 ids of one millisecond collide about 3 % of the time (the
    # store retries on a collision, below); more than a few collisions means no randomness
    assert len({new_run_id(t0) for _ in range(1000)}) >= 995


def test_a_colliding_run_id_is_retried(store: RunStore, monkeypatch) -> None:
    from fleetlab.store import _store as store_module

    with store.run("first", config={}) as first:
        pass
    ids = iter([first.id, first.id, "20260102-030405-006-abcdef"])
    monkeypatch.setattr(store_module, "new_run_id", lambda when=None: next(ids))
    with store.run("second", config={}) as second:
        pass
    assert second.id == "20260102-030405-006-abcdef"
    assert store.get(first.id).command == "first" and store.get(second.id).command == "second"


def test_fingerprints(tmp_path: Path, monkeypatch) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    ref = fingerprint(small)
    assert ref.sha256 == hashlib.sha256(b"abc").hexdigest() and ref.size == 3
    monkeypatch.setattr(fp_module, "HASH_LIMIT", 2)  # pretend it is > 64 MiB
    big = fingerprint(small)
    assert big.sha256 is None and big.fingerprint == f"stat:3:{small.stat().st_mtime_ns}"
    folder = fingerprint(tmp_path)
    assert folder.kind == "dir" and folder.size == 3
    assert fingerprint("https://example.org/x").kind == "missing"


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match=str(f)):
        RunStore(f)


def test_corrupt_database_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    (root / "runs.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"runs\.sqlite"):
        RunStore(root)


def test_foreign_sqlite_database_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    conn = sqlite3.connect(root / "runs.sqlite")
    conn.execute("CREATE TABLE runs (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"runs\.sqlite"):
        RunStore(root)


def test_unwritable_store_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(StoreError, match=str(root)):
            RunStore(root / "runs")
    finally:
        root.chmod(0o700)


def test_dead_or_reused_pid_is_marked_failed_on_open(store: RunStore) -> None:
    import socket

    with store.run("alive", config={}) as live:
        conn = sqlite3.connect(store.db_path)
        rows = [
            ("dead", 2**22 + 12345, None),  # no such pid
            ("reused", os.getpid(), "not-my-start-time"),  # our pid, another process's start
        ]
        for rid, pid, start in rows:
            conn.execute(
                "INSERT INTO runs (id, command, config, inputs, started_at, status, pid,"
                " proc_start, host, version) VALUES (?, 'x', '{}', '[]', '2026-01-01T00:00:00+00:00',"
                " 'running', ?, ?, ?, '0')",
                (rid, pid, start, socket.gethostname()),
            )
        conn.commit()
        conn.close()
        reopened = RunStore(store.path)
        assert reopened.get("dead").status == "failed"
        assert reopened.get("dead").error == "process died"
        assert reopened.get("reused").status == "failed"
        assert reopened.get(live.id).status == "running"
    assert store.get(live.id).status == "finished"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(alphabet="ab./\\-_ .x", min_size=0, max_size=12))
def test_accepted_artifact_names_stay_inside_the_run_folder(store: RunStore, name: str) -> None:
    with store.run("names", config={}) as run:
        try:
            path = run.write_text(name, "x")
        except StoreError as exc:
            assert "artifact name" in str(exc)
            return
        assert path.resolve().is_relative_to(run.dir.resolve())
        assert path.read_text() == "x"
        assert not path.name.startswith(".")


def test_docs_list_the_public_names() -> None:
    import re

    import fleetlab.store

    docs = Path(__file__).resolve().parents[2] / "docs" / "store.md"
    line = next(x for x in docs.read_text().splitlines() if x.startswith("Public names"))
    assert set(re.findall(r"`([A-Za-z_]+)`", line.split(":", 1)[1])) == set(fleetlab.store.__all__)
