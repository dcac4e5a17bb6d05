"""Fault localisation against several reference windows (used by ``diff_graphs``).

One "before" window is a fragile baseline: services drift over a day (a growing table
makes a database call slower every hour) and any window may hold an unrelated incident.
With several reference windows, each service's suspect evidence is computed against
every one of them and the median is kept (:func:`consensus_rows`): a service must stand
out against most of them to be suspected, so neither one drifting window nor one faulty
window makes a suspect.

Several windows also tell how much each service normally varies, which calibrates the
structural evidence of code-level faults (:func:`early_return_evidence`): an exception or
an injected early return cuts the code path short, so the service stops making calls it
usually makes for the requests it handles, and its own latency falls. Both are measured
per service against the spread of the reference windows (robust z-scores: median and
MAD), so a service whose call mix always varies (a business flow that often aborts on
bad input) does not look anomalous. The vanished calls are blamed on a service only when
it is the deepest one the cut reaches: if it still calls another service as usual, that
service's answer (a wrong return value) may be what made it bail out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import polars as pl

from fleetlab.depgraph._graph import DependencyGraph


def split_at(spans: pl.DataFrame, at_us: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The spans of the traces whose roots start before ``at_us``, and of the others.

    What to diff around an incident (a fault injected at ``at_us``): whole traces go to
    one side, so a trace that straddles the instant is not cut in two. Traces without a
    root span (broken traces) go to neither side.
    """
    t0 = (
        spans.filter(pl.col("parent_id").is_null())
        .group_by("trace_id")
        .agg(pl.col("start_us").min().alias("t0"))
    )
    before = spans.join(t0.filter(pl.col("t0") < at_us), on="trace_id", how="semi")
    after = spans.join(t0.filter(pl.col("t0") >= at_us), on="trace_id", how="semi")
    return before, after


#: fewest windows (``before`` plus references) whose spread calibrates a z-score
MIN_WINDOWS = 5
#: MAD -> standard deviation for normally distributed values
_MAD_SCALE = 1.4826
#: resolution floors of the z-scores: a 2 % share of a service's calls, and 0.05 in
#: log2 latency (3.5 %), so that a service that never varies is not infinitely sensitive
_SHARE_FLOOR = 0.02
_LOG2_FLOOR = 0.05
#: weight of the early-return evidence in the suspect score (per unit of z)
EARLY_RETURN_WEIGHT = 0.3
#: the entry latency must fall by at least this many robust standard deviations
_FASTER_Z = -1.0
#: a callee still called at this share of its usual rate was "kept" (reached before the cut)
_KEPT = 0.8
#: fewest requests a service must handle in a window to profile its outgoing calls
_MIN_HANDLED = 5


def handled(g: nx.DiGraph, service: str, entry_traces: Mapping[str, Any]) -> float:
    """Requests a service handled: calls into it plus traces that entered there."""
    inbound = sum(d.get("calls", 0) for _, _, d in g.in_edges(service, data=True))
    return float(inbound + (entry_traces.get(service, 0) or 0))


def _service_of(node: str, services: Sequence[str]) -> str | None:
    """The service of an operation-graph node ``"service:operation"`` (longest match)."""
    best = None
    for s in services:
        if node.startswith(s + ":") and (best is None or len(s) > len(best)):
            best = s
    return best


def _owners(nodes: Sequence[str], services: Sequence[str]) -> dict[str, str | None]:
    """Service of each operation-graph node (a split at ":" unless a service has one)."""
    names = set(services)
    if any(":" in s for s in names):
        by_len = sorted(names, key=len, reverse=True)
        return {n: _service_of(n, by_len) for n in nodes}
    heads = {n: n.split(":", 1)[0] for n in nodes}
    return {n: h if h in names else None for n, h in heads.items()}


def outgoing_profile(graph: DependencyGraph) -> dict[str, dict[str, float]]:
    """Calls each service makes per request it handles, by callee operation.

    From the operation graph (callee ``"service:operation"``) when it was mined, else from
    the service graph (callee service). Services that handled fewer than 5 requests are
    left out (too few to profile).

    Returns
    -------
    dict
        service -> {callee -> calls per handled request}.
    """
    g = graph.graph
    entry = graph.meta.get("entry_traces") or {}
    requests = {s: handled(g, s, entry) for s in g}
    out: dict[str, dict[str, float]] = {s: {} for s, n in requests.items() if n >= _MIN_HANDLED}
    ops = graph.operations
    if ops.number_of_edges():
        owner = _owners(list(ops.nodes), list(g.nodes))
        for u, v, d in ops.edges(data=True):
            s = owner[u]
            if s in out and owner[v] != s:
                out[s][v] = out[s].get(v, 0.0) + d.get("calls", 0) / requests[s]
    else:
        for s in out:
            for v in g.successors(s):
                out[s][v] = g.edges[s, v].get("calls", 0) / requests[s]
    return out


def lost_share(usual: Mapping[str, float], seen: Mapping[str, float]) -> float | None:
    """Share of the usual outgoing calls that did not happen (0..1; None: no usual calls).

    Only calls that fell short count (a new or more frequent call is no evidence of a
    truncated code path).
    """
    total = sum(usual.values())
    if total <= 0:
        return None
    return sum(max(0.0, x - seen.get(v, 0.0)) for v, x in usual.items()) / total


def _robust_z(value: float, refs: Sequence[float], floor: float) -> float:
    arr = np.asarray(refs, dtype=float)
    med = float(np.median(arr))
    mad = _MAD_SCALE * float(np.median(np.abs(arr - med)))
    return (value - med) / (mad + floor)


def early_return_evidence(
    baselines: Sequence[DependencyGraph], after: DependencyGraph
) -> dict[str, dict[str, float]]:
    """Per service: did it stop making its usual calls while getting faster?

    The usual profile of a service is the median, over the baseline windows, of the calls
    it makes per handled request to each callee operation (:func:`outgoing_profile`).
    ``lost_calls_share`` is the share of that profile missing in ``after``;
    ``lost_calls_z`` compares it with the share each baseline window itself misses (its
    normal variation); ``entry_p50_z`` is the robust z-score of log2 of its entry-span
    p50 against the baselines; ``kept_callees`` counts the other services it still calls
    as usual (an operation of theirs at >= 80 % of its usual rate). ``early_return`` =
    0.3 x ``lost_calls_z`` when the calls were lost beyond normal (z > 0) while the entry
    latency fell (z < -1) and no callee was kept, else 0: a service that fails or returns
    early skips its remaining downstream calls and answers sooner (a slow callee would
    leave it waiting, not faster). When it still calls some service C as usual, the cut
    may have come from C's answer (a wrong return value that makes the caller bail out:
    OnlineBoutique's frontend after a productcatalogservice ``return`` fault), which the
    graph cannot tell apart, so the vanished calls are blamed on the service only when it
    is the deepest one the cut reaches.

    Needs at least 5 baseline windows in which the service handled requests (else the
    service gets no row).

    Returns
    -------
    dict
        service -> ``lost_calls_share``, ``lost_calls_z``, ``entry_p50_z``, ``early_return``.
    """
    profiles = [outgoing_profile(b) for b in baselines]
    seen = outgoing_profile(after)
    every_callee = {v for p in [*profiles, seen] for r in p.values() for v in r}
    owner = _owners(sorted(every_callee), list(after.graph.nodes))
    out: dict[str, dict[str, float]] = {}
    for s, calls in seen.items():
        refs = [p[s] for p in profiles if s in p]
        if len(refs) < MIN_WINDOWS:
            continue
        callees = sorted({v for r in refs for v in r})
        usual = {v: float(np.median([r.get(v, 0.0) for r in refs])) for v in callees}
        lost = lost_share(usual, calls)
        if lost is None:
            continue
        ref_lost = [x for x in (lost_share(usual, r) for r in refs) if x is not None]
        z_lost = _robust_z(lost, ref_lost, _SHARE_FLOOR)
        p50s = [_log2(b.graph.nodes[s].get("p50_ms")) for b in baselines if s in b.graph]
        p50s = [x for x in p50s if math.isfinite(x)]
        now = _log2(after.graph.nodes[s].get("p50_ms"))
        z_p50 = (
            _robust_z(now, p50s, _LOG2_FLOOR)
            if len(p50s) >= MIN_WINDOWS and math.isfinite(now)
            else 0.0
        )
        kept = _kept_callees(usual, calls, s, owner)
        cut = z_lost > 0 and z_p50 < _FASTER_Z and not kept
        score = EARLY_RETURN_WEIGHT * z_lost if cut else 0.0
        out[s] = {
            "lost_calls_share": lost,
            "lost_calls_z": z_lost,
            "entry_p50_z": z_p50,
            "kept_callees": float(len(kept)),
            "early_return": score,
        }
    return out


def _kept_callees(
    usual: Mapping[str, float],
    seen: Mapping[str, float],
    service: str,
    owner: Mapping[str, str | None],
) -> list[str]:
    """Other services with an operation ``service`` still calls at >= 80 % of its usual rate."""
    kept = set()
    for callee, x in usual.items():
        t = owner.get(callee) or callee
        if t != service and x > 0 and seen.get(callee, 0.0) >= _KEPT * x:
            kept.add(t)
    return sorted(kept)


def _log2(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return math.log2(v) if math.isfinite(v) and v > 0 else math.nan


def consensus_rows(per_baseline: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Median, per service and per numeric field, of suspect rows scored per baseline.

    A service is kept when it was scored against at least half of the baselines (a
    service that is new in ``after`` is compared where it exists).
    """
    by_service: dict[str, list[dict[str, Any]]] = {}
    for rows in per_baseline:
        for r in rows:
            by_service.setdefault(r["service"], []).append(r)
    need = math.ceil(len(per_baseline) / 2)
    out = []
    for s, rows in by_service.items():
        if len(rows) < need:
            continue
        merged: dict[str, Any] = {"service": s}
        for k in rows[0]:
            if k != "service":
                merged[k] = round(float(np.median([r[k] for r in rows])), 4)
        out.append(merged)
    return out
