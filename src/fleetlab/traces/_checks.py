"""Finding the first bad line of a file that failed to read.

Readers scan files with polars, which is fast but reports a bad value without its line.
When reading fails (or leaves a required column empty) the API calls the format's
``diagnose`` function, built here: it walks the raw text once, in Python, and returns
the first problem as an :class:`InputFormatError` with the line number (the header is
line 1), the field, what was expected and what was found. It only runs on the error
path, so it may be slow.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import polars as pl

from fleetlab.errors import InputFormatError

Kind = Literal["int", "number", "text", "datetime", "int_list", "id"]

#: errors a reader may hit on a foreign or broken file; the API turns them into
#: InputFormatError (PanicException is polars' Rust panic, a BaseException)
READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    zlib.error,
    csv.Error,
)

EXPECTED: dict[str, str] = {
    "int": "an integer",
    "number": "a number",
    "text": "a value",
    "id": "an identifier",
    "datetime": "a timestamp like 2023-11-16 18:17:03.98",
    "int_list": "a list of integers",
}

_INT = re.compile(r"[+-]?\d+")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( ?([+-]\d{2}:?\d{2}|Z|UTC))?"
)


@dataclass(frozen=True)
class Field:
    """One field a reader needs: its name in the header (or a label), kind and position."""

    name: str
    kind: Kind = "number"
    required: bool = True
    column: int | None = None


def value_ok(kind: Kind, value: str) -> bool:
    """Whether the text ``value`` parses as ``kind`` the way the polars readers parse it."""
    if kind == "int":
        return bool(_INT.fullmatch(value))
    if kind == "number":
        try:
            float(value)
        except ValueError:
            return False
        return True
    if kind == "datetime":
        return bool(_DATETIME.fullmatch(value))
    return True


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """Open ``path`` as UTF-8 text (strict), decompressing gzip by its magic bytes."""
    with path.open("rb") as f:
        magic = f.read(2)
    with gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb") as raw:
        yield io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")


def _problem(path: Path, line: int, field: Field, value: str) -> InputFormatError:
    if value == "":
        return InputFormatError(
            path,
            "missing value",
            row=line,
            field=field.name,
            expected=EXPECTED[field.kind],
            found="empty",
        )
    return InputFormatError(
        path, "bad value", row=line, field=field.name, expected=EXPECTED[field.kind], found=value
    )


def _rows(path: Path, handle: IO[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(handle)
    line = 0
    try:
        for row in reader:
            line = reader.line_num
            if row and any(cell.strip() for cell in row):
                yield line, row
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFormatError(
            path, f"file is truncated or corrupt after line {line}: {exc}", row=line + 1
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputFormatError(
            path,
            "not UTF-8 text",
            row=line + 1,
            expected="UTF-8 text",
            found=f"byte {exc.object[exc.start : exc.start + 1]!r}",
        ) from exc
    except csv.Error as exc:
        raise InputFormatError(path, f"malformed CSV: {exc}", row=line + 1) from exc


def diagnose_csv(
    path: Path,
    fields: Sequence[Field],
    *,
    header: bool,
    ncols: int | None = None,
    strip_names: bool = False,
    text: str | None = None,
) -> InputFormatError | None:
    """The first line of a CSV file that breaks ``fields``, or None if every line is fine.

    With ``header``, fields are found by name (``strip_names`` strips spaces around the
    header's names) and every line must have as many fields as the header; without,
    fields are found by ``Field.column`` and every line must have ``ncols`` fields.
    ``text`` checks that text instead of the file (``path`` then only names it).
    """
    try:
        with io.StringIO(text, newline="") if text is not None else open_text(path) as handle:
            rows = _rows(path, handle)
            index: dict[str, int] = {}
            width = ncols
            if header:
                first = next(rows, None)
                if first is None:
                    return InputFormatError(path, "file is empty", row=1, expected="a header line")
                names = [c.strip() if strip_names else c for c in first[1]]
                missing = [f.name for f in fields if f.name not in names]
                if missing:
                    return InputFormatError(
                        path,
                        f"missing column(s) {missing}",
                        row=1,
                        expected=f"columns {[f.name for f in fields]}",
                        found=names,
                    )
                index = {f.name: names.index(f.name) for f in fields}
                width = len(names)
            else:
                index = {
                    f.name: (f.column if f.column is not None else i) for i, f in enumerate(fields)
                }
            for line, row in rows:
                if width is not None and len(row) != width:
                    return InputFormatError(
                        path,
                        "wrong number of fields",
                        row=line,
                        expected=f"{width} fields",
                        found=f"{len(row)} fields",
                    )
                for f in fields:
                    value = row[index[f.name]].strip()
                    if value in ("", "NA") and not f.required:
                        continue
                    if value == "" or not value_ok(f.kind, value):
                        return _problem(path, line, f, value)
    except InputFormatError as exc:
        return exc
    return None


def diagnose_ndjson(path: Path, fields: Sequence[Field]) -> InputFormatError | None:
    """The first line of a JSON-lines file that is not an object with ``fields``, or None."""
    line = 0
    try:
        with open_text(path) as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    return InputFormatError(
                        path,
                        "not a JSON object",
                        row=line,
                        expected="one JSON object per line",
                        found=text.strip()[:60] or str(exc),
                    )
                if not isinstance(obj, dict):
                    return InputFormatError(
                        path,
                        "not a JSON object",
                        row=line,
                        expected="a JSON object",
                        found=type(obj).__name__,
                    )
                for f in fields:
                    value = obj.get(f.name)
                    if value is None:
                        if f.required:
                            return InputFormatError(
                                path,
                                "missing value",
                                row=line,
                                field=f.name,
                                expected=EXPECTED[f.kind],
                                found="nothing",
                            )
                        continue
                    if not json_value_ok(f.kind, value):
                        return InputFormatError(
                            path,
                            "bad value",
                            row=line,
                            field=f.name,
                            expected=EXPECTED[f.kind],
                            found=value,
                        )
    except (OSError, EOFError, zlib.error) as exc:
        return InputFormatError(
            path, f"file is truncated or corrupt after line {line}: {exc}", row=line + 1
        )
    except UnicodeDecodeError:
        return InputFormatError(
            path, "not UTF-8 text", row=line + 1, expected="UTF-8 text", found="invalid bytes"
        )
    return None


def json_value_ok(kind: Kind, value: object) -> bool:
    """Whether a decoded JSON ``value`` is of ``kind``."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "int_list":
        return isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    if kind in ("text", "id"):
        return isinstance(value, (str, int)) and not isinstance(value, bool)
    return True


def csv_diagnoser(
    fields: Sequence[Field], *, header: bool, ncols: int | None = None, strip_names: bool = False
) -> Callable[[Path], InputFormatError | None]:
    """A ``diagnose`` function for a CSV format (see :func:`diagnose_csv`)."""

    def diagnose(path: Path) -> InputFormatError | None:
        return diagnose_csv(path, fields, header=header, ncols=ncols, strip_names=strip_names)

    return diagnose


def header_names(head_line: str) -> list[str]:
    """The column names of a CSV header line (quotes and surrounding spaces removed)."""
    row = next(csv.reader([head_line]), [])
    return [c.strip() for c in row]


def check_last_line(path: Path, *, fields: int | None = None, header: bool = True) -> None:
    """Raise :class:`InputFormatError` if the last line of a CSV file is cut short.

    polars fills the missing fields of a short line with nulls, so a file cut in the
    middle of its last line would silently give a row with a wrong (cut) value or empty
    fields. This reads only the tail of a plain file (gzip streams carry their own
    length and checksum, so a cut ``.gz`` fails on decompression instead). ``fields``
    is the expected number of fields; with ``header`` it is taken from the first line.
    """
    if path.is_dir():
        return
    with path.open("rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return
        if header:
            f.seek(0)
            first = f.readline(1 << 20).decode("utf-8", errors="replace").lstrip("\ufeff")
            fields = len(next(csv.reader([first.rstrip("\r\n")]), []))
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - (1 << 16)))
        tail = f.read()
    if size > len(tail) and b"\n" not in tail.rstrip(b"\r\n"):
        return  # the last line is longer than the tail read: cannot judge it cheaply
    body = tail.rstrip()
    if not body or fields is None:
        return
    if header and size < (1 << 16) and b"\n" not in body:
        return  # the header is the only line
    last = body.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace").rstrip("\r")
    found = len(next(csv.reader([last]), []))
    if found < fields:
        with path.open("rb") as f:
            line_no = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        line_no += 0 if tail.endswith(b"\n") else 1
        raise InputFormatError(
            path,
            "last line is cut short (truncated file?)",
            row=line_no,
            expected=f"{fields} fields",
            found=f"{found} fields: {last[-40:]!r}",
        )
