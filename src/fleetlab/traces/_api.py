"""Reading, detecting, inspecting and converting trace files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import DataNotFoundError, FleetlabError, InputFormatError, UnknownFormatError
from fleetlab.traces._checks import READ_ERRORS
from fleetlab.traces._formats import Format, read_head
from fleetlab.traces._registry import FORMATS
from fleetlab.traces._schemas import TABLES, conform, for_storage, table_of

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
    """Every supported input format, in detection order (canonical Parquet is implied).

    Returns
    -------
    tuple of Format
        Name, canonical table, description, sniffer and scanner of each format.
    """
    return FORMATS


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    return p


def _parquet_table(path: Path) -> str | None:
    if not path.is_file():
        return None
    with path.open("rb") as f:
        if f.read(4) != b"PAR1" and path.suffix != ".parquet":
            return None
    try:
        table = table_of(pl.scan_parquet(path))
    except READ_ERRORS as exc:
        raise InputFormatError(path, f"not a readable Parquet file: {_first_line(exc)}") from exc
    if table is None:
        names = pl.scan_parquet(path).collect_schema().names()
        raise InputFormatError(
            path,
            "Parquet file is not a canonical fleetlab table",
            expected="the required columns of one of " + ", ".join(TABLES),
            found=names,
        )
    return table


def _parquet_format(table: str) -> Format:
    return Format(
        "parquet",
        table,
        f"canonical {table} table in Parquet",
        lambda *_: True,
        lambda q: conform(pl.scan_parquet(q), table, keep_extra=True),
    )


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
        return _parquet_format(table)
    head = read_head(p)
    for fmt in FORMATS:
        try:
            if fmt.sniff(p, head):
                return fmt
        except FleetlabError:
            raise
        except Exception:  # a sniffer that chokes on a foreign file simply says no
            continue
    if p.is_file() and not head.strip():
        raise InputFormatError(p, "file is empty", expected="a trace", found="0 bytes of data")
    listing = "\n".join(f"  {f.name:<22} {f.description}" for f in FORMATS)
    raise UnknownFormatError(
        f"{p}: not a format fleetlab knows. Supported formats:\n{listing}\n"
        "  parquet                canonical fleetlab table written by `fleetlab traces convert`"
    )


def format_named(name: str) -> Format:
    """The format called ``name`` (see :func:`formats`).

    Raises
    ------
    UnknownFormatError
        No format has that name; the message lists the names.
    """
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
        what detection needs. Use :func:`load` to collect with clear errors: a lazy
        frame cannot name the bad line of a malformed file, :func:`load` can.

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist.
    UnknownFormatError
        ``path`` is in no supported format (or ``format`` is not a format name).
    InputFormatError
        The file is recognised but cannot be opened as that format.
    """
    p = _existing(path)
    return _scan(p, _format_of(p, format))


def _format_of(path: Path, format: str | None) -> Format:
    if format is None or format == "parquet":
        return detect(path)
    return format_named(format)


def _scan(path: Path, fmt: Format) -> pl.LazyFrame:
    if path.is_file() and path.stat().st_size == 0:
        raise InputFormatError(
            path, "file is empty", expected=f"a {fmt.name} file", found="0 bytes"
        )
    try:
        return fmt.scan(path)
    except FleetlabError:
        raise
    except READ_ERRORS as exc:
        raise _explain(path, fmt, exc) from exc


def _explain(path: Path, fmt: Format, exc: BaseException | None) -> InputFormatError:
    """The most precise error for a file ``fmt`` failed to read (walks the file if it can)."""
    if fmt.diagnose is not None:
        try:
            found = fmt.diagnose(path)
        except FleetlabError as diag:
            found = diag if isinstance(diag, InputFormatError) else None
        except READ_ERRORS:
            found = None
        if found is not None:
            return found
    reason = _first_line(exc) if exc is not None else "unreadable"
    return InputFormatError(path, f"cannot read as {fmt.name}: {reason}")


def _check_nonnull(path: Path, fmt: Format, counts: dict[str, int]) -> None:
    missing = {c: n for c, n in counts.items() if n}
    if not missing:
        return
    diagnosed = _explain(path, fmt, None) if fmt.diagnose is not None else None
    if diagnosed is not None and diagnosed.row is not None:
        raise diagnosed
    column, n = next(iter(missing.items()))
    raise InputFormatError(
        path,
        f"{n} row(s) have no {column}",
        field=column,
        expected="a value in every row",
        found=f"{n} missing",
    )


def collect(
    frame: pl.LazyFrame, path: str | os.PathLike[str], *, format: str | None = None
) -> pl.DataFrame:
    """Collect ``frame`` read from ``path``, turning engine errors into InputFormatError.

    When the format of ``path`` is known (given or detected) a failure is explained with
    the first bad line of the file, and required values that came out empty (a cut
    last line, say) are reported instead of returned.

    Raises
    ------
    InputFormatError
        The file behind ``frame`` is malformed.
    """
    p = Path(path)
    try:
        fmt: Format | None = _format_of(p, format) if p.exists() else None
    except FleetlabError:
        fmt = None
    try:
        df = frame.collect()
    except FleetlabError:
        raise
    except READ_ERRORS as exc:
        if fmt is None:
            raise InputFormatError(path, _first_line(exc)) from exc
        raise _explain(p, fmt, exc) from exc
    if fmt is not None:
        _check_nonnull(p, fmt, {c: df[c].null_count() for c in fmt.nonnull if c in df.columns})
    return df


def load(path: str | os.PathLike[str], *, format: str | None = None) -> pl.DataFrame:
    """Read ``path`` into memory as a canonical table (see :func:`read`).

    Returns
    -------
    polars.DataFrame
        The canonical table (see ``TABLES``) of the file's format.

    Raises
    ------
    DataNotFoundError, UnknownFormatError
        As :func:`read`.
    InputFormatError
        The file is malformed; the message names the line, field, expected and found.
    """
    p = _existing(path)
    fmt = _format_of(p, format)
    return collect(_scan(p, fmt), p, format=fmt.name)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


_STATS = ("name", "dtype", "nulls", "min", "max", "mean", "median", "distinct", "mean_length")


def summarize(frame: pl.DataFrame, table: str) -> dict[str, Any]:
    """Rows, time span and a per-column summary of a canonical table.

    All statistics are computed in one parallel polars pass. ``time_span.duration_s`` is
    in seconds; for per-minute invocation counts it covers whole minutes.
    """
    out: dict[str, Any] = {"table": table, "rows": frame.height, "columns": []}
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        exprs.append(col.null_count().alias(f"{name}\0nulls"))
        if dtype.is_numeric():
            exprs += [
                col.min().alias(f"{name}\0min"),
                col.max().alias(f"{name}\0max"),
                col.mean().alias(f"{name}\0mean"),
                col.median().alias(f"{name}\0median"),
            ]
        elif dtype == pl.String:
            exprs.append(col.n_unique().alias(f"{name}\0distinct"))
        elif isinstance(dtype, pl.List):
            exprs.append(col.list.len().mean().alias(f"{name}\0mean_length"))
    stats = frame.select(exprs).row(0, named=True) if exprs else {}
    for name, dtype in frame.schema.items():
        # every column has the same keys (None where a statistic does not apply), so the
        # CLI's table shows them all
        info: dict[str, Any] = dict.fromkeys(_STATS)
        info.update(name=name, dtype=str(dtype))
        for key, value in stats.items():
            column, stat = key.split("\0")
            if column == name and (
                stat in ("nulls", "distinct", "mean_length") or info["nulls"] < frame.height
            ):
                info[stat] = value
        out["columns"].append(info)
    time = TIME_COLUMNS.get(table)
    if time and time[0] in frame.columns:
        col_name, scale = time
        lo, hi = stats.get(f"{col_name}\0min"), stats.get(f"{col_name}\0max")
        if lo is not None and hi is not None:
            out["time_span"] = {
                "column": col_name,
                "start": lo,
                "end": hi,
                "duration_s": float(hi - lo) * scale,
            }
    if table == "invocations" and stats.get("minute\0min") is not None:
        lo, hi = stats["minute\0min"], stats["minute\0max"]
        out["time_span"] = {
            "column": "minute",
            "start": lo,
            "end": hi,
            "duration_s": float(hi - lo + 1) * 60,
        }
    return out


def inspect(path: str | os.PathLike[str], *, format: str | None = None) -> dict[str, Any]:
    """Detect ``path``'s format and summarise it.

    Returns
    -------
    dict
        ``path``, ``format``, ``table``, ``rows``, ``time_span`` (column, start, end,
        ``duration_s`` in seconds) when the table has a time column, ``columns`` (name,
        dtype, nulls and min/max/mean/median or distinct counts) and, for formats that
        keep questionable rows as the source has them, ``quality`` (counts of such rows).

    Raises
    ------
    DataNotFoundError, UnknownFormatError, InputFormatError
        As :func:`load`.
    """
    p = _existing(path)
    fmt = _format_of(p, format)
    frame = collect(_scan(p, fmt), p, format=fmt.name)
    result = {"path": str(p), "format": fmt.name, **summarize(frame, fmt.table)}
    if fmt.quality is not None:
        result["quality"] = fmt.quality(frame)
    if fmt.notes is not None:
        result["quality"] = {**result.get("quality", {}), **fmt.notes(p)}
    return result


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert ``path`` to a canonical Parquet file at ``out``, streaming where it can.

    Refuses to replace an existing ``out`` unless ``overwrite``. Columns with few
    distinct values (``TableSchema.dictionary``: the spans table's service, operation,
    status, kind and peer_service) are stored dictionary-encoded (Arrow dictionary type:
    a Parquet scan reads them as Categorical codes; :func:`load` gives String, as for
    files written before). The file appears atomically: it is written beside ``out``, checked, and renamed when complete, so a
    malformed input never leaves a partial ``out`` behind.

    Returns
    -------
    dict
        ``path``, ``out``, ``format``, ``table`` and ``rows`` written.

    Raises
    ------
    FleetlabError
        ``out`` exists and ``overwrite`` is false.
    DataNotFoundError, UnknownFormatError, InputFormatError
        As :func:`load`.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise FleetlabError(
            f"{target}: already exists; pass overwrite=True (--force) to replace it"
        )
    p = _existing(path)
    fmt = _format_of(p, format)
    frame = for_storage(_scan(p, fmt), fmt.table)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            frame.sink_parquet(tmp)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            collect(frame, p, format=fmt.name).write_parquet(tmp)
        except READ_ERRORS as exc:
            raise _explain(p, fmt, exc) from exc
        written = pl.scan_parquet(tmp)
        nonnull = [c for c in fmt.nonnull if c in written.collect_schema().names()]
        stats = written.select(pl.len().alias("__rows"), *(pl.col(c).null_count() for c in nonnull))
        counts = stats.collect().row(0, named=True)
        _check_nonnull(p, fmt, {c: counts[c] for c in nonnull})
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(path),
        "out": str(target),
        "format": fmt.name,
        "table": fmt.table,
        "rows": counts["__rows"],
    }


def canonical(frame: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Conform an in-memory frame you built yourself to canonical ``table`` (see TABLES).

    Returns
    -------
    polars.LazyFrame
        The canonical columns in canonical order and dtypes (missing optional ones null).

    Raises
    ------
    UnknownFormatError
        ``table`` is not a canonical table.
    InputFormatError
        A required column of ``table`` is missing (the error names the frame's columns).
    """
    if table not in TABLES:
        raise UnknownFormatError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    try:
        return conform(frame, table)
    except ValueError as exc:
        raise InputFormatError(
            "<in-memory frame>",
            str(exc),
            expected=f"the {table} columns {list(TABLES[table].required)}",
            found=frame.collect_schema().names(),
        ) from exc
