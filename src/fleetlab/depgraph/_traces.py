"""Per-trace call graphs: shape (depth, fan-out, size, canonical pattern) and critical path.

The critical path follows CRISP (Zhang et al., USENIX ATC'22): from a span's end, walk back
through its children, taking the one that finished last, then the last one to finish
before that child started, and so on; a span's exclusive time on the path is its duration
minus the time its critical children cover. Children shifted by clock skew (starting
before the parent, or ending after it while being shorter) are moved into the parent's
interval first. Patterns group traces by a canonical form of their call tree (children
sorted, labels = services), as in the Alibaba SoCC'21 trace study.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import polars as pl

from fleetlab.depgraph._clean import clean_spans
from fleetlab.sim import Streams


def analyze_traces(
    spans: pl.DataFrame | pl.LazyFrame,
    *,
    max_traces: int | None = 50_000,
    seed: int = 0,
    source: str = "<spans>",
) -> pl.DataFrame:
    """One row per trace: its shape, its critical path and its canonical pattern.

    Parameters
    ----------
    spans
        Canonical spans table.
    max_traces
        Analyse a uniform random sample of at most this many complete traces (``None``:
        all). The walk is a Python loop over the spans of the sampled traces.
    seed
        Seed of the sample.
    source
        Name used in error messages.

    Returns
    -------
    polars.DataFrame
        ``trace_id``, ``root_service``, ``spans``, ``services``, ``depth`` (1 = root only),
        ``max_fanout``, ``e2e_ms``, ``critical_path`` (list of services, root first),
        ``critical_ms`` (list: exclusive ms of each), ``dominant`` (the service with the
        most exclusive critical time), ``dominant_share`` (its share of e2e),
        ``pattern`` (12-hex id of the canonical tree), ``broken`` (trace has spans whose
        parent is missing; they are left out of the walk).
    """
    frame, _ = clean_spans(spans, source=source)
    if max_traces is not None and frame["tk"].n_unique() > max_traces:
        keys = frame["tk"].unique().sort().to_numpy()
        rng = Streams(seed)["trace-sample"]
        pick = rng.choice(keys, size=max_traces, replace=False)
        frame = frame.filter(pl.col("tk").is_in(pl.Series(pick).implode()))
    frame = frame.sort("tk", "start_us")
    cols = {c: frame[c].fill_null(0).to_numpy() for c in ("tk", "k", "pk")}
    # float copies, adjusted in place for clock skew trace by trace
    cols["start"] = frame["start_us"].cast(pl.Float64).to_numpy().copy()
    cols["dur"] = frame["duration_us"].cast(pl.Float64).fill_null(0.0).to_numpy().copy()
    svc = frame["service"].to_list()
    tids = frame["trace_id"].to_list()
    parent_ok = frame["p_service"].is_not_null().to_numpy()
    is_root = frame["pk"].is_null().to_numpy()
    rows: list[dict[str, Any]] = []
    n = frame.height
    i = 0
    tk = cols["tk"]
    while i < n:
        j = i
        while j < n and tk[j] == tk[i]:
            j += 1
        rows.extend(_one_trace(range(i, j), cols, svc, tids, parent_ok, is_root))
        i = j
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "trace_id": pl.String,
        "root_service": pl.String,
        "spans": pl.Int64,
        "services": pl.Int64,
        "depth": pl.Int64,
        "max_fanout": pl.Int64,
        "e2e_ms": pl.Float64,
        "critical_path": pl.List(pl.String),
        "critical_ms": pl.List(pl.Float64),
        "dominant": pl.String,
        "dominant_share": pl.Float64,
        "pattern": pl.String,
        "broken": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def _one_trace(
    idx: range,
    cols: dict[str, np.ndarray],
    svc: list[str],
    tids: list[str],
    parent_ok: np.ndarray,
    is_root: np.ndarray,
) -> list[dict[str, Any]]:
    k, pk = cols["k"], cols["pk"]
    s, dur = cols["start"], cols["dur"]
    pos = {int(k[i]): i for i in idx}
    children: dict[int, list[int]] = {}
    roots = []
    broken = False
    for i in idx:
        if is_root[i]:
            roots.append(i)
        elif parent_ok[i]:
            children.setdefault(pos[int(pk[i])], []).append(i)
        else:
            broken = True
    out = []
    for r in roots:
        depth, fanout, n_spans, names = _shape(r, children, s, dur, svc)
        path: list[tuple[str, float]] = []
        _critical(r, s[r] + dur[r], children, s, dur, svc, path)
        total = dur[r] or 1.0
        by_svc: dict[str, float] = {}
        for name, ms in path:
            by_svc[name] = by_svc.get(name, 0.0) + ms
        dominant = max(by_svc, key=lambda x: by_svc[x]) if by_svc else svc[r]
        out.append(
            {
                "trace_id": tids[r],
                "root_service": svc[r],
                "spans": n_spans,
                "services": len(names),
                "depth": depth,
                "max_fanout": fanout,
                "e2e_ms": dur[r] / 1000.0,
                "critical_path": _collapse([p[0] for p in path]),
                "critical_ms": _collapse_ms(path),
                "dominant": dominant,
                "dominant_share": by_svc.get(dominant, 0.0) * 1000 / total,
                "pattern": hashlib.blake2b(
                    _canonical(r, children, svc).encode(), digest_size=6
                ).hexdigest(),
                "broken": broken,
            }
        )
    return out


def _shape(
    root: int, children: dict[int, list[int]], s: np.ndarray, dur: np.ndarray, svc: list[str]
) -> tuple[int, int, int, set[str]]:
    """Depth, max fan-out, size, services; also moves skewed children into their parent."""
    depth, fanout, n = 0, 0, 0
    names: set[str] = set()
    stack = [(root, 1)]
    while stack:
        i, d = stack.pop()
        n += 1
        names.add(svc[i])
        depth = max(depth, d)
        kids = children.get(i, [])
        fanout = max(fanout, len(kids))
        for c in kids:
            if dur[c] <= dur[i]:  # skew: shift a child that fits into the parent's interval
                if s[c] < s[i]:
                    s[c] = s[i]
                elif s[c] + dur[c] > s[i] + dur[i]:
                    s[c] = s[i] + dur[i] - dur[c]
            stack.append((c, d + 1))
    return depth, fanout, n, names


def _critical(
    i: int,
    end: float,
    children: dict[int, list[int]],
    s: np.ndarray,
    dur: np.ndarray,
    svc: list[str],
    path: list[tuple[str, float]],
) -> None:
    """Append (service, exclusive critical µs) along span i's critical path (CRISP)."""
    own_end = min(end, s[i] + dur[i])
    kids = sorted(children.get(i, []), key=lambda c: s[c] + dur[c], reverse=True)
    covered = 0.0
    t = own_end
    crit: list[tuple[int, float]] = []
    for c in kids:
        c_end = s[c] + dur[c]
        if c_end <= t + 1e-9 and c_end > s[i]:
            crit.append((c, c_end))
            covered += max(0.0, min(c_end, t) - max(s[c], s[i]))
            t = s[c]
    path.append((svc[i], max(0.0, own_end - s[i] - covered) / 1000.0))
    for c, c_end in reversed(crit):
        _critical(c, c_end, children, s, dur, svc, path)


def _collapse(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        if not out or out[-1] != n:
            out.append(n)
    return out


def _collapse_ms(path: list[tuple[str, float]]) -> list[float]:
    out: list[float] = []
    last = None
    for n, ms in path:
        if out and n == last:
            out[-1] += ms
        else:
            out.append(ms)
        last = n
    return out


def _canonical(i: int, children: dict[int, list[int]], svc: list[str]) -> str:
    kids = sorted(_canonical(c, children, svc) for c in children.get(i, []))
    return svc[i] + ("(" + ",".join(kids) + ")" if kids else "")


def critical_services(traces: pl.DataFrame) -> pl.DataFrame:
    """Which services determine end-to-end latency, aggregated over traces.

    Parameters
    ----------
    traces
        Output of :func:`analyze_traces`.

    Returns
    -------
    polars.DataFrame
        Per service: ``on_path`` (share of traces whose critical path includes it),
        ``dominant`` (share of traces where it holds the most critical time),
        ``critical_ms_mean`` (mean exclusive critical ms per trace it is on) and
        ``critical_share`` (its share of all critical time), sorted by ``critical_share``.
    """
    n = max(1, traces.height)
    long = (
        traces.select("trace_id", "critical_path", "critical_ms")
        .explode(["critical_path", "critical_ms"])
        .drop_nulls("critical_path")
    )
    per = long.group_by("trace_id", "critical_path").agg(pl.col("critical_ms").sum())
    total = float(per["critical_ms"].sum()) or 1.0
    agg = per.group_by(pl.col("critical_path").alias("service")).agg(
        (pl.len() / n).alias("on_path"),
        pl.col("critical_ms").mean().alias("critical_ms_mean"),
        (pl.col("critical_ms").sum() / total).alias("critical_share"),
    )
    dom = traces.group_by(pl.col("dominant").alias("service")).agg((pl.len() / n).alias("dominant"))
    return (
        agg.join(dom, on="service", how="left")
        .with_columns(pl.col("dominant").fill_null(0.0))
        .select("service", "on_path", "dominant", "critical_ms_mean", "critical_share")
        .sort("critical_share", "service", descending=[True, False])
    )


def trace_patterns(traces: pl.DataFrame, *, top: int = 20) -> pl.DataFrame:
    """The most frequent call-tree patterns (canonical forms) and their shapes.

    Returns
    -------
    polars.DataFrame
        ``pattern``, ``traces``, ``share``, ``spans``, ``depth``, ``max_fanout``,
        ``root_service``, ``e2e_p50_ms``: the ``top`` patterns by count.
    """
    n = max(1, traces.height)
    return (
        traces.group_by("pattern")
        .agg(
            pl.len().alias("traces"),
            (pl.len() / n).alias("share"),
            pl.col("spans").first(),
            pl.col("depth").first(),
            pl.col("max_fanout").first(),
            pl.col("root_service").first(),
            pl.col("e2e_ms").median().alias("e2e_p50_ms"),
        )
        .sort("traces", "pattern", descending=[True, False])
        .head(top)
    )


def shape_stats(traces: pl.DataFrame) -> dict[str, Any]:
    """Distribution of trace shapes: size, depth, fan-out percentiles; pattern concentration.

    Returns
    -------
    dict
        ``traces``, ``broken_traces``, ``patterns`` (distinct), ``top10_pattern_share``,
        and for ``spans``, ``depth``, ``max_fanout``, ``services``: ``{p50, p90, p99, max}``.
    """
    out: dict[str, Any] = {
        "traces": traces.height,
        "broken_traces": int(traces["broken"].sum()) if traces.height else 0,
    }
    counts = traces.group_by("pattern").len().sort("len", descending=True)
    out["patterns"] = counts.height
    out["top10_pattern_share"] = (
        float(counts.head(10)["len"].sum()) / traces.height if traces.height else 0.0
    )
    for col in ("spans", "depth", "max_fanout", "services"):
        s = traces[col]
        out[col] = (
            {
                "p50": s.quantile(0.5),
                "p90": s.quantile(0.9),
                "p99": s.quantile(0.99),
                "max": s.max(),
            }
            if traces.height
            else {}
        )
    return out
