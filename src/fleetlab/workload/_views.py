"""How each canonical table looks as a stream of events: time, size fields, entity.

Characterization, fitting and comparison work on this view, so they do not care
which reader produced the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.traces import table_of
from fleetlab.workload._stats import as_float

PAIR = "_pair"
"""Flows: the event frame's column holding ``src -> dst`` (the entity a flows model keeps)."""
PAIR_SEP = " -> "


@dataclass(frozen=True)
class View:
    """One canonical table seen as events.

    ``time`` is the event-time column (multiplied by ``time_scale`` to get seconds),
    ``fields`` the size fields ``(name, integer)`` (``lifetime_s`` on vms is derived
    as ``deleted_s - created_s``), ``entity`` the column whose popularity is modelled
    and ``parent`` its parent (a function's app).
    """

    table: str
    time: str
    time_scale: float
    fields: tuple[tuple[str, bool], ...]
    entity: str | None = None
    parent: str | None = None


VIEWS = MappingProxyType(
    {
        "requests": View(
            "requests",
            "arrival_s",
            1.0,
            (("prompt_tokens", True), ("output_tokens", True)),
            "tenant",
        ),
        "invocations": View(
            "invocations",
            "ts_s",
            1.0,
            (("duration_ms", False), ("memory_mb", False)),
            "function",
            "app",
        ),
        "vms": View(
            "vms",
            "created_s",
            1.0,
            (
                ("lifetime_s", False),
                ("cores", False),
                ("memory_gb", False),
                ("gpus", False),
                ("p95_cpu", False),
            ),
            "tenant",
        ),
        "spans": View("spans", "start_us", 1e-6, (("duration_us", True),), "service"),
        "flows": View("flows", "ts_us", 1e-6, (("bytes", True), ("duration_us", True)), "dst"),
    }
)


def resolve_table(frame: pl.DataFrame | pl.LazyFrame, table: str | None) -> str:
    """The canonical table of ``frame`` (``table`` if given, else by its columns).

    Raises
    ------
    ConfigError
        The frame's columns match no canonical table.
    """
    if table is not None:
        return table
    found = table_of(frame)
    if found is None:
        names = frame.collect_schema().names()
        raise ConfigError(
            f"not a canonical table: columns {names} match none of the canonical tables "
            "(expected e.g. arrival_s, prompt_tokens, output_tokens for requests)"
        )
    return found


def event_frame(
    frame: pl.DataFrame, view: View, *, expand_seed: int | None = None
) -> tuple[pl.DataFrame, list[str], list[dict[str, str]]]:
    """The event view of ``frame``: ``_t`` (s, sorted), the usable fields, the entity.

    Returns the frame, the names of the fields that have data, and notes on the
    fields that were skipped (absent or all null) with the reason. Flows also get the
    column ``_pair`` (``src -> dst``), the entity of a flows model. With
    ``expand_seed``, rows of per-minute count tables (``count`` > 1) become one event
    per invocation, spread uniformly at random (seeded) over their minute: the trace
    does not say when in the minute they came, and this is the stated assumption.
    """
    names = frame.columns
    time = pl.col(view.time).cast(pl.Float64) * view.time_scale
    if (
        view.table == "invocations"
        and "minute" in names
        and frame.height
        and frame[view.time].null_count() == frame.height
    ):
        time = pl.col("minute").cast(pl.Float64) * 60.0  # per-minute count table
    exprs: list[pl.Expr] = [time.alias("_t")]
    fields: list[str] = []
    skipped: list[dict[str, str]] = []
    for name, _ in view.fields:
        if name == "lifetime_s" and view.table == "vms":
            expr = (pl.col("deleted_s") - pl.col("created_s")).alias("lifetime_s")
            present = "deleted_s" in names
        else:
            expr = pl.col(name).cast(pl.Float64)
            present = name in names
        if not present:
            skipped.append({"analysis": f"sizes.{name}", "reason": "column absent"})
            continue
        if frame.select(expr.is_null().all()).item() if frame.height else True:
            skipped.append({"analysis": f"sizes.{name}", "reason": "column is empty (all null)"})
            continue
        exprs.append(expr.cast(pl.Float64))
        fields.append(name)
    for col in (view.entity, view.parent):
        if col and col in names and frame.height and frame[col].null_count() < frame.height:
            exprs.append(pl.col(col).cast(pl.String))
    if view.table == "flows" and {"src", "dst"} <= set(names):
        exprs.append(
            pl.concat_str(
                [pl.col("src").cast(pl.String), pl.col("dst").cast(pl.String)], separator=PAIR_SEP
            ).alias(PAIR)
        )
    out = frame.select(exprs)
    if "count" in names and view.table == "invocations":
        out = out.with_columns(frame["count"].cast(pl.Int64).fill_null(0).alias("_count"))
        if (
            expand_seed is not None
            and out.height
            and as_float(out["_count"].max(), what="_count max") > 1
        ):
            out = _expand(out, frame, expand_seed)
    return out.sort("_t", nulls_last=True), fields, skipped


def _expand(out: pl.DataFrame, frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    import numpy as np

    reps = out["_count"].to_numpy()
    idx = np.repeat(np.arange(out.height), reps)
    events = out[idx].drop("_count")
    if "minute" in frame.columns and frame["ts_s"].null_count() == frame.height:
        jitter = np.random.default_rng(seed).uniform(0.0, 60.0, idx.size)
        events = events.with_columns(pl.col("_t") + pl.Series(jitter))
    return events


def view_of(table: str) -> View:
    """The event view of canonical ``table``.

    Raises
    ------
    ConfigError
        The table has no event view (usage, client_profiles, nodes are not event streams).
    """
    try:
        return VIEWS[table]
    except KeyError:
        raise ConfigError(
            f"table {table!r} is not an event stream: workload models cover "
            f"{', '.join(VIEWS)} (found {table!r})"
        ) from None
