"""The run store: one SQLite row per run (WAL mode) and an artifact folder per run beside it."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from fleetlab._version import __version__
from fleetlab.errors import DataNotFoundError, FleetlabError, StoreError
from fleetlab.store._db import initialise, open_connection, retrying, write
from fleetlab.store._fingerprint import fingerprint
from fleetlab.store._home import default_store_path
from fleetlab.store._records import InputRef, RunRecord, RunStatus

DB_NAME = "runs.sqlite"
ARTIFACTS = "artifacts"
_TMP_MARK = ".tmp-"


def _now() -> datetime:
    return datetime.now(UTC)


def new_run_id(when: datetime | None = None) -> str:
    """A sortable, unique run id: ``YYYYMMDD-HHMMSS-mmm-`` (UTC) plus 6 random hex digits."""
    t = when or _now()
    return f"{t:%Y%m%d-%H%M%S}-{t.microsecond // 1000:03d}-{secrets.token_hex(3)}"


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux ``/proc``), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if proc_start is not None:
        now = _proc_start(pid)
        if now is not None and now != proc_start:
            return False  # the pid was reused by another process
    return True


def jsonable(value: Any) -> Any:
    """Turn ``value`` into plain JSON values (paths -> str, numpy -> Python, NaN/inf -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return jsonable(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):
        return jsonable(value.tolist())
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), allow_nan=False, sort_keys=False)


def _artifact_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(str(name).replace("\\", "/"))
    bad = (
        not rel.parts
        or rel.is_absolute()
        or any(p in ("..", ".", "") for p in rel.parts)
        or any(p.startswith(".") for p in rel.parts)
    )
    if bad:
        raise StoreError(
            f"artifact name {name!r}: expected a relative file name without '..' or a leading dot"
        )
    return rel


def _atomic_write(target: Path, write_to: Any) -> Path:
    """Call ``write_to(tmp_path)`` for a temp file beside ``target``, fsync it, rename it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{_TMP_MARK}{secrets.token_hex(4)}-{target.name}")
    try:
        write_to(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()
    return target


class Run:
    """The handle of one run in progress, given by :meth:`RunStore.run`.

    Attributes
    ----------
    id : str
        The run's id (sortable by start time, unique across processes).
    dir : pathlib.Path
        The run's artifact folder.
    """

    def __init__(self, store: RunStore, run_id: str, run_dir: Path) -> None:
        self._store = store
        self.id = run_id
        self.dir = run_dir

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    @property
    def record(self) -> RunRecord:
        """The run as stored right now."""
        return self._store.get(self.id)

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Merge ``metrics`` (name -> JSON-compatible value) into the run's metrics.

        Later values replace earlier ones of the same name; numpy scalars become
        Python numbers and non-finite floats are stored as null.
        """
        if not isinstance(metrics, dict):
            raise StoreError(
                f"run {self.id}: metrics must be a dict, found {type(metrics).__name__}"
            )
        update = jsonable(metrics)

        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT metrics FROM runs WHERE id = ?", (self.id,)).fetchone()
            if row is None:
                raise DataNotFoundError(f"run {self.id} is no longer in the store")
            merged = {**json.loads(row["metrics"]), **update}
            conn.execute("UPDATE runs SET metrics = ? WHERE id = ?", (_dumps(merged), self.id))

        self._store._write(op)

    def _register(self, name: str, rel: PurePosixPath, target: Path) -> Path:
        size = target.stat().st_size

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, name, relpath, size) VALUES (?, ?, ?, ?)",
                (self.id, name, rel.as_posix(), size),
            )

        self._store._write(op)
        return target

    def _target(self, name: str) -> tuple[PurePosixPath, Path]:
        rel = _artifact_relpath(name)
        return rel, self.dir.joinpath(*rel.parts)

    def add_artifact(self, name: str, src: str | os.PathLike[str]) -> Path:
        """Copy the file ``src`` into the run's folder as ``name``, atomically.

        Returns
        -------
        pathlib.Path
            The artifact's path in the store.

        Raises
        ------
        DataNotFoundError
            ``src`` is not a file.
        StoreError
            ``name`` is not a plain relative name, or the copy failed.
        """
        source = Path(src)
        if not source.is_file():
            raise DataNotFoundError(f"{source}: no such file to add as artifact {name!r}")
        rel, target = self._target(name)

        def copy(tmp: Path) -> None:
            shutil.copyfile(source, tmp)

        try:
            _atomic_write(target, copy)
        except OSError as exc:
            raise StoreError(f"{target}: cannot store artifact ({exc})") from exc
        return self._register(name, rel, target)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` (UTF-8) as artifact ``name``, atomically; returns its path."""
        rel, target = self._target(name)
        try:
            _atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        except OSError as exc:
            raise StoreError(f"{target}: cannot store artifact ({exc})") from exc
        return self._register(name, rel, target)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON artifact ``name`` (paths, numpy values converted)."""
        return self.write_text(name, json.dumps(jsonable(obj), indent=2) + "\n")

    def write_parquet(self, name: str, frame: Any) -> Path:
        """Write a polars DataFrame (or LazyFrame, collected) as Parquet artifact ``name``."""
        import polars as pl

        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        if not isinstance(df, pl.DataFrame):
            raise StoreError(
                f"artifact {name!r}: expected a polars DataFrame, found {type(frame).__name__}"
            )
        rel, target = self._target(name)
        try:
            _atomic_write(target, lambda tmp: df.write_parquet(tmp))
        except OSError as exc:
            raise StoreError(f"{target}: cannot store artifact ({exc})") from exc
        return self._register(name, rel, target)


class RunStore:
    """The run store at ``path`` (default ``$FLEETLAB_HOME/runs``): runs.sqlite + artifacts/.

    Opening a store creates it if needed and marks as failed every run of this host
    still 'running' whose process is gone (killed, crashed), removing its
    half-written temp files. Many processes may use one store at once.

    Parameters
    ----------
    path
        The store folder; ``None`` means :func:`default_store_path`.

    Raises
    ------
    StoreError
        The folder cannot be created or written, or holds a file that is not a run
        store database; the message names the path.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        base = Path(path).expanduser() if path is not None else default_store_path()
        self.path = base.absolute()
        self.db_path = self.path / DB_NAME
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: run store path exists and is not a folder")
        try:
            (self.path / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the run store folder ({exc})") from exc
        if not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path}: run store folder is not writable")
        if self.db_path.exists() and not self.db_path.is_file():
            raise StoreError(
                f"{self.db_path}: expected the run store database file, found a folder"
            )
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        with self._lock:
            initialise(self._connection(), self.db_path)
        self.recover()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- plumbing -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own)."""
        if self._conn is None or self._conn_pid != os.getpid():
            self._conn = open_connection(self.db_path)
            self._conn_pid = os.getpid()
        return self._conn

    def close(self) -> None:
        """Close the database connection (reopened automatically if the store is used again)."""
        with self._lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, op: Any) -> Any:
        def tx() -> Any:
            with self._lock:
                conn = self._connection()
                with write(conn):
                    return op(conn)

        return retrying(self.db_path, tx)

    def _read(self, op: Any) -> Any:
        def q() -> Any:
            with self._lock:
                return op(self._connection())

        return retrying(self.db_path, q)

    def _run_dir(self, run_id: str) -> Path:
        return self.path / ARTIFACTS / run_id

    # -- recovery -----------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Mark failed the runs of this host whose process died; returns their ids."""
        host = socket.gethostname()
        rows = self._read(
            lambda c: c.execute(
                "SELECT id, pid, proc_start FROM runs WHERE status = 'running' AND host = ?",
                (host,),
            ).fetchall()
        )
        dead = [r["id"] for r in rows if not _alive(r["pid"], r["proc_start"])]
        for run_id in dead:
            self._write(
                lambda c, rid=run_id: c.execute(
                    "UPDATE runs SET status = 'failed', error = 'process died', ended_at = ? "
                    "WHERE id = ? AND status = 'running'",
                    (_now().isoformat(), rid),
                )
            )
            run_dir = self._run_dir(run_id)
            if run_dir.is_dir():
                for leftover in run_dir.rglob(f"{_TMP_MARK}*"):
                    with suppress(OSError):
                        leftover.unlink()
        return dead

    # -- runs -----------------------------------------------------------------------------
    def _start(self, command: str, config: dict[str, Any], inputs: Sequence[Any]) -> Run:
        refs = [fingerprint(p) for p in inputs]
        try:
            config_text = _dumps(config if config is not None else {})
        except (TypeError, ValueError) as exc:
            raise StoreError(f"run config of {command!r} is not JSON-compatible ({exc})") from exc
        inputs_text = json.dumps([r.model_dump(mode="json") for r in refs])
        pid = os.getpid()
        proc_start = _proc_start(pid)
        host = socket.gethostname()
        for _ in range(20):
            started = _now()
            run_id = new_run_id(started)

            def op(
                conn: sqlite3.Connection, run_id: str = run_id, started: datetime = started
            ) -> bool:
                try:
                    conn.execute(
                        "INSERT INTO runs (id, command, config, inputs, metrics, started_at, status,"
                        " pid, proc_start, host, version) VALUES (?, ?, ?, ?, '{}', ?, 'running',"
                        " ?, ?, ?, ?)",
                        (
                            run_id,
                            command,
                            config_text,
                            inputs_text,
                            started.isoformat(),
                            pid,
                            proc_start,
                            host,
                            __version__,
                        ),
                    )
                except sqlite3.IntegrityError:
                    return False
                return True

            if self._write(op):
                run_dir = self._run_dir(run_id)
                try:
                    run_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    self._finish(run_id, "failed", f"cannot create artifact folder: {exc}")
                    raise StoreError(f"{run_dir}: cannot create the run's folder ({exc})") from exc
                return Run(self, run_id, run_dir)
        raise StoreError(f"{self.db_path}: could not allocate a unique run id")

    def _finish(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET status = ?, error = ?, ended_at = ? WHERE id = ?",
                (status, error, _now().isoformat(), run_id),
            )
        )

    @contextmanager
    def run(
        self, command: str, *, config: dict[str, Any], inputs: Sequence[str | os.PathLike[str]] = ()
    ) -> Iterator[Run]:
        """Record a run of ``command`` while the ``with`` block executes.

        Parameters
        ----------
        command
            What runs, e.g. ``"placement simulate"``.
        config
            The run's options (JSON-compatible; paths and numpy values are converted).
        inputs
            Input paths to fingerprint (sha256 up to 64 MiB, else size + mtime).

        Yields
        ------
        Run
            The handle to log metrics and add artifacts with.

        Notes
        -----
        Leaving the block normally marks the run 'finished'; an exception marks it
        'failed' with the error text and is re-raised.
        """
        handle = self._start(command, config, inputs)
        try:
            yield handle
        except BaseException as exc:
            ok = isinstance(exc, SystemExit) and exc.code in (0, None)
            with suppress(FleetlabError):
                self._finish(
                    handle.id, "finished" if ok else "failed", None if ok else _describe(exc)
                )
            raise
        self._finish(handle.id, "finished")

    # -- queries --------------------------------------------------------------------------
    def _records(self, conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[RunRecord]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        arts: dict[str, dict[str, Path]] = {i: {} for i in ids}
        marks = ",".join("?" * len(ids))
        for a in conn.execute(
            f"SELECT run_id, name, relpath FROM artifacts WHERE run_id IN ({marks}) ORDER BY name",
            ids,
        ):
            arts[a["run_id"]][a["name"]] = self._run_dir(a["run_id"]) / a["relpath"]
        return [
            RunRecord(
                id=r["id"],
                command=r["command"],
                config=json.loads(r["config"]),
                inputs=[InputRef(**i) for i in json.loads(r["inputs"])],
                metrics=json.loads(r["metrics"]),
                artifacts=arts[r["id"]],
                started_at=datetime.fromisoformat(r["started_at"]),
                ended_at=datetime.fromisoformat(r["ended_at"]) if r["ended_at"] else None,
                status=r["status"],
                error=r["error"],
                pid=r["pid"],
                host=r["host"],
                version=r["version"],
                dir=self._run_dir(r["id"]),
            )
            for r in rows
        ]

    def list(
        self,
        *,
        limit: int | None = 50,
        command: str | None = None,
        status: RunStatus | None = None,
    ) -> list[RunRecord]:
        """The most recent runs first.

        Parameters
        ----------
        limit
            At most this many runs (``None``: all).
        command
            Only runs of this command (exact, or a prefix ending in a space-separated
            word, e.g. ``"placement"`` matches ``"placement simulate"``).
        status
            Only runs with this status.
        """
        where: list[str] = []
        args: list[Any] = []
        if command:
            where.append("(command = ? OR command LIKE ? ESCAPE '\\')")
            args += [command, _like_escape(command) + " %"]
        if status:
            where.append("status = ?")
            args.append(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return self._read(lambda c: self._records(c, c.execute(sql, args).fetchall()))

    def get(self, run_id: str) -> RunRecord:
        """The run with id ``run_id``, a unique prefix of one, or ``"latest"``.

        Raises
        ------
        DataNotFoundError
            No run has that id, or the prefix matches several runs (they are listed).
        """
        key = str(run_id).strip()

        def op(conn: sqlite3.Connection) -> list[RunRecord]:
            rows: list[sqlite3.Row]
            if key == "latest":
                sql = "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
                rows = conn.execute(sql).fetchall()
            else:
                rows = conn.execute("SELECT * FROM runs WHERE id = ?", (key,)).fetchall()
                if not rows and key:
                    rows = conn.execute(
                        "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 6",
                        (_like_escape(key) + "%",),
                    ).fetchall()
            return self._records(conn, rows)

        found = self._read(op)
        if not found:
            raise DataNotFoundError(
                f"run {key!r} not found in {self.path} (`fleetlab runs list` shows the runs)"
            )
        if len(found) > 1:
            shown = ", ".join(r.id for r in found[:5])
            raise DataNotFoundError(f"run prefix {key!r} is ambiguous: matches {shown}, ...")
        return found[0]

    def remove(self, run_id: str, *, force: bool = False) -> RunRecord:
        """Delete a run (row and artifact folder); returns the record that was removed.

        Raises
        ------
        DataNotFoundError
            No such run.
        StoreError
            The run is still running in a live process (pass ``force=True`` to remove anyway).
        """
        rec = self.get(run_id)
        if rec.status == "running" and not force:
            proc = self._read(
                lambda c: c.execute(
                    "SELECT proc_start FROM runs WHERE id = ?", (rec.id,)
                ).fetchone()
            )
            if rec.host != socket.gethostname() or _alive(
                rec.pid, proc["proc_start"] if proc else None
            ):
                raise StoreError(
                    f"run {rec.id} is still running (pid {rec.pid} on {rec.host}); use force to remove"
                )
        self._write(lambda c: c.execute("DELETE FROM runs WHERE id = ?", (rec.id,)))
        shutil.rmtree(self._run_dir(rec.id), ignore_errors=True)
        return rec


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return f"exited with code {exc.code}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
