"""The records the run store hands out: a run and the fingerprint of one of its inputs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RunStatus = Literal["running", "finished", "failed"]


class InputRef(BaseModel):
    """The fingerprint of one input of a run, taken when the run starts.

    ``sha256`` is the hash of the file's bytes for files up to 64 MiB and ``None``
    for larger files, directories and things that are not local paths (URLs, names);
    ``fingerprint`` always identifies the content: ``sha256:<hex>`` when hashed, else
    ``stat:<size>:<mtime_ns>`` (for a directory: over all files below it).
    """

    model_config = ConfigDict(frozen=True)

    path: str
    kind: Literal["file", "dir", "missing"]
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    fingerprint: str | None = None


class RunRecord(BaseModel):
    """One recorded run: what ran, on what, what it measured and wrote, and how it ended.

    Attributes
    ----------
    id
        Sortable unique id, ``YYYYMMDD-HHMMSS-mmm-xxxxxx`` (UTC start time + random).
    command
        The command that ran, e.g. ``"tour"`` or ``"placement simulate"``.
    config
        The run's options as JSON-compatible values.
    inputs
        Fingerprints of the input files (:class:`InputRef`).
    metrics
        Every metric logged with :meth:`Run.log_metrics`, merged.
    artifacts
        Artifact name -> absolute path of the file in the run's folder.
    started_at, ended_at
        UTC start and end times (``ended_at`` is ``None`` while running).
    status
        ``"running"``, ``"finished"`` or ``"failed"``.
    error
        The error text of a failed run (``"process died"`` if it was killed).
    pid, host
        Process id and host name of the process that ran it.
    version
        The fleetlab version that ran it.
    dir
        The run's artifact folder.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    command: str
    config: dict[str, Any]
    inputs: list[InputRef]
    metrics: dict[str, Any]
    artifacts: dict[str, Path]
    started_at: datetime
    ended_at: datetime | None
    status: RunStatus
    error: str | None
    pid: int
    host: str
    version: str
    dir: Path

    @property
    def duration_s(self) -> float | None:
        """Wall time of the run in seconds (``None`` while it runs)."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()
