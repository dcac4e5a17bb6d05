"""Cleaning a spans table before mining: ids, duplicates, clock units, parent links.

Everything here is Polars expressions over whole columns; no Python loop per span. The
result is a table of spans with 64-bit join keys and the parent's columns attached, plus a
dict of data-quality counts (what was dropped or repaired, and why).
"""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from fleetlab.errors import FleetlabError, InputFormatError

REQUIRED = (
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "operation",
    "start_us",
    "duration_us",
    "status",
)
#: parent ids that mean "no parent" when no span has them ("0" is not one: Alibaba rpcids)
ROOT_MARKERS = (
    "",
    "root",
    "null",
    "none",
    "0000000000000000",
    "00000000000000000000000000000000",
)
_MARKER_VARIANTS = sorted({v for m in ROOT_MARKERS for v in (m, m.upper(), m.capitalize())})
_ERROR_STATUS = r"(?i)^(error|err|fault|failed|failure|status_code_error|2|5\d\d)$"
_EPOCH_US = (1e14, 1e17)  # 1973 .. 5138 in microseconds since the epoch


def _span_key(trace: pl.Expr, span: pl.Expr) -> pl.Expr:
    """64-bit key of (trace id, span id): two seeded string hashes combined (collisions
    need ~4e9 spans to reach a 50% chance, far beyond one table)."""
    return trace.hash(7) ^ span.hash(3)


def _error_values(status: pl.Series) -> pl.Series:
    """The distinct status strings that mean failure (few distinct values: matched in Python)."""
    values = status.drop_nulls().unique()
    return values.filter(values.str.contains(_ERROR_STATUS))


def _lower_few(col: pl.Series) -> pl.Expr:
    """Lower-case a column with few distinct values through a lookup, not per row."""
    values = col.drop_nulls().unique().to_list()
    mapping = {v: v.lower() for v in values if v != v.lower()}
    if not mapping:
        return pl.col(col.name)
    return pl.col(col.name).replace(mapping)


def as_frame(
    spans: pl.DataFrame | pl.LazyFrame, *, source: str, encode: bool = False
) -> pl.DataFrame:
    """Select the span columns (optional ones as nulls) and collect; checks required columns.

    ``encode=True`` reads ``service``, ``operation`` and ``peer_service`` as Categorical
    (few distinct values): every later comparison, gather and group-by on them then works
    on 32-bit codes instead of strings. Only the columns of the spans table are read
    (projection pushdown into a Parquet scan).
    """
    names_cat = ("service", "operation") if encode else ()
    lf = spans.lazy() if isinstance(spans, pl.DataFrame) else spans
    names = _check_columns(lf, source)
    opt = [
        (pl.col(c) if c in names else pl.lit(None)).cast(pl.String).alias(c)
        for c in ("kind", "peer_service")
    ]
    if encode:
        opt[1] = opt[1].cast(pl.Categorical)
    try:
        return lf.select(
            pl.col("trace_id").cast(pl.String),
            pl.col("span_id").cast(pl.String),
            pl.col("parent_id").cast(pl.String),
            *(
                pl.col(c).cast(pl.String).cast(pl.Categorical if c in names_cat else pl.String)
                for c in ("service", "operation")
            ),
            pl.col("start_us").cast(pl.Int64),
            pl.col("duration_us").cast(pl.Int64),
            pl.col("status").cast(pl.String),
            *opt,
        ).collect()
    except pl.exceptions.PolarsError as exc:
        raise _type_error(source, exc) from exc


def _check_columns(lf: pl.LazyFrame, source: str) -> list[str]:
    """The table's column names; raises when a required span column is missing."""
    names = lf.collect_schema().names()
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputFormatError(
            source,
            f"missing span column(s) {missing}",
            row=1,
            expected=f"columns {list(REQUIRED)}",
            found=names,
        )
    return names


def _type_error(source: str, exc: Exception) -> InputFormatError:
    return InputFormatError(
        source,
        f"span columns have the wrong type: {exc}".splitlines()[0],
        expected="string ids and integer start_us/duration_us",
    )


def clean_spans(
    spans: pl.DataFrame | pl.LazyFrame, *, source: str = "<spans>"
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Repair and key a spans table; attach each span's parent.

    Returns
    -------
    (frame, quality)
        ``frame`` has the span columns plus ``k``/``pk``/``tk`` (u64 keys of
        (trace, span), (trace, parent), trace), ``is_error``, ``end_us`` and the parent's
        ``p_service``, ``p_operation``, ``p_start_us``, ``p_duration_us``, ``p_kind``,
        ``p_is_error`` (nulls for roots and orphans). ``quality`` counts what was repaired.
    """
    df, q, _ = clean_spans_indexed(spans, source=source)
    return df, q


def clean_spans_indexed(
    spans: pl.DataFrame | pl.LazyFrame, *, source: str = "<spans>", lean: bool = False
) -> tuple[pl.DataFrame, dict[str, Any], pl.Series]:
    """``clean_spans`` plus each span's parent row number in the frame (UInt32, null for
    roots and orphans), for aggregating over children without another join.

    ``lean=True`` (what ``mine_spans`` needs, at less CPU and memory): ``service``,
    ``operation``, ``kind``, ``peer_service`` and the parent's ``p_service``,
    ``p_operation``, ``p_kind`` are Categorical (see ``as_frame``), and the frame has no
    ``trace_id``, ``span_id``, ``parent_id`` or ``status``: the ids are hashed to the
    64-bit keys as the table is read (``_scan_keyed``), so the parent join and everything
    after it work on integers. Tables whose keys repeat take the string path
    (``_prepare``), which repairs duplicates first and then drops the strings; both paths
    give the same frame and counts (tested).
    """
    attached = None
    if lean:
        df, q = _scan_keyed(spans, source=source)
        attached = _attach_parents(df, unique_only=True)
    if attached is None:  # keys repeat (or the String frame was asked for): repair first
        df, q = _prepare(spans, source=source, lean=lean)
        attached = _attach_parents(df)
    assert attached is not None  # only unique_only=True gives None
    df, pi = attached
    is_marker = pl.col("_marker") if lean else pl.col("parent_id").is_in(_MARKER_VARIANTS)
    marker = (pl.col("p_service").is_null() & is_marker).fill_null(False)
    if df.select(marker.any()).item():  # rewriting the id columns costs: only when needed
        pi = pi.set(df.select(marker).to_series(), None)
        df = df.with_columns(
            pl.when(marker).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("pk", *(() if lean else ("parent_id",)))
        )
    if lean:
        df.drop_in_place("_marker")  # in place: a lazy drop copies chunked columns
    orphan = pl.col("pk").is_not_null() & pl.col("p_service").is_null()
    stats = df.select(
        orphan.sum().alias("orphans"),
        pl.col("tk").filter(orphan).n_unique().alias("broken"),
        pl.col("tk").n_unique().alias("traces"),
        pl.col("pk").is_null().sum().alias("roots"),
        (pl.col("start_us") < pl.col("p_start_us")).sum().alias("early"),
        (pl.col("end_us") > pl.col("p_start_us") + pl.col("p_duration_us")).sum().alias("late"),
    ).row(0, named=True)
    q.update(
        spans_used=df.height,
        traces=int(stats["traces"]),
        root_spans=int(stats["roots"]),
        orphan_spans=int(stats["orphans"]),
        broken_traces=int(stats["broken"]),
        children_before_parent=int(stats["early"]),
        children_after_parent=int(stats["late"]),
    )
    return df, q, pi


def _as_categorical(name: str, schema: pl.Schema) -> pl.Expr:
    """Column ``name`` as Categorical (a null column when the table has none).

    A column that is Categorical already (a Parquet file written from Categorical
    columns stores the dictionary, and Polars reads it as codes) is kept as it is:
    casting it through String would hash every row again, which costs more than reading
    the whole table (0.19 vs 0.03 CPU-s for the five name columns of 1M spans).
    """
    if name not in schema:
        return pl.lit(None, dtype=pl.Categorical).alias(name)
    col = pl.col(name)
    if isinstance(schema[name], pl.Categorical):
        return col
    return col.cast(pl.String).cast(pl.Categorical)


def _scan_keyed(
    spans: pl.DataFrame | pl.LazyFrame, *, source: str
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The lean frame straight from the scan: the id strings are hashed to the 64-bit keys
    as they are read (streaming engine) and never held as whole columns, which is most of
    the memory and much of the time at 10M spans. Whether a key repeats (duplicated rows,
    Zipkin's shared ids, conflicting ids: those repairs need the strings, and ``_prepare``
    does them) is checked by ``_attach_parents``, on the keys it sorts anyway.
    """
    lf = spans.lazy() if isinstance(spans, pl.DataFrame) else spans
    _check_columns(lf, source)
    schema = lf.collect_schema()
    tid, sid, pid = (pl.col(c).cast(pl.String) for c in ("trace_id", "span_id", "parent_id"))
    try:
        df = lf.select(
            (tid.is_null() | sid.is_null() | pl.col("service").is_null()).alias("_missing"),
            _span_key(tid, sid).alias("k"),
            tid.hash(11).alias("tk"),
            pl.when(pid.is_null() | (pid == "") | (pid == sid))
            .then(None)
            .otherwise(_span_key(tid, pid))
            .alias("pk"),
            (pid == sid).fill_null(False).alias("_selfp"),
            pid.is_in(_MARKER_VARIANTS).fill_null(False).alias("_marker"),
            _as_categorical("service", schema),
            _as_categorical("operation", schema),
            pl.col("start_us").cast(pl.Int64),
            pl.col("duration_us").cast(pl.Int64),
            _as_categorical("status", schema),
            _as_categorical("kind", schema),
            _as_categorical("peer_service", schema),
        ).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise _type_error(source, exc) from exc
    q: dict[str, Any] = {"spans_in": df.height}
    q["missing_ids"] = int(df["_missing"].sum())
    if q["missing_ids"]:
        df = df.filter(~pl.col("_missing"))
    q["self_parents"] = int(df["_selfp"].sum())
    df, q["rescaled_clock_units"] = _fix_clock_units(df)
    q["negative_durations"] = int((df["duration_us"] < 0).sum())
    q["missing_durations"] = int(df["duration_us"].null_count())
    q.update(duplicate_rows_dropped=0, shared_client_server_ids=0, conflicting_span_ids=0)
    kinds = [v for v in df["kind"].drop_nulls().unique().to_list() if v != v.lower()]
    kind = pl.col("kind")
    if kinds:
        kind = kind.cast(pl.String).replace({v: v.lower() for v in kinds}).cast(pl.Categorical)
    errors = _error_values(df["status"].drop_nulls().unique().cast(pl.String))
    df = df.with_columns(
        pl.when(pl.col("duration_us") < 0)
        .then(None)
        .otherwise(pl.col("duration_us"))
        .alias("duration_us")
        if q["negative_durations"]
        else pl.col("duration_us"),
        # matched on the codes: the few error values as Categorical, not a string per row
        pl.col("status")
        .is_in(errors.cast(pl.Categorical).implode())
        .fill_null(False)
        .alias("is_error")
        if errors.len()
        else pl.lit(False).alias("is_error"),
        kind.alias("kind"),
    )
    df = df.with_columns(
        (pl.col("start_us") + pl.col("duration_us").fill_null(0)).alias("end_us")
    ).drop("_missing", "_selfp", "status")
    return df, q


def _prepare(
    spans: pl.DataFrame | pl.LazyFrame, *, source: str, lean: bool
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Repairs and keys on the string columns (see ``clean_spans_indexed``)."""
    df = as_frame(spans, source=source, encode=lean)
    q: dict[str, Any] = {"spans_in": df.height}
    missing = df.select(
        (
            pl.col("trace_id").is_null() | pl.col("span_id").is_null() | pl.col("service").is_null()
        ).sum()
    ).item()
    q["missing_ids"] = int(missing)
    if missing:
        df = df.drop_nulls(["trace_id", "span_id", "service"])

    # self-parents become null parents ("no parent" markers are resolved after the join:
    # "0" is a real span id in some exports)
    pid = pl.col("parent_id")
    df = df.with_columns(
        pl.when(pid.is_null() | (pid == "") | (pid == pl.col("span_id")))
        .then(None)
        .otherwise(pid)
        .alias("parent_id"),
        (pid == pl.col("span_id")).fill_null(False).alias("_selfp"),
    )
    q["self_parents"] = int(df["_selfp"].sum())
    df = df.drop("_selfp")

    df, q["rescaled_clock_units"] = _fix_clock_units(df)
    neg = df["duration_us"] < 0
    q["negative_durations"] = int(neg.sum())
    q["missing_durations"] = int(df["duration_us"].null_count())
    if q["negative_durations"]:
        df = df.with_columns(
            pl.when(pl.col("duration_us") < 0)
            .then(None)
            .otherwise(pl.col("duration_us"))
            .alias("duration_us")
        )

    df = df.with_columns(
        _span_key(pl.col("trace_id"), pl.col("span_id")).alias("k"),
        pl.col("trace_id").hash(11).alias("tk"),
    )
    df, q = _dedupe(df, q)
    df = df.with_columns(
        pl.when(pl.col("parent_id").is_null())
        .then(None)
        .otherwise(_span_key(pl.col("trace_id"), pl.col("parent_id")))
        .alias("pk"),
        pl.col("status")
        .is_in(_error_values(df["status"]).implode())
        .fill_null(False)
        .alias("is_error"),
        (pl.col("start_us") + pl.col("duration_us").fill_null(0)).alias("end_us"),
        _lower_few(df["kind"]).cast(pl.Categorical if lean else pl.String).alias("kind"),
    )
    if lean:
        df = df.with_columns(
            pl.col("parent_id").is_in(_MARKER_VARIANTS).fill_null(False).alias("_marker")
        ).drop("trace_id", "span_id", "parent_id", "status")
    return df, q


_PARENT_COLS = ("service", "operation", "start_us", "duration_us", "kind", "is_error")


def _attach_parents(
    df: pl.DataFrame, *, unique_only: bool = False
) -> tuple[pl.DataFrame, pl.Series] | None:
    """Add the parent's columns (``p_service`` ...) to each span, by its ``pk``.

    A join on random 64-bit keys spends its time on cache misses; both sides sorted by key
    make it a merge, and the parent columns are then gathered by row index (nulls for roots
    and orphans). Keys are unique after ``_dedupe``, so each span has at most one parent
    and the row order is kept. ``unique_only=True`` (the keyed scan, not deduped): returns
    None when a key repeats.

    The sorts carry no payload column: each key's low bits are replaced by its row number
    (``_packed``), so sorting the one u64 column sorts the rows (a sort with a row-number
    payload cost 3x more). The merge matches the high bits; the full keys of the matched
    rows are compared after it (a parent id missing from the table, or two spans whose
    keys agree in the high bits: ~0.5 pairs in 1M spans, 45 in 10M).
    """
    n = df.height
    bits = max(1, (n - 1).bit_length())
    if bits > 32:  # row numbers are UInt32 everywhere
        raise FleetlabError(f"{n:,} spans in one table: at most 2**32 are supported")
    lf = df.lazy()
    spans, kids = pl.collect_all(  # the two sorts run side by side
        [
            lf.select(_packed(pl.col("k"), bits).sort()),
            lf.select(_packed(pl.col("pk"), bits).drop_nulls().sort()),
        ]
    )
    spans = _unpack(spans.to_series(), bits, "_pi")
    kids = _unpack(kids.to_series(), bits, "_ci")
    found = kids.join(spans, on="_h", how="inner")
    hs = spans["_h"]
    same = hs.slice(1) == hs.slice(0, max(n - 1, 0))
    if same.any():  # spans whose keys share the high bits: a child may match several
        near = same.extend_constant(False, 1) | pl.Series([False]).append(same)
        if unique_only and df["k"].gather(spans["_pi"].filter(near)).is_duplicated().any():
            return None  # a repeated key
        amb = found["_h"].is_in(hs.filter(near).unique().implode())
        some = found.filter(amb)
        some = some.filter(df["k"].gather(some["_pi"]) == df["pk"].gather(some["_ci"]))
        found = pl.concat([found.filter(~amb), some])
    pi = (
        pl.Series("_pi", [None], dtype=pl.UInt32)
        .extend_constant(None, n - 1)
        .scatter(found["_ci"], found["_pi"])
        if n
        else pl.Series("_pi", [], dtype=pl.UInt32)
    )
    # a match on the high bits is a parent when the full keys agree (a parent id missing
    # from the table can share the high bits of a span's key); checked in row order
    wrong = (df["k"].gather(pi) != df["pk"]).fill_null(False)
    if wrong.any():
        pi = pi.set(wrong, None)
    return df.with_columns(pl.col(c).gather(pi).alias(f"p_{c}") for c in _PARENT_COLS), pi


def _packed(key: pl.Expr, bits: int) -> pl.Expr:
    """``key`` with its low ``bits`` bits replaced by the row number (see ``_attach_parents``)."""
    high = (2**64 - 1) ^ ((1 << bits) - 1)
    return (key & high) | pl.int_range(pl.len(), dtype=pl.UInt64)


def _unpack(packed: pl.Series, bits: int, row_name: str) -> pl.DataFrame:
    """Sorted packed keys split into the (sorted) high bits ``_h`` and the row number."""
    low = (1 << bits) - 1
    return pl.DataFrame(
        [
            (packed & ((2**64 - 1) ^ low)).set_sorted().alias("_h"),
            (packed & low).cast(pl.UInt32).alias(row_name),
        ]
    )


def _fix_clock_units(df: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rows whose start is in ns or ms while the table is in µs since the epoch are rescaled."""
    if df.height == 0:
        return df, 0
    lo, hi = df.select(
        pl.col("start_us").min().alias("lo"), pl.col("start_us").max().alias("hi")
    ).row(0)
    if lo is None or hi is None:
        return df, 0
    if _EPOCH_US[0] <= lo and hi < _EPOCH_US[1]:  # lo <= median <= hi: all rows in µs
        return df, 0
    if hi < _EPOCH_US[0]:  # the median cannot be in µs since the epoch either
        return df, 0
    med = cast("float | None", df["start_us"].median())  # start_us is Int64: float or None
    if med is None or not (_EPOCH_US[0] <= med < _EPOCH_US[1]):
        return df, 0  # relative clocks: magnitudes say nothing about units
    s = pl.col("start_us")
    factor = (
        pl.when(s >= _EPOCH_US[1] * 10)
        .then(pl.lit(-1000))  # nanoseconds
        .when((s >= 1e11) & (s < _EPOCH_US[0]))
        .then(pl.lit(1000))  # milliseconds
        .otherwise(pl.lit(1))
    )
    df = df.with_columns(factor.alias("_f"))
    n = int((df["_f"] != 1).sum())
    if n:
        f = pl.col("_f")
        df = df.with_columns(
            pl.when(f < 0).then(s // 1000).otherwise(s * f).alias("start_us"),
            pl.when(f < 0)
            .then(pl.col("duration_us") // 1000)
            .otherwise(pl.col("duration_us") * f)
            .alias("duration_us"),
        )
    return df.drop("_f"), n


def _dedupe(df: pl.DataFrame, q: dict[str, Any]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Drop exact duplicates; split Zipkin-style shared client/server ids; keep one of the rest."""
    q.update(duplicate_rows_dropped=0, shared_client_server_ids=0, conflicting_span_ids=0)
    if df["k"].n_unique() == df.height:
        return df, q
    before = df.height
    df = df.unique(subset=[c for c in df.columns if c != "k"], keep="first", maintain_order=True)
    q["duplicate_rows_dropped"] = before - df.height
    if df["k"].n_unique() == df.height:
        return df, q
    dup = df.filter(pl.col("k").is_duplicated())
    # Zipkin v2: one id shared by the client half (caller) and the server half (callee)
    pairs = (
        dup.group_by("k")
        .agg(
            (pl.col("kind").str.to_lowercase() == "client").any().alias("has_client"),
            (pl.col("kind").str.to_lowercase() == "server").any().alias("has_server"),
            pl.len().alias("n"),
        )
        .filter(pl.col("has_client") & pl.col("has_server") & (pl.col("n") == 2))
    )
    if pairs.height:
        shared = pl.col("k").is_in(pairs["k"].implode())
        is_server = shared & (pl.col("kind").str.to_lowercase() == "server")
        server_rows = df.filter(is_server.fill_null(False)).select(
            "trace_id", pl.col("span_id").alias("_sid"), pl.col("service").alias("_ssvc")
        )
        df = df.with_columns(
            pl.when(is_server)
            .then(pl.col("span_id"))
            .otherwise(pl.col("parent_id"))
            .alias("parent_id"),
            pl.when(is_server)
            .then(pl.col("span_id") + "~server")
            .otherwise(pl.col("span_id"))
            .alias("span_id"),
        )
        # children written against the shared id, in the server's service, hang under the server
        df = df.join(
            server_rows,
            left_on=["trace_id", "parent_id"],
            right_on=["trace_id", "_sid"],
            how="left",
        )
        move = (pl.col("_ssvc") == pl.col("service")) & ~is_server.fill_null(False)
        df = df.with_columns(
            pl.when(move.fill_null(False))
            .then(pl.col("parent_id") + "~server")
            .otherwise(pl.col("parent_id"))
            .alias("parent_id")
        ).drop("_ssvc")
        df = df.with_columns(_span_key(pl.col("trace_id"), pl.col("span_id")).alias("k"))
        q["shared_client_server_ids"] = pairs.height
    n = df.height
    if df["k"].n_unique() != n:
        df = df.sort("start_us", nulls_last=True).unique(
            subset=["k"], keep="first", maintain_order=True
        )
        q["conflicting_span_ids"] = n - df.height
    return df, q
