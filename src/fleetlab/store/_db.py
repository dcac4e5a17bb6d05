"""The SQLite side of the run store: schema, connections, and retries on a busy database.

One short-lived connection per operation keeps the store safe across threads and
forked processes; every write is one ``BEGIN IMMEDIATE`` transaction, retried with
jittered exponential backoff while another process holds the write lock.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from fleetlab.errors import StoreError

T = TypeVar("T")

#: how long one statement waits inside SQLite for a lock (ms), then how long we keep retrying (s)
BUSY_TIMEOUT_MS = 5_000
RETRY_FOR_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    command     TEXT NOT NULL,
    config      TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    error       TEXT,
    pid         INTEGER NOT NULL,
    proc_start  TEXT,
    host        TEXT NOT NULL,
    version     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    relpath TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def retrying(db_path: Path, op: Callable[[], T]) -> T:
    """Run ``op``, retrying with backoff while SQLite reports the database busy/locked.

    Raises
    ------
    StoreError
        The database stayed locked for ``RETRY_FOR_S`` seconds, or is not a database.
    """
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.005
    while True:
        try:
            return op()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise StoreError(f"{db_path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{db_path}: still locked after {RETRY_FOR_S:.0f} s of retries ({exc})"
                ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db_path}: not a usable run store database ({exc})") from exc


def open_connection(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL-friendly settings.

    The caller keeps it open for the life of its store object: closing the last
    connection checkpoints the WAL, which would cost an fsync per operation.
    """
    try:
        conn = sqlite3.connect(
            db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot open the run store database ({exc})") from exc
    return conn


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def initialise(conn: sqlite3.Connection, db_path: Path) -> None:
    """Switch the database to WAL mode and create the schema if it is missing.

    Raises
    ------
    StoreError
        The file is not a database, or a database that is not a run store.
    """

    def tables() -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def op() -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{db_path}: cannot switch to WAL mode (got {mode!r})")
        if not {"runs", "artifacts"} <= tables():
            conn.executescript(SCHEMA)
        found = tables()
        if not {"runs", "artifacts"} <= found:
            raise StoreError(f"{db_path}: not a fleetlab run store (tables: {sorted(found)})")
        conn.execute("SELECT id, command, status, pid, proc_start FROM runs LIMIT 0")

    retrying(db_path, op)
