"""Fingerprints of a run's inputs: hash small files, stat large ones and folders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fleetlab.store._records import InputRef

#: files up to this size are hashed; larger ones get a size + mtime fingerprint
HASH_LIMIT = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(item: str | os.PathLike[str]) -> InputRef:
    """Fingerprint one input (a file, a folder, or a name that is not a local path).

    Parameters
    ----------
    item
        A path; anything that does not exist locally (a URL, a dataset name) is
        recorded as ``kind="missing"`` with its text.

    Returns
    -------
    InputRef
        Size in bytes, mtime in seconds since the epoch, sha256 for files up to
        64 MiB, and a fingerprint string that changes when the content changes.
    """
    text = os.fspath(item)
    path = Path(text).expanduser()
    try:
        st = path.stat()
    except (OSError, ValueError):
        return InputRef(path=text, kind="missing")
    resolved = str(path.resolve())
    if path.is_dir():
        total, newest, count = 0, st.st_mtime_ns, 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    fst = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                total += fst.st_size
                newest = max(newest, fst.st_mtime_ns)
                count += 1
        return InputRef(
            path=resolved,
            kind="dir",
            size=total,
            mtime=newest / 1e9,
            fingerprint=f"stat:{count}:{total}:{newest}",
        )
    sha = None
    if st.st_size <= HASH_LIMIT:
        try:
            sha = sha256_file(path)
        except OSError:
            sha = None
    fp = f"sha256:{sha}" if sha else f"stat:{st.st_size}:{st.st_mtime_ns}"
    return InputRef(
        path=resolved,
        kind="file",
        size=st.st_size,
        mtime=st.st_mtime_ns / 1e9,
        sha256=sha,
        fingerprint=fp,
    )
