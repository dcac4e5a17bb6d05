"""Alibaba ServeGen (Bailian 2025) client profiles: per-client, per-window load and sizes.

ServeGen publishes, per model, one pair of files per client ("chunk"):

* ``chunk-N-trace.csv`` (no header): ``window start (s), rate (req/s), CV of the
  inter-arrival times, arrival pattern (Gamma/Weibull, empty when the rate is 0),
  shape, scale`` — one line per 10-minute window over up to 14 days;
* ``chunk-N-dataset.json``: ``{window start: {quantity: "{value: probability, ...}"}}``
  — one token-count PDF per quantity per 6-hour window (the inner maps are Python dict
  literals stored as strings; they are parsed as data, never ``eval``-ed).

A dataset is a ``.tar.gz`` of those files (as in the mirror), the same files extracted
as a folder, or one ``chunk-N-trace.csv`` (its sibling ``dataset.json`` is joined when
present). Archives are read as a stream, one member at a time.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import polars as pl

from fleetlab.errors import InputFormatError
from fleetlab.traces._checks import Field, diagnose_csv
from fleetlab.traces._formats import Format
from fleetlab.traces._schemas import conform

_MEMBER = re.compile(r"(?:^|/)chunk-(\d+)-(trace\.csv|dataset\.json)$")
_CATEGORIES = ("language", "reason", "multimodal")

_TRACE_SCHEMA = {
    "window_start_s": pl.Float64,
    "rate_per_s": pl.Float64,
    "cv": pl.Float64,
    "pattern": pl.String,
    "pattern_shape": pl.Float64,
    "pattern_scale": pl.Float64,
}
_TRACE_FIELDS = [
    Field("window start", "number", column=0),
    Field("rate", "number", column=1),
    Field("cv", "number", column=2),
    Field("pattern", "text", required=False, column=3),
    Field("shape", "number", column=4),
    Field("scale", "number", column=5),
]

#: dataset.json quantity -> canonical column prefix
_QUANTITIES = {
    "input_tokens": "input_tokens",
    "text_tokens": "input_tokens",  # multimodal: the text part of the prompt
    "output_tokens": "output_tokens",
    "image_tokens": "image_tokens",
    "reason_ratio": "reason_ratio",
}


def _sniff_servegen(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return next(_member_files(path), None) is not None
    if head[257:262] == b"ustar":  # a (decompressed) tar archive
        return re.search(rb"chunk-\d+-(trace\.csv|dataset\.json)", head) is not None
    return bool(re.fullmatch(r"chunk-\d+-trace\.csv(\.gz)?", path.name))


def _member_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("chunk-*")):
        if p.is_file() and _MEMBER.search(p.as_posix()):
            yield p


def _model_of(member: str) -> str:
    parts = member.split("/")
    return parts[-2] if len(parts) >= 2 else ""


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every chunk file, streaming through archives."""
    if path.is_dir():
        for p in _member_files(path):
            yield (
                p.relative_to(path).as_posix() if p.parent != path else f"{path.name}/{p.name}",
                p.read_bytes(),
            )
        return
    if path.name.endswith(("-trace.csv", "-trace.csv.gz")):
        yield f"{path.parent.name}/{path.name}", _read_maybe_gz(path)
        sibling = path.with_name(re.sub(r"-trace\.csv(\.gz)?$", "-dataset.json", path.name))
        if sibling.exists():
            yield f"{path.parent.name}/{sibling.name}", sibling.read_bytes()
        return
    try:
        with path.open("rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if _is_gz(path) else raw
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for info in archive:
                    if info.isfile() and _MEMBER.search(info.name):
                        handle = archive.extractfile(info)
                        if handle is not None:
                            yield info.name, handle.read()
            while stream.read(1 << 20):  # drain to the end: gzip checks length and CRC
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InputFormatError(
            path, f"archive is truncated or corrupt: {exc}", expected="a complete tar(.gz) archive"
        ) from exc


def _is_gz(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _parse_trace(label: str, data: bytes) -> pl.DataFrame:
    try:
        frame = pl.read_csv(io.BytesIO(data), has_header=False, schema=_TRACE_SCHEMA)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        text = data.decode("utf-8", errors="replace")
        found = diagnose_csv(Path(label), _TRACE_FIELDS, header=False, ncols=6, text=text)
        raise found or InputFormatError(label, f"malformed trace: {exc}") from exc
    required = [c for c in _TRACE_SCHEMA if c != "pattern"]
    if frame.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
        text = data.decode("utf-8", errors="replace")
        found = diagnose_csv(Path(label), _TRACE_FIELDS, header=False, ncols=6, text=text)
        raise found or InputFormatError(
            label, "a line has missing values", expected="6 values per line"
        )
    # the median of a Float64 column is a float (None when all values are null)
    step = (
        cast("float | None", frame["window_start_s"].diff().median()) if frame.height > 1 else None
    )
    window = float(step) if step is not None and step > 0 else 600.0
    return frame.with_columns(
        pl.col("pattern").replace("", None),
        (pl.col("window_start_s").shift(-1) - pl.col("window_start_s"))
        .fill_null(window)
        .alias("window_s"),
    )


def _dataset_entries(label: str, data: bytes) -> Iterator[tuple[float, str, Any]]:
    """(window start, canonical prefix, raw PDF text) of every distribution in a file."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFormatError(label, f"not valid JSON: {exc}", expected="a JSON object") from exc
    if not isinstance(doc, dict):
        raise InputFormatError(
            label, "not a JSON object", expected="{window: {...}}", found=type(doc).__name__
        )
    for window, quantities in doc.items():
        try:
            start = float(window)
        except ValueError:
            raise InputFormatError(
                label,
                "bad window key",
                field=window,
                expected="a window start in seconds",
                found=window,
            ) from None
        if not isinstance(quantities, dict):
            raise InputFormatError(
                label,
                "bad window",
                field=window,
                expected="an object of distributions",
                found=type(quantities).__name__,
            )
        seen: set[str] = set()
        for quantity, prefix in _QUANTITIES.items():
            if prefix in seen or quantity not in quantities:
                continue
            seen.add(prefix)
            text = quantities[quantity]
            if isinstance(text, dict):  # a real JSON object instead of a dict literal
                text = "{" + ", ".join(f"{k}: {v}" for k, v in text.items()) + "}"
            if not isinstance(text, str):
                raise InputFormatError(
                    label,
                    "bad distribution",
                    field=f"{window}.{quantity}",
                    expected="a {value: probability, ...} map",
                    found=text,
                )
            yield start, prefix, text


def _as_json(text: pl.Expr) -> pl.Expr:
    """``{1: 0.5, 2: 0.5}`` -> ``[1, 0.5, 2, 0.5]``: a flat JSON array of value, prob."""
    return (
        text.str.replace_all(":", ",", literal=True)
        .str.replace("{", "[", literal=True)
        .str.replace("}", "]", literal=True)
    )


def _parse_pdfs(entries: pl.DataFrame) -> pl.DataFrame:
    """Parse every ``"{value: probability, ...}"`` text at once, in polars (no eval)."""
    text = pl.col("text").str.strip_chars()
    # well formed: braces around, nothing but numbers and separators inside, one comma
    # between consecutive value: probability pairs
    colons = text.str.count_matches(":").cast(pl.Int64)
    ok = (
        text.str.starts_with("{")
        & text.str.ends_with("}")
        & ~text.str.slice(1).str.contains(r"[^0-9eE+\-.:,\s}]|}.")
        & (text.str.count_matches(",").cast(pl.Int64) == (colons - 1).clip(0))
    )
    checked = entries.with_columns(ok.alias("_ok"), _as_json(text).alias("_json"))
    bad = checked.filter(~pl.col("_ok"))
    if not bad.height:
        try:
            nums = checked.select(pl.col("_json").str.json_decode(pl.List(pl.Float64)))
        except pl.exceptions.PolarsError:
            nums = None
        if nums is not None:
            pairs = nums.to_series()
            bad = checked.filter(pairs.list.len() != 2 * checked["text"].str.count_matches(":"))
    if not bad.height and nums is None:  # find the text the JSON decoder refused
        for i, candidate in enumerate(checked["_json"]):
            try:
                json.loads(candidate)
            except ValueError:
                bad = checked[i : i + 1]
                break
        else:
            raise InputFormatError(
                entries["label"][0], "bad distribution", expected="{value: probability} maps"
            )
    if bad.height:
        row = bad.row(0, named=True)
        raise InputFormatError(
            row["label"],
            "bad distribution",
            field=f"{row['window_start_s']:g}.{row['prefix']}",
            expected="a {value: probability, ...} map",
            found=row["text"],
        )
    return entries.select(
        "model",
        "chunk",
        "window_start_s",
        "prefix",
        pairs.list.gather_every(2).alias("values"),
        pairs.list.gather_every(2, 1).alias("probs"),
    )


def _distributions(entries: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, chunk, window) with a values/probs list pair per quantity."""
    parsed = _parse_pdfs(entries)
    keys = ["model", "chunk", "window_start_s"]
    wide = parsed.select(keys).unique(maintain_order=True)
    for prefix in dict.fromkeys(_QUANTITIES.values()):
        part = parsed.filter(pl.col("prefix") == prefix).select(
            *keys,
            pl.col("values").alias(f"{prefix}_values"),
            pl.col("probs").alias(f"{prefix}_probs"),
        )
        wide = wide.join(part, on=keys, how="left")
    step = pl.col("window_start_s").sort().diff().median().over("model", "chunk")
    return wide.with_columns(step.alias("dist_window_s"))


def load_servegen(path: Path) -> pl.DataFrame:
    """Every client's windows of a ServeGen dataset as one canonical client_profiles frame."""
    traces: list[pl.DataFrame] = []
    cols: dict[str, list[Any]] = {
        k: [] for k in ("model", "chunk", "window_start_s", "prefix", "text", "label")
    }
    for name, data in _members(path):
        match = _MEMBER.search(name)
        if match is None:
            continue
        model, chunk = _model_of(name), int(match.group(1))
        label = str(path) if path.is_file() and path.name == Path(name).name else f"{path}:{name}"
        if match.group(2) == "trace.csv":
            traces.append(
                _parse_trace(label, data).with_columns(
                    pl.lit(model).alias("model"), pl.lit(chunk, pl.Int64).alias("chunk")
                )
            )
            continue
        for start, prefix, text in _dataset_entries(label, data):
            for key, value in zip(cols, (model, chunk, start, prefix, text, label), strict=True):
                cols[key].append(value)
    if not traces:
        raise InputFormatError(
            path,
            "no chunk-N-trace.csv file found",
            expected="ServeGen chunk-N-trace.csv files",
            found="none",
        )
    frame = pl.concat(traces, how="vertical_relaxed")
    if cols["text"]:
        schema = {
            "model": pl.String,
            "chunk": pl.Int64,
            "window_start_s": pl.Float64,
            "prefix": pl.String,
            "text": pl.String,
            "label": pl.String,
        }
        dists = _distributions(pl.DataFrame(cols, schema=schema))
        frame = frame.join(
            dists, on=["model", "chunk", "window_start_s"], how="full", coalesce=True
        )
    frame = frame.sort("model", "chunk", "window_start_s").with_columns(
        pl.format("chunk-{}", pl.col("chunk")).alias("client")
    )
    return conform(frame.lazy(), "client_profiles").collect()


def _scan_servegen(path: Path) -> pl.LazyFrame:
    return load_servegen(path).lazy()


def _servegen_quality(frame: pl.DataFrame) -> dict[str, int]:
    per_client = frame.group_by("model", "client").agg(
        pl.col("input_tokens_values").is_not_null().any().alias("has_dist")
    )
    return {
        "clients": per_client.height,
        "clients_without_distributions": per_client.filter(~pl.col("has_dist")).height,
        "windows_without_rate": frame["rate_per_s"].null_count(),
        "idle_windows": frame.filter(pl.col("rate_per_s") == 0).height,
    }


FORMATS: tuple[Format, ...] = (
    Format(
        "servegen",
        "client_profiles",
        "Alibaba ServeGen (Bailian 2025) per-client windows: tar.gz, folder or chunk-N-trace.csv",
        _sniff_servegen,
        _scan_servegen,
        nonnull=("client", "window_start_s", "window_s"),
        quality=_servegen_quality,
    ),
)
