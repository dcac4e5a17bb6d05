"""Reading, detecting, inspecting and converting trace files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import DataNotFoundError, FleetlabError, InputFormatError, UnknownFormatError
from fleetlab.traces._formats import Format, read_head
from fleetlab.traces._registry import FORMATS
from fleetlab.traces._schemas import TABLES, conform, table_of

TIME_COLUMNS = {
    "requests": ("arrival_s", 1.0),
    "invocations": ("ts_s", 1.0),
    "vms": ("created_s", 1.0),
    "usage": ("ts_s", 1.0),
    "spans": ("start_us", 1e-6),
    "flows": ("ts_us", 1e-6),
    "client_profiles": ("window_start_s", 1.0),
}


def formats() -> tuple[Format, ...]:
    """Every supported input format, in detection order (canonical Parquet is implied)."""
    return FORMATS


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    return p


def _parquet_table(path: Path) -> str | None:
    if path.is_file() and path.suffix == ".parquet":
        return table_of(pl.scan_parquet(path))
    return None


def detect(path: str | os.PathLike[str]) -> Format:
    """The format of ``path``.

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist.
    UnknownFormatError
        No format recognises it; the message lists the supported formats.
    """
    p = _existing(path)
    table = _parquet_table(p)
    if table is not None:
        return Format("parquet", table, f"canonical {table} table in Parquet", lambda *_: True,
                      lambda q: pl.scan_parquet(q))
    head = read_head(p)
    for fmt in FORMATS:
        try:
            if fmt.sniff(p, head):
                return fmt
        except FleetlabError:
            raise
        except Exception:  # a sniffer that chokes on a foreign file simply says no
            continue
    listing = "\n".join(f"  {f.name:<22} {f.description}" for f in FORMATS)
    raise UnknownFormatError(
        f"{p}: not a format fleetlab knows. Supported formats:\n{listing}\n"
        "  parquet                canonical fleetlab table written by `fleetlab traces convert`"
    )


def format_named(name: str) -> Format:
    """The format called ``name``; raises :class:`UnknownFormatError` listing the names."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    names = ", ".join(f.name for f in FORMATS)
    raise UnknownFormatError(f"unknown format {name!r}; known formats: {names}")


def read(path: str | os.PathLike[str], *, format: str | None = None) -> pl.LazyFrame:
    """Open a trace file (or dataset directory) as a lazy canonical table.

    Parameters
    ----------
    path
        A file in any supported format (gzip is fine) or a canonical Parquet file.
    format
        Skip detection and use this format name (see :func:`formats`).

    Returns
    -------
    polars.LazyFrame
        Conformed to the canonical table of the format; nothing is read yet beyond
        what detection needs. Use :func:`load` to collect with clear errors.
    """
    p = _existing(path)
    fmt = format_named(format) if format else detect(p)
    try:
        return fmt.scan(p)
    except FleetlabError:
        raise
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        raise InputFormatError(p, f"cannot read as {fmt.name}: {_first_line(exc)}") from exc


def collect(frame: pl.LazyFrame, path: str | os.PathLike[str]) -> pl.DataFrame:
    """Collect ``frame`` read from ``path``, turning engine errors into InputFormatError."""
    try:
        return frame.collect()
    except FleetlabError:
        raise
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        raise InputFormatError(path, _first_line(exc)) from exc


def load(path: str | os.PathLike[str], *, format: str | None = None) -> pl.DataFrame:
    """Read ``path`` into memory as a canonical table (see :func:`read`)."""
    return collect(read(path, format=format), path)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def summarize(frame: pl.DataFrame, table: str) -> dict[str, Any]:
    """Rows, time span and a per-column summary of a canonical table."""
    out: dict[str, Any] = {"table": table, "rows": frame.height, "columns": []}
    time = TIME_COLUMNS.get(table)
    if time and time[0] in frame.columns and frame.height:
        col, scale = time
        lo, hi = frame[col].min(), frame[col].max()
        if lo is not None and hi is not None:
            out["time_span"] = {"column": col, "start": lo, "end": hi,
                                "duration_s": float(hi - lo) * scale}
    if table == "invocations" and "minute" in frame.columns and frame["minute"].null_count() < frame.height:
        out["time_span"] = {"column": "minute", "start": frame["minute"].min(),
                            "end": frame["minute"].max(),
                            "duration_s": float(frame["minute"].max() - frame["minute"].min() + 1) * 60}
    for name, dtype in frame.schema.items():
        s = frame[name]
        info: dict[str, Any] = {"name": name, "dtype": str(dtype), "nulls": s.null_count()}
        if dtype.is_numeric() and s.null_count() < len(s):
            info.update(min=s.min(), max=s.max(), mean=s.mean(), median=s.median())
        elif dtype == pl.String:
            info["distinct"] = s.n_unique()
        elif isinstance(dtype, pl.List):
            info["mean_length"] = s.list.len().mean()
        out["columns"].append(info)
    return out


def inspect(path: str | os.PathLike[str], *, format: str | None = None) -> dict[str, Any]:
    """Detect ``path``'s format and summarise it: format, table, rows, time span, columns."""
    p = _existing(path)
    fmt = format_named(format) if format else detect(p)
    frame = load(p, format=fmt.name if fmt.name != "parquet" else None)
    return {"path": str(p), "format": fmt.name, **summarize(frame, fmt.table)}


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert ``path`` to a canonical Parquet file at ``out``, streaming where it can.

    Refuses to replace an existing ``out`` unless ``overwrite``. The file appears
    atomically: it is written beside ``out`` and renamed when complete.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise FleetlabError(f"{target}: already exists; pass overwrite=True (--force) to replace it")
    frame = read(path, format=format)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            frame.sink_parquet(tmp)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            collect(frame, path).write_parquet(tmp)
        os.replace(tmp, target)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise InputFormatError(path, _first_line(exc)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    rows = pl.scan_parquet(target).select(pl.len()).collect().item()
    return {"path": str(path), "out": str(target), "table": detect(target).table, "rows": rows}


def canonical(frame: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Conform an in-memory frame you built yourself to canonical ``table`` (see TABLES)."""
    if table not in TABLES:
        raise UnknownFormatError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    return conform(frame, table)
