"""Shared machinery of the span readers: column builder, id normalisation, JSON input.

Every span reader turns its records into the columns of the canonical ``spans`` table
(see :mod:`fleetlab.traces._schemas`). Record-level checks raise :class:`Bad` (cheap,
no location); the reader's loop adds the location (file, line, JSON path) and re-raises
it as :class:`fleetlab.errors.InputFormatError`, so the fast path builds no strings.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._schemas import TABLES, conform

SPAN_KINDS = ("server", "client", "producer", "consumer", "internal")
STATUSES = ("ok", "error", "unset")
_HEX = frozenset("0123456789abcdef")
#: file names that a directory reader never treats as data
_NOT_DATA = re.compile(r"(?i)^(readme|sources|license|licence|notice|changelog)(\.|$)")


class Bad(Exception):
    """A record-level format problem; the reader adds where it happened."""

    def __init__(self, field: str, expected: str, found: object, problem: str = "") -> None:
        super().__init__(field)
        self.field = field
        self.expected = expected
        self.found = found
        self.problem = problem or f"bad value of {field!r}"


def located(path: Path, bad: Bad, *, row: int | None, prefix: str) -> InputFormatError:
    """Turn a :class:`Bad` into an InputFormatError naming file, line and JSON path."""
    where = ".".join(part for part in (prefix, bad.field) if part) or "$"
    return InputFormatError(
        path, bad.problem, row=row, field=where, expected=bad.expected, found=bad.found
    )


# --------------------------------------------------------------------------- ids


def hex_span_id(value: object, name: str) -> str:
    """A span id as 16 lower-case hex digits (shorter ids are left-padded with zeros).

    Accepts hex strings of 1-16 digits in any case (Jaeger's Node.js client strips
    leading zeros; some exporters upper-case). Anything else raises :class:`Bad`.
    """
    if not isinstance(value, str):
        raise Bad(name, "a hex string of up to 16 digits", value, f"{name} is not a string")
    text = value.lower()
    if not text or len(text) > 16 or not _HEX.issuperset(text):
        raise Bad(name, "a hex string of up to 16 digits", value, f"{name} is not a hex span id")
    return text.rjust(16, "0")


def hex_trace_id(value: object, name: str) -> str:
    """A trace id in canonical form: lower-case hex, 16 digits, or 32 for 128-bit ids.

    The rule is Jaeger's ``TraceID.String()``: an id of up to 16 digits is left-padded
    to 16; a longer one to 32, and a 128-bit id whose high 64 bits are zero is written
    as its low 16 digits. The same trace therefore gets the same id whether it was read
    from OTLP, Jaeger UI/API, Jaeger model (base64) or Zipkin JSON.
    """
    if not isinstance(value, str):
        raise Bad(name, "a hex string of up to 32 digits", value, f"{name} is not a string")
    text = value.lower()
    if not text or len(text) > 32 or not _HEX.issuperset(text):
        raise Bad(name, "a hex string of up to 32 digits", value, f"{name} is not a hex trace id")
    if len(text) <= 16:
        return text.rjust(16, "0")
    text = text.rjust(32, "0")
    return text[16:] if text.startswith("0000000000000000") else text


class Ids:
    """Per-read memo of canonical ids: ids repeat (own id, children's parent refs)."""

    def __init__(self) -> None:
        self._traces: dict[object, str] = {}
        self._spans: dict[object, str] = {}

    def trace(self, value: object, name: str) -> str:
        """:func:`hex_trace_id`, memoised."""
        try:
            return self._traces[value]
        except (KeyError, TypeError):
            canon = hex_trace_id(value, name)
            self._traces[value] = canon
            return canon

    def span(self, value: object, name: str) -> str:
        """:func:`hex_span_id`, memoised."""
        try:
            return self._spans[value]
        except (KeyError, TypeError):
            canon = hex_span_id(value, name)
            self._spans[value] = canon
            return canon


def b64_id(value: object, name: str, *, trace: bool) -> str:
    """A base64 id (protobuf-JSON bytes, as in Jaeger's model JSON) in canonical hex form."""
    if not isinstance(value, str):
        raise Bad(name, "a base64 string", value, f"{name} is not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Bad(name, "a base64-encoded id", value, f"{name} is not base64") from None
    sizes = (8, 16) if trace else (8,)
    if len(raw) not in sizes:
        raise Bad(
            name,
            f"{' or '.join(map(str, sizes))} bytes",
            f"{len(raw)} bytes",
            f"{name} has the wrong length",
        )
    return hex_trace_id(raw.hex(), name) if trace else raw.hex()


def exact_int(value: object, name: str) -> int:
    """An integer given as a JSON number or a decimal string (int64 as string, > 2**53 safe)."""
    if isinstance(value, bool):
        raise Bad(name, "an integer", value, f"{name} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text and (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
            return int(text)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise Bad(name, "an integer", value, f"{name} is not an integer")


def opt_str(value: object, name: str) -> str | None:
    """A string or None (empty strings become None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Bad(name, "a string", value, f"{name} is not a string")
    return value or None


def as_dict(value: object, name: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else :class:`Bad`."""
    if not isinstance(value, dict):
        raise Bad(name, "a JSON object", _kind(value), f"{name} is not an object")
    return value


def as_list(value: object, name: str) -> list[Any]:
    """``value`` when it is a JSON array (None counts as empty), else :class:`Bad`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Bad(name, "a JSON array", _kind(value), f"{name} is not an array")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if type(value) in names:
        return names[type(value)]
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:60]


# ----------------------------------------------------------------------- columns


@dataclass
class SpanColumns:
    """Column lists of the canonical spans table, appended one span at a time."""

    trace_id: list[str | None] = field(default_factory=list)
    span_id: list[str | None] = field(default_factory=list)
    parent_id: list[str | None] = field(default_factory=list)
    service: list[str | None] = field(default_factory=list)
    operation: list[str | None] = field(default_factory=list)
    start_us: list[int | None] = field(default_factory=list)
    duration_us: list[int | None] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    kind: list[str | None] = field(default_factory=list)
    peer_service: list[str | None] = field(default_factory=list)
    ids: Ids = field(default_factory=Ids)

    def add(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        service: str | None,
        operation: str | None,
        start_us: int | None,
        duration_us: int | None,
        status: str,
        kind: str | None,
        peer_service: str | None,
    ) -> None:
        """Append one span."""
        self.trace_id.append(trace_id)
        self.span_id.append(span_id)
        self.parent_id.append(parent_id)
        self.service.append(service)
        self.operation.append(operation)
        self.start_us.append(start_us)
        self.duration_us.append(duration_us)
        self.status.append(status)
        self.kind.append(kind)
        self.peer_service.append(peer_service)

    def frame(self, path: Path, extra: dict[str, list[Any]] | None = None) -> pl.DataFrame:
        """The spans as a DataFrame with the canonical dtypes (plus ``extra`` columns)."""
        schema = TABLES["spans"].columns
        data: dict[str, Any] = {name: getattr(self, name) for name in schema}
        columns = [
            pl.Series(name, data[name], dtype=dtype, strict=False) for name, dtype in schema.items()
        ]
        for name, values in (extra or {}).items():
            columns.append(pl.Series(name, values))
        frame = pl.DataFrame(columns)
        too_big = [
            c for c in ("start_us", "duration_us") if frame[c].null_count() > data[c].count(None)
        ]
        if too_big:
            raise InputFormatError(
                path,
                f"{too_big[0]} does not fit in a signed 64-bit integer",
                field=too_big[0],
                expected="|value| < 2**63 µs",
            )
        return frame


def span_quality(frame: pl.DataFrame) -> dict[str, int]:
    """Counts a user should know about in a spans table (kept as the source has them)."""
    return {
        "spans": frame.height,
        "traces": frame["trace_id"].n_unique(),
        "roots": frame["parent_id"].null_count(),
        "missing_start": frame["start_us"].null_count(),
        "missing_duration": frame["duration_us"].null_count(),
        "negative_duration": int((frame["duration_us"] < 0).sum()),
        "duplicate_span_ids": frame.height
        - frame.select(pl.struct("trace_id", "span_id").n_unique()).item(),
        "unknown_parent": frame.join(
            frame.select("trace_id", pl.col("span_id").alias("parent_id")),
            on=["trace_id", "parent_id"],
            how="anti",
        )
        .filter(pl.col("parent_id").is_not_null())
        .height,
        "shared_server_halves": int(frame["span_id"].str.ends_with(":server").sum()),
        "starts_before_parent": int(
            frame.join(
                frame.select(
                    "trace_id",
                    pl.col("span_id").alias("parent_id"),
                    pl.col("start_us").alias("_parent_start"),
                ),
                on=["trace_id", "parent_id"],
            )
            .select((pl.col("start_us") < pl.col("_parent_start")).sum())
            .item()
        ),
    }


def finish(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Conform a reader's frame to the canonical spans table."""
    return conform(frame, "spans")


# ------------------------------------------------------------------- JSON input


def open_text(path: Path) -> io.TextIOBase:
    """``path`` opened as UTF-8 text, gunzipped if it is gzip."""
    with path.open("rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_text(path: Path) -> str:
    """The whole text of ``path`` (gzip aware); unreadable bytes raise InputFormatError."""
    try:
        with open_text(path) as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise InputFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFormatError(path, f"cannot read file: {exc}") from exc


def _decode_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> InputFormatError:
    snippet = exc.doc[max(0, exc.pos - 20) : exc.pos + 20] if exc.doc else ""
    return InputFormatError(
        path,
        f"invalid JSON: {exc.msg} (column {exc.colno})",
        row=exc.lineno + line_offset,
        expected="valid JSON",
        found=snippet or "end of file",
    )


def json_documents(path: Path) -> Iterator[tuple[int | None, Any]]:
    """The JSON values of a file: one document, or one per line for JSON Lines.

    Yields ``(line, value)``; ``line`` is the 1-based line of a JSON Lines record, None
    for a single document. A file is JSON Lines when its first non-blank line is a
    complete JSON value and another non-blank line follows.
    """
    text = read_text(path)
    lines = text.splitlines()
    nonblank = [i for i, line in enumerate(lines[:50]) if line.strip()]
    if not nonblank:
        raise InputFormatError(path, "empty file", expected="JSON", found="no data")
    first = lines[nonblank[0]]
    is_lines = False
    if len(nonblank) > 1:
        try:
            json.loads(first)
            is_lines = True
        except json.JSONDecodeError:
            is_lines = False
    if not is_lines:
        try:
            yield None, json.loads(text)
        except json.JSONDecodeError as exc:
            raise _decode_error(path, exc) from exc
        return
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _decode_error(path, exc, line_offset=number - 1) from exc
        yield number, value


def data_files(path: Path, accept: Callable[[Path], bool]) -> list[Path]:
    """The files a reader should read: ``path`` itself, or the accepted files under a folder."""
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and not _NOT_DATA.match(p.name)
    )
    return [p for p in files if accept(p)]


def sniff_json_dir(path: Path, sniff_file: Callable[[Path, bytes], bool]) -> bool:
    """True when ``path`` is a folder whose JSON data files all sniff as one format."""
    from fleetlab.traces._formats import read_head

    files = [p for p in data_files(path, lambda p: True) if is_json_name(p)]
    return bool(files) and all(sniff_file(p, read_head(p)) for p in files)


def is_json_name(path: Path) -> bool:
    """True for names like x.json, x.jsonl, x.json.gz, x.ndjson, x.json.txt."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".txt")
    return name.endswith((".json", ".jsonl", ".ndjson"))


def json_keys(head: bytes, limit: int = 65536) -> set[str]:
    """The object keys that appear in the first ``limit`` bytes of a JSON head."""
    text = head[:limit].decode("utf-8", errors="replace")
    return set(re.findall(r'"([A-Za-z_][A-Za-z0-9_.]*)"\s*:', text))


def first_char(head: bytes) -> str:
    """The first non-blank character of a text head ('' if none)."""
    text = head[:4096].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return text[:1]
