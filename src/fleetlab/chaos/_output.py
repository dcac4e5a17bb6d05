"""Writing results to files: journals, matrices and reports, never over a user's file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import ConfigError


def _target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    p = Path(path)
    if p.exists() and not overwrite:
        raise ConfigError(f"{p}: exists; pass --force (overwrite=True) to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_json(doc: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``doc`` as JSON (NaN as null) atomically; refuses to replace a file unless told.

    Raises
    ------
    ConfigError
        ``path`` exists and ``overwrite`` is false.
    """
    p = _target(path, overwrite)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(doc), indent=2, default=str), encoding="utf-8")
    os.replace(tmp, p)
    return p


def write_table(
    frame: pl.DataFrame, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a table as Parquet (``.parquet``) or JSON rows (any other suffix).

    Raises
    ------
    ConfigError
        ``path`` exists and ``overwrite`` is false.
    """
    p = _target(path, overwrite)
    if p.suffix.lower() == ".parquet":
        frame.write_parquet(p)
        return p
    return write_json(frame.to_dicts(), p, overwrite=True)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def parse_attributes(pairs: list[str]) -> dict[str, Any]:
    """``["latency=200", "path=/api"]`` to ``{"latency": 200, "path": "/api"}`` (numbers parsed).

    Raises
    ------
    ConfigError
        An item is not ``key=value``.
    """
    out: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"attribute: expected key=value, found {item!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out
