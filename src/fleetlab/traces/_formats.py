"""Formats: how fleetlab recognises a file and turns it into a canonical table.

A :class:`Format` is a plain record of functions. The list of supported formats is a
tuple assembled in :mod:`fleetlab.traces._registry`; there is no decorator magic.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import InputFormatError

HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Format:
    """One supported input format.

    ``sniff(path, head)`` says whether a file (``head`` is its first bytes, decompressed)
    or a directory (``head`` is empty) is in this format; ``scan(path)`` returns a lazy
    frame already conformed to the canonical ``table``.

    The optional parts make bad input explainable without slowing the happy path:
    ``diagnose(path)`` walks the raw file when reading failed (or left a ``nonnull``
    column empty) and returns the first problem as an :class:`InputFormatError` naming
    the line, field, expected and found; ``nonnull`` lists the canonical columns that
    must have no missing values; ``quality(frame)`` counts rows that are kept as the
    source has them but deserve a warning (negative times, empty requests, ...).
    """

    name: str
    table: str
    description: str
    sniff: Callable[[Path, bytes], bool]
    scan: Callable[[Path], pl.LazyFrame]
    diagnose: Callable[[Path], InputFormatError | None] | None = None
    nonnull: tuple[str, ...] = ()
    quality: Callable[[pl.DataFrame], dict[str, Any]] | None = None
    #: counts that need the source file, not just the table (rows dropped as exact
    #: duplicates, two-sided records merged, ...); merged into ``inspect``'s quality
    notes: Callable[[Path], dict[str, Any]] | None = None


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a file, decompressed if it is gzip; empty for a directory."""
    if path.is_dir():
        return b""
    with path.open("rb") as raw:
        magic = raw.read(2)
    try:
        if magic == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with path.open("rb") as f:
            return f.read(n)
    except (OSError, EOFError) as exc:
        raise InputFormatError(path, f"cannot read file: {exc}") from exc


def head_lines(head: bytes, n: int = 5) -> list[str]:
    """The first ``n`` complete text lines of ``head`` (BOM and CR stripped)."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.split("\n")
    if len(head) >= HEAD_BYTES:
        lines = lines[:-1]  # the last line may be cut
    return [line.rstrip("\r") for line in lines[:n] if line.strip()]


def is_gzip(path: Path) -> bool:
    """True if ``path`` is a gzip file (by its magic bytes)."""
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"
