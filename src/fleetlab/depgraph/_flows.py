"""Orion-style dependency inference from flows alone (no trace context).

For a service S, an inbound request A->S at time t that makes S call B shows up as an
outbound request S->B a short delay after t. Over many requests the delays between S's
inbound and outbound requests spike where such a dependency exists and are flat where the
two are unrelated (Chen et al., "Automating Network Application Dependency Discovery",
OSDI'08, "Orion"). We count the outbound S->B requests inside the window after each
inbound request and compare with what unrelated traffic would put there (the local rate
of S->B in a wide band around the request): the excess is the number of outbound requests
the inbound ones explain. The window after an inbound request is its own duration when
flows carry one (S is still handling it), else ``window_ms``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import networkx as nx
import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from fleetlab.depgraph._graph import DependencyGraph
from fleetlab.errors import InputFormatError

#: caller name of the row that tests all inbound requests of a service together
ANY = "*"


class FlowMiningSpec(BaseModel):
    """Settings of the Orion-style miner (defaults are the evaluated setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_ms: float = Field(100.0, gt=0.0, description="delay window when flows lack durations")
    max_window_ms: float = Field(5000.0, gt=0.0, description="cap on a per-request window")
    skew_ms: float = Field(2.0, ge=0.0, description="clock-skew tolerance around each window")
    band_ms: float = Field(
        1000.0, gt=0.0, description="half-width of the band that sets the local baseline"
    )
    min_z: float = Field(4.0, ge=0.0, description="significance of the excess (in std devs)")
    min_confidence: float = Field(
        0.3, ge=0.0, le=1.0, description="share of S->B requests explained to keep S->B"
    )
    min_flows: int = Field(5, ge=1, description="ignore (src, dst) pairs with fewer flows")


def _as_flows(flows: pl.DataFrame | pl.LazyFrame, source: str) -> pl.DataFrame:
    lf = flows.lazy() if isinstance(flows, pl.DataFrame) else flows
    names = lf.collect_schema().names()
    missing = [c for c in ("ts_us", "src", "dst") if c not in names]
    if missing:
        raise InputFormatError(
            source,
            f"missing flow column(s) {missing}",
            row=1,
            expected="columns ['ts_us', 'src', 'dst']",
            found=names,
        )
    dur = (pl.col("duration_us") if "duration_us" in names else pl.lit(None)).cast(pl.Int64)
    return (
        lf.select(
            pl.col("ts_us").cast(pl.Int64),
            pl.col("src").cast(pl.String),
            pl.col("dst").cast(pl.String),
            dur.alias("duration_us"),
        )
        .drop_nulls(["ts_us", "src", "dst"])
        .filter(pl.col("src") != pl.col("dst"))
        .sort("ts_us")
        .collect()
    )


def _ts_range(f: pl.DataFrame) -> tuple[int, int] | None:
    """First and last ``ts_us`` of an :func:`_as_flows` table; None when it has no rows.

    Polars types ``min``/``max`` as any scalar; ``_as_flows`` makes ``ts_us`` a non-null
    Int64 column, so here they are ints.
    """
    if f.height == 0:
        return None
    return cast(int, f["ts_us"].min()), cast(int, f["ts_us"].max())


def flow_dependencies(
    flows: pl.DataFrame | pl.LazyFrame,
    spec: FlowMiningSpec | None = None,
    *,
    source: str = "<flows>",
) -> pl.DataFrame:
    """Score every (inbound A->S, outbound S->B) pair of a flows table.

    Parameters
    ----------
    flows
        Canonical ``flows`` table (``ts_us``, ``src``, ``dst``, optional ``duration_us``).
    spec
        Miner settings; :class:`FlowMiningSpec` defaults when omitted.
    source
        Name used in error messages.

    Returns
    -------
    polars.DataFrame
        One row per (``caller`` A, ``service`` S, ``callee`` B) with ``inbound`` and
        ``outbound`` flow counts, ``after`` (outbound requests inside the windows after the
        inbound ones), ``expected`` (what unrelated traffic puts there: the local rate of
        S->B in a +-``band_ms`` band around each inbound request times the window),
        ``excess`` (= after - expected), ``z`` (excess over its Poisson noise),
        ``explained`` (excess / outbound, 0..1) and ``significant`` (``z >= min_z`` and
        ``explained > 0``). A service with several callers also gets a row with caller
        ``"*"`` that tests all its inbound requests together (a callee it calls once
        per trace, after whichever caller came last, is explained by the union).

    Raises
    ------
    InputFormatError
        A required column is missing.
    """
    spec = spec or FlowMiningSpec()
    f = _as_flows(flows, source)
    skew = spec.skew_ms * 1000.0
    span = _ts_range(f)
    lo, hi = (float(span[0]), float(span[1])) if span else (0.0, 0.0)
    groups: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for (src, dst), part in f.group_by(["src", "dst"], maintain_order=True):
        ts = part["ts_us"].to_numpy().astype(np.float64)
        dur = part["duration_us"].to_numpy()
        groups[(str(src), str(dst))] = (ts, dur)
    inbound: dict[str, list[str]] = {}
    outbound: dict[str, list[str]] = {}
    for a, b in groups:
        inbound.setdefault(b, []).append(a)
        outbound.setdefault(a, []).append(b)
    rows: list[dict[str, Any]] = []
    for s in sorted(set(inbound) & set(outbound)):
        callers = sorted(inbound[s])
        if len(callers) > 1:  # every inbound request of S together, as caller "*"
            t_all = np.concatenate([groups[(a, s)][0] for a in callers])
            d_all = np.concatenate([groups[(a, s)][1] for a in callers])
            order = np.argsort(t_all, kind="stable")
            groups[(ANY, s)] = (t_all[order], d_all[order])
            callers.append(ANY)
        for a in callers:
            t, d = groups[(a, s)]
            if len(t) < spec.min_flows:
                continue
            win = _windows(d, spec)
            band = np.maximum(spec.band_ms * 1000.0, 10.0 * win)
            for b in sorted(outbound[s]):
                u = groups[(s, b)][0]
                if len(u) < spec.min_flows:
                    continue
                a_lo, a_hi = t - skew, t + win + skew
                after = np.searchsorted(u, a_hi, "right") - np.searchsorted(u, a_lo, "left")
                b_lo = np.maximum(t - band, lo)
                b_hi = np.minimum(t + band, hi)
                in_band = np.searchsorted(u, b_hi, "right") - np.searchsorted(u, b_lo, "left")
                rest = np.maximum(b_hi - b_lo - (a_hi - a_lo), 1.0)
                share = (a_hi - a_lo) / rest
                expected = float(((in_band - after) * share).sum())
                na = int(after.sum())
                excess = na - expected
                # Poisson noise of the window count plus that of the band estimate
                z = excess / math.sqrt(expected * (1.0 + float(share.mean())) + 1.0)
                rows.append(
                    {
                        "caller": a,
                        "service": s,
                        "callee": b,
                        "inbound": len(t),
                        "outbound": len(u),
                        "after": na,
                        "expected": expected,
                        "excess": excess,
                        "z": z,
                        "explained": max(0.0, min(1.0, excess / len(u))),
                    }
                )
    schema = {
        "caller": pl.String,
        "service": pl.String,
        "callee": pl.String,
        "inbound": pl.Int64,
        "outbound": pl.Int64,
        "after": pl.Int64,
        "expected": pl.Float64,
        "excess": pl.Float64,
        "z": pl.Float64,
        "explained": pl.Float64,
    }
    out = pl.DataFrame(rows, schema=schema)
    return out.with_columns(
        ((pl.col("z") >= spec.min_z) & (pl.col("explained") > 0)).alias("significant")
    )


def _windows(dur: np.ndarray, spec: FlowMiningSpec) -> np.ndarray:
    """Per inbound request: how long after it an outbound request can be its consequence."""
    cap = spec.max_window_ms * 1000.0
    if dur is None or len(dur) == 0 or np.all(np.isnan(dur.astype(np.float64))):
        return np.full(len(dur) if dur is not None else 0, spec.window_ms * 1000.0)
    d = dur.astype(np.float64)
    fill = spec.window_ms * 1000.0
    return np.clip(np.where(np.isnan(d) | (d < 0), fill, d), 0.0, cap)


def mine_flows(
    flows: pl.DataFrame | pl.LazyFrame,
    spec: FlowMiningSpec | None = None,
    *,
    source: str = "<flows>",
) -> DependencyGraph:
    """Infer the service dependency graph from flows, without trace context.

    An edge S->B is kept when the inbound requests of S explain at least
    ``spec.min_confidence`` of S's requests to B (summed over the significant inbound
    callers, or all inbound requests taken together if that explains more; capped at 1);
    that share is the edge's ``confidence``. Requests from an
    origin (an endpoint that never receives traffic, such as a load generator) cannot be
    tested: their destinations become the entry points, and the origin is left out.

    Parameters
    ----------
    flows
        Canonical ``flows`` table.
    spec
        Miner settings (:class:`FlowMiningSpec` defaults when omitted).
    source
        Name used in error messages.

    Returns
    -------
    DependencyGraph
        Edges with ``calls``, ``rate_per_s``, latency percentiles from ``duration_us`` (NaN
        when absent), ``error_rate`` 0 (flows carry no status), ``kind`` ``'sync'`` and
        ``confidence``; ``meta['source'] == 'flows'``, ``meta['rejected']`` lists the pairs
        seen on the network but not explained by inbound traffic.

    Raises
    ------
    InputFormatError
        A required column is missing.
    """
    spec = spec or FlowMiningSpec()
    f = _as_flows(flows, source)
    scores = flow_dependencies(f, spec, source=source)
    dsts = set(f["dst"].unique().to_list())
    origins = sorted(set(f["src"].unique().to_list()) - dsts)
    span = _ts_range(f)
    window_s = (span[1] - span[0]) / 1e6 if span and span[1] > span[0] else None
    lat = pl.col("duration_us").cast(pl.Float64) / 1000.0
    stats = (
        f.group_by("src", "dst")
        .agg(
            pl.len().alias("calls"),
            lat.quantile(0.5, "linear").alias("p50_ms"),
            lat.quantile(0.99, "linear").alias("p99_ms"),
            lat.mean().alias("mean_ms"),
        )
        .sort("src", "dst")
    )
    real = pl.col("caller") != ANY
    conf = (
        scores.filter("significant")
        .group_by("service", "callee")
        .agg(
            pl.max_horizontal(
                pl.col("explained").filter(real).sum(),
                pl.col("explained").filter(~real).max().fill_null(0.0),
            )
            .clip(upper_bound=1.0)
            .alias("confidence"),
            pl.col("caller").filter(real).sort().alias("because_of"),
        )
    )
    conf_map = {(r["service"], r["callee"]): r for r in conf.iter_rows(named=True)}
    g = nx.DiGraph()
    entries: set[str] = set()
    rejected = []
    for r in stats.iter_rows(named=True):
        u, v = r["src"], r["dst"]
        if u in origins:
            entries.add(v)
            continue
        c = conf_map.get((u, v))
        confidence = float(c["confidence"]) if c else 0.0
        if r["calls"] < spec.min_flows or confidence < spec.min_confidence:
            rejected.append(
                {"caller": u, "callee": v, "calls": r["calls"], "confidence": confidence}
            )
            continue
        g.add_edge(
            u,
            v,
            calls=int(r["calls"]),
            rate_per_s=r["calls"] / window_s if window_s else math.nan,
            p50_ms=_nan(r["p50_ms"]),
            p99_ms=_nan(r["p99_ms"]),
            mean_ms=_nan(r["mean_ms"]),
            error_rate=0.0,
            kind="sync",
            confidence=confidence,
            because_of=list(c["because_of"]) if c else [],
        )
    for e in entries:
        g.add_node(e)
    for n in g.nodes:
        g.nodes[n]["entry"] = n in entries
    meta = {
        "source": "flows",
        "window_s": window_s,
        "flows": f.height,
        "origins": origins,
        "entry_requests": {
            e: int(f.filter((pl.col("dst") == e) & pl.col("src").is_in(origins)).height)
            for e in sorted(entries)
        },
        "rejected": rejected,
        "spec": spec.model_dump(),
    }
    meta["entry_traces"] = meta["entry_requests"]
    return DependencyGraph(g, sorted(entries), nx.DiGraph(), meta)


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)
