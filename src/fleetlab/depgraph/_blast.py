"""Blast radius, single points of failure, cycles and graph diffs."""

from __future__ import annotations

import difflib
import math
import statistics
from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np
from scipy import sparse

from fleetlab.depgraph._graph import DependencyGraph
from fleetlab.depgraph._rca import MIN_WINDOWS, consensus_rows, early_return_evidence
from fleetlab.depgraph._rca import handled as _handled
from fleetlab.errors import DataNotFoundError


def _check_service(graph: DependencyGraph, service: str) -> None:
    if service not in graph.graph:
        close = difflib.get_close_matches(service, graph.services, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataNotFoundError(
            f"service {service!r} is not in the graph ({graph.graph.number_of_nodes()} "
            f"services){hint}"
        )


def _dependency_view(graph: DependencyGraph, *, through_async: bool) -> nx.DiGraph:
    if through_async:
        return graph.graph
    keep = [(u, v) for u, v, d in graph.graph.edges(data=True) if d.get("kind") != "async"]
    return graph.graph.edge_subgraph(keep).copy() if keep else nx.DiGraph()


def _entry_weights(graph: DependencyGraph) -> dict[str, float]:
    """Requests entering at each entry point (root spans, or the entry's outbound calls)."""
    g = graph.graph
    counts = graph.meta.get("entry_traces") or {}
    out: dict[str, float] = {}
    for e in graph.entry_points:
        if e in counts:
            out[e] = float(counts[e])
        elif e in g:
            inbound = sum(d.get("calls", 0) for _, _, d in g.in_edges(e, data=True))
            outbound = max((d.get("calls", 0) for _, _, d in g.out_edges(e, data=True)), default=0)
            out[e] = float(inbound or outbound or 1)
    return out


def reach_probabilities(graph: DependencyGraph, entry: str) -> dict[str, float]:
    """Probability that a request entering at ``entry`` reaches each service.

    Each edge u->v passes a request on with probability min(1, calls(u->v) / requests
    handled by u); paths combine as independent events. Cycles are iterated to a fixed
    point (at most 200 rounds, vectorised over edges).

    Returns
    -------
    dict
        service -> probability in 0..1 (services never reached are absent).
    """
    return _reach_all(graph, graph.graph, [entry])[entry]


def _reach_all(
    graph: DependencyGraph, view: nx.DiGraph, entries: list[str]
) -> dict[str, dict[str, float]]:
    """:func:`reach_probabilities` for several entries at once (numpy over edges)."""
    g = graph.graph
    nodes = sorted(view.nodes)
    if not nodes or not entries:
        return {e: {e: 1.0} for e in entries}
    idx = {n: i for i, n in enumerate(nodes)}
    weights = _entry_weights(graph)
    handled = np.zeros(len(nodes))
    for n in nodes:
        inbound = sum(d.get("calls", 0) for _, _, d in g.in_edges(n, data=True))
        handled[idx[n]] = inbound + (weights.get(n, 0.0) if n in graph.entry_points else 0.0)
    src, dst, w = [], [], []
    for u, v, d in view.edges(data=True):
        if handled[idx[u]] > 0:
            src.append(idx[u])
            dst.append(idx[v])
            w.append(min(1.0, d.get("calls", 0) / handled[idx[u]]))
    src_a, dst_a, w_a = np.asarray(src, int), np.asarray(dst, int), np.asarray(w, float)
    rows = [idx[e] for e in entries if e in idx]
    p = np.zeros((len(rows), len(nodes)))
    p[np.arange(len(rows)), rows] = 1.0
    # edge -> callee incidence: summing log-miss terms of in-edges is one sparse product
    into = sparse.csr_matrix(
        (np.ones(len(dst_a)), (np.arange(len(dst_a)), dst_a)), shape=(len(dst_a), len(nodes))
    )
    for _ in range(200):
        terms = np.log1p(-np.clip(p[:, src_a] * w_a, 0.0, 1.0 - 1e-15))
        new = -np.expm1(np.asarray((into.T @ terms.T).T))
        new[np.arange(len(rows)), rows] = 1.0
        if np.max(np.abs(new - p)) < 1e-9:
            p = new
            break
        p = new
    out: dict[str, dict[str, float]] = {}
    for r, e in enumerate(e for e in entries if e in idx):
        out[e] = {nodes[i]: float(p[r, i]) for i in np.nonzero(p[r] > 0)[0]}
    for e in entries:
        out.setdefault(e, {e: 1.0})
    return out


def blast_radius(
    graph: DependencyGraph, service: str, *, through_async: bool = True
) -> dict[str, Any]:
    """What fails, upstream, when ``service`` fails.

    Parameters
    ----------
    graph
        A mined dependency graph.
    service
        The failing service.
    through_async
        Let failures propagate over asynchronous edges too (conservative; default).

    Returns
    -------
    dict
        ``service``; ``affected_services`` (sorted callers that transitively depend on it);
        ``downstream`` (what it depends on); ``entry_points`` (entry points that reach it);
        ``share_of_traffic`` (0..1, share of all entering requests whose call tree touches
        it); ``share_by_entry`` (entry -> share of that entry's requests); ``calls_in``
        (observed calls into it); ``method``: ``'traces'`` when exact per-trace counts were
        mined from spans, ``'propagation'`` when estimated from edge call counts.

    Raises
    ------
    DataNotFoundError
        ``service`` is not in the graph (the message suggests close names).
    """
    _check_service(graph, service)
    view = _dependency_view(graph, through_async=through_async)
    return _radius(graph, service, view, through_async, {}, _entry_weights(graph))


def _radius(
    graph: DependencyGraph,
    service: str,
    view: nx.DiGraph,
    through_async: bool,
    reach_cache: dict[str, dict[str, float]],
    weights: dict[str, float],
) -> dict[str, Any]:
    up = nx.ancestors(view, service) if service in view else set()
    down = nx.descendants(view, service) if service in view else set()
    entries = [e for e in graph.entry_points if e == service or e in up]
    node = graph.graph.nodes[service]
    by_entry_exact = node.get("traces_by_entry")
    share_by_entry: dict[str, float] = {}
    if by_entry_exact and through_async and graph.meta.get("entry_traces"):
        method = "traces"
        for e in entries:
            share_by_entry[e] = by_entry_exact.get(e, 0) / max(1.0, weights.get(e, 1.0))
    else:
        method = "propagation"
        missing = [e for e in entries if e not in reach_cache]
        if missing:
            reach_cache.update(_reach_all(graph, view, missing))
        for e in entries:
            share_by_entry[e] = 1.0 if e == service else reach_cache[e].get(service, 0.0)
    total = sum(weights.values())
    share = (
        sum(weights.get(e, 0.0) * s for e, s in share_by_entry.items()) / total if total else 0.0
    )
    calls_in = sum(d.get("calls", 0) for _, _, d in graph.graph.in_edges(service, data=True))
    return {
        "service": service,
        "affected_services": sorted(up),
        "downstream": sorted(down),
        "entry_points": sorted(entries),
        "share_of_traffic": min(1.0, share),
        "share_by_entry": {e: min(1.0, s) for e, s in sorted(share_by_entry.items())},
        "calls_in": int(calls_in),
        "method": method,
    }


def blast_radii(graph: DependencyGraph, *, through_async: bool = True) -> list[dict[str, Any]]:
    """:func:`blast_radius` of every service, largest share of traffic first.

    Returns
    -------
    list of dict
        One row per service: ``service``, ``share_of_traffic``, ``affected`` (number of
        upstream services), ``entry_points`` (number), ``calls_in``.
    """
    rows = []
    view = _dependency_view(graph, through_async=through_async)
    weights = _entry_weights(graph)
    cache: dict[str, dict[str, float]] = {}
    if not graph.graph.nodes or not all(
        "traces_by_entry" in d for _, d in graph.graph.nodes(data=True)
    ):
        cache = _reach_all(graph, view, [e for e in graph.entry_points if e in view])
    for s in graph.services:
        b = _radius(graph, s, view, through_async, cache, weights)
        rows.append(
            {
                "service": s,
                "share_of_traffic": b["share_of_traffic"],
                "affected": len(b["affected_services"]),
                "entry_points": len(b["entry_points"]),
                "calls_in": b["calls_in"],
            }
        )
    return sorted(rows, key=lambda r: (-r["share_of_traffic"], -r["affected"], r["service"]))


def single_points_of_failure(graph: DependencyGraph) -> list[dict[str, Any]]:
    """Services whose failure cuts an entry point off from a service it needs.

    A service ``s`` is a single point of failure for entry ``e`` when every path from ``e``
    to some other service goes through ``s`` (``s`` dominates it in the call graph rooted at
    ``e``), so no alternative path remains when it fails. Entry points are not listed.

    Returns
    -------
    list of dict
        ``service``, ``entry_points`` it dominates something for, ``cut_off`` (sorted
        services that become unreachable), sorted by the number cut off.
    """
    g = graph.graph
    found: dict[str, dict[str, set[str]]] = {}
    for e in graph.entry_points:
        if e not in g:
            continue
        idom = nx.immediate_dominators(g, e)
        for v in idom:
            if v == e:
                continue
            d = idom[v]
            while d != e:
                slot = found.setdefault(d, {"entries": set(), "cut": set()})
                slot["entries"].add(e)
                slot["cut"].add(v)
                d = idom[d]
    rows = [
        {"service": s, "entry_points": sorted(v["entries"]), "cut_off": sorted(v["cut"])}
        for s, v in found.items()
        if s not in graph.entry_points
    ]
    return sorted(rows, key=lambda r: (-len(r["cut_off"]), r["service"]))


def cycles(graph: DependencyGraph, *, limit: int = 100) -> list[dict[str, Any]]:
    """Call cycles (services that transitively call themselves), up to ``limit`` of them.

    Returns
    -------
    list of dict
        ``services`` (the cycle, starting at its smallest name), ``length``, ``async``
        (whether some edge on it is asynchronous, e.g. through a queue).
    """
    out = []
    for cyc in nx.simple_cycles(graph.graph):
        i = cyc.index(min(cyc))
        cyc = cyc[i:] + cyc[:i]
        hops = list(zip(cyc, cyc[1:] + cyc[:1], strict=True))
        is_async = any(graph.graph.edges[u, v].get("kind") == "async" for u, v in hops)
        out.append({"services": cyc, "length": len(cyc), "async": is_async})
        if len(out) >= limit:
            break
    return sorted(out, key=lambda c: (c["length"], c["services"]))


def diff_graphs(
    before: DependencyGraph,
    after: DependencyGraph,
    *,
    latency_ratio: float = 1.5,
    error_delta: float = 0.05,
    min_calls: int = 5,
    references: Sequence[DependencyGraph] = (),
) -> dict[str, Any]:
    """What changed between two graphs (two time windows, two deployments).

    Parameters
    ----------
    before, after
        The two graphs.
    latency_ratio
        Report an edge whose p50 or p99 grew or shrank by at least this factor.
    error_delta
        Report an edge whose error rate moved by at least this much (absolute, 0..1).
    min_calls
        Only compare latency/errors on edges with at least this many calls on both sides.
    references
        More windows of (mostly) normal behaviour, e.g. the other recent windows of the
        same system. Then the suspects are scored against ``before`` and each reference,
        and every field of a suspect row is the median over them: a service must stand
        out against most windows, so neither drift nor an incident in one window makes a
        suspect. With at least 5 windows in all, the suspects also get the early-return
        evidence of code-level faults, calibrated by the spread of the windows (see
        ``fleetlab.depgraph._rca``). The edge lists compare ``before`` and ``after`` only.

    Returns
    -------
    dict
        ``added_edges``, ``removed_edges`` (lists of ``[caller, callee]``),
        ``added_services``, ``removed_services``, ``changed_edges`` (rows with
        before/after p50, p99, error rate, calls and their ratios, largest change first),
        and ``suspects``: services ranked by how much of the change is their own (see
        :func:`_suspects`), each row with ``score``, ``self_latency_log2`` (growth of their
        own time), ``network_in_log2`` / ``network_out_log2`` (growth of the network gap
        on calls into / out of them), ``unexplained_error_rate`` (errors their callees do
        not explain) and ``call_mix_change`` (calls per handled request); with 5 or more
        windows also ``lost_calls_share``, ``lost_calls_z``, ``entry_p50_z``,
        ``kept_callees`` and ``early_return`` (the part of the score that early-return
        evidence adds).
    """
    a, b = before.graph, after.graph
    ea, eb = set(a.edges), set(b.edges)
    changed = _changed_edges(before, after, latency_ratio, error_delta, min_calls)
    baselines = [before, *references]
    if len(baselines) == 1:
        suspects = _suspects(before, after, changed)
    else:
        per = [
            _suspects(ref, after, _changed_edges(ref, after, latency_ratio, error_delta, min_calls))
            for ref in baselines
        ]
        suspects = consensus_rows(per)
        if len(baselines) >= MIN_WINDOWS:
            evidence = early_return_evidence(baselines, after)
            for row in suspects:
                ev = evidence.get(row["service"])
                if ev is None:
                    ev = dict.fromkeys(
                        (
                            "lost_calls_share",
                            "lost_calls_z",
                            "entry_p50_z",
                            "kept_callees",
                            "early_return",
                        ),
                        0.0,
                    )
                row.update({k: round(v, 4) for k, v in ev.items()})
                row["score"] = round(row["score"] + ev["early_return"], 4)
        suspects.sort(key=lambda r: (-r["score"], r["service"]))
    return {
        "added_edges": [list(e) for e in sorted(eb - ea)],
        "removed_edges": [list(e) for e in sorted(ea - eb)],
        "added_services": sorted(set(b) - set(a)),
        "removed_services": sorted(set(a) - set(b)),
        "changed_edges": changed,
        "suspects": suspects,
    }


def _changed_edges(
    before: DependencyGraph,
    after: DependencyGraph,
    latency_ratio: float,
    error_delta: float,
    min_calls: int,
) -> list[dict[str, Any]]:
    """Edges in both graphs whose latency or error rate moved, largest change first."""
    a, b = before.graph, after.graph
    changed = []
    for u, v in sorted(set(a.edges) & set(b.edges)):
        x, y = a.edges[u, v], b.edges[u, v]
        if min(x.get("calls", 0), y.get("calls", 0)) < min_calls:
            continue
        r50 = _ratio(y.get("p50_ms"), x.get("p50_ms"))
        r99 = _ratio(y.get("p99_ms"), x.get("p99_ms"))
        de = float(y.get("error_rate", 0.0)) - float(x.get("error_rate", 0.0))
        worst = max(_fold(r50), _fold(r99))
        if worst >= latency_ratio or abs(de) >= error_delta:
            changed.append(
                {
                    "caller": u,
                    "callee": v,
                    "calls_before": x.get("calls", 0),
                    "calls_after": y.get("calls", 0),
                    "p50_ms_before": x.get("p50_ms"),
                    "p50_ms_after": y.get("p50_ms"),
                    "p99_ms_before": x.get("p99_ms"),
                    "p99_ms_after": y.get("p99_ms"),
                    "p50_ratio": r50,
                    "p99_ratio": r99,
                    "error_rate_before": x.get("error_rate", 0.0),
                    "error_rate_after": y.get("error_rate", 0.0),
                    "score": worst + 10 * abs(de),
                }
            )
    changed.sort(key=lambda r: -r["score"])
    return changed


def _ratio(new: Any, old: Any) -> float:
    try:
        new, old = float(new), float(old)
    except (TypeError, ValueError):
        return math.nan
    if not (math.isfinite(new) and math.isfinite(old)) or old <= 0 or new <= 0:
        return math.nan
    return new / old


def _fold(r: float) -> float:
    """A ratio folded so that x2 and x0.5 both read 2; NaN reads 1."""
    if not math.isfinite(r):
        return 1.0
    return r if r >= 1 else 1.0 / r


def _log2_ratio(new: Any, old: Any) -> float:
    r = _ratio(new, old)
    return math.log2(r) if math.isfinite(r) else 0.0


def _network_shifts(a: nx.DiGraph, b: nx.DiGraph) -> tuple[dict[str, float], dict[str, float]]:
    """Blame for the growth of the network/queueing gap of calls (edge ``net_ms_mean``).

    A gap sits between two services: a slow link or a delayed pod (callee side) grows it
    on every call into that service, a starved caller on every call it makes. So the
    growth (log2) on an edge u->v counts for v only beyond what u's other outgoing edges
    grew by (their median), and u's own score is the median growth over all its
    outgoing edges (at least two). Returns (score as callee, score as caller).
    """
    shift: dict[tuple[str, str], float] = {}
    for u, v in set(a.edges) & set(b.edges):
        r = _ratio(b.edges[u, v].get("net_ms_mean"), a.edges[u, v].get("net_ms_mean"))
        if math.isfinite(r):
            shift[u, v] = max(0.0, math.log2(r))
    outs: dict[str, list[tuple[str, float]]] = {}
    for (u, v), x in shift.items():
        outs.setdefault(u, []).append((v, x))
    net_out = {
        u: float(statistics.median([x for _, x in xs])) for u, xs in outs.items() if len(xs) >= 2
    }
    acc: dict[str, list[float]] = {}
    for (u, v), x in shift.items():
        others = [y for w, y in outs[u] if w != v]
        base = float(statistics.median(others)) if others else 0.0
        w = float(b.edges[u, v].get("calls", 1))
        acc.setdefault(v, [0.0, 0.0])
        acc[v][0] += w * max(0.0, x - base)
        acc[v][1] += w
    net_in = {v: t / n for v, (t, n) in acc.items() if n > 0}
    return net_in, net_out


def _own_ms(node: dict[str, Any]) -> float:
    """Exclusive time of a service minus what its client spans wait on the network."""
    own = float(node.get("self_ms_mean") or math.nan)
    net = node.get("net_out_ms_mean")
    if net is not None and math.isfinite(float(net)):
        own -= float(net)
    return own


def _suspects(
    before: DependencyGraph, after: DependencyGraph, changed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rank services by how much of the change between two graphs is their own.

    Per service present in both graphs: the growth (log2) of its own time (exclusive time
    minus what its client spans wait on the network, ``net_out_ms_mean``), or of its
    entry-span p50 when exclusive time was not mined; the growth of the network/queueing
    gap on calls into it or out of it, whichever is larger (see :func:`_network_shifts`);
    the rise of its error rate beyond what its callees' errors explain; how much its call
    mix per handled request changed (sum of |log2| changes of calls(s->v)/requests(s), new
    and vanished callees count 1); and a share of the latency shifts on calls into it,
    only when none of its own calls shifted (blame goes to the deepest shifted service).
    """
    a, b = before.graph, after.graph
    ea, eb = before.meta.get("entry_traces") or {}, after.meta.get("entry_traces") or {}
    into: dict[str, float] = {}
    for r in changed:
        into[r["callee"]] = into.get(r["callee"], 0.0) + 0.1 * r["score"]
    shifted_callers = {r["caller"] for r in changed}
    net_in, net_out = _network_shifts(a, b)
    rows = []
    for s in sorted(set(a) & set(b)):
        na, nb = a.nodes[s], b.nodes[s]
        if "self_ms_mean" in na and "self_ms_mean" in nb:
            lat = max(0.0, _log2_ratio(_own_ms(nb), _own_ms(na)))
        else:
            lat = max(0.0, _log2_ratio(nb.get("p50_ms"), na.get("p50_ms")))
        de = float(nb.get("error_rate") or 0.0) - float(na.get("error_rate") or 0.0)
        callee_de = [
            float(b.nodes[c].get("error_rate") or 0.0) - float(a.nodes[c].get("error_rate") or 0.0)
            for c in set(a.successors(s)) & set(b.successors(s))
        ]
        err = max(0.0, de - max([0.0, *callee_de]))
        ha, hb = _handled(a, s, ea), _handled(b, s, eb)
        mix = 0.0
        if ha > 0 and hb > 0:
            for v in set(a.successors(s)) | set(b.successors(s)):
                ca = a.edges[s, v]["calls"] / ha if a.has_edge(s, v) else 0.0
                cb = b.edges[s, v]["calls"] / hb if b.has_edge(s, v) else 0.0
                mix += 1.0 if ca == 0 or cb == 0 else min(1.0, abs(math.log2(cb / ca)))
        n_in, n_out = net_in.get(s, 0.0), net_out.get(s, 0.0)
        net = max(n_in, n_out)
        # inclusive latency shifts on calls into a service blame it only when none of its
        # own calls shifted (the deepest shifted service): a slow callee would otherwise
        # blame every caller above it
        inc = 0.0 if s in shifted_callers else into.get(s, 0.0)
        score = lat + net + 5.0 * err + 0.1 * mix + inc
        rows.append(
            {
                "service": s,
                "score": round(score, 4),
                "self_latency_log2": round(lat, 4),
                "network_in_log2": round(n_in, 4),
                "network_out_log2": round(n_out, 4),
                "unexplained_error_rate": round(err, 4),
                "call_mix_change": round(mix, 4),
            }
        )
    return sorted(rows, key=lambda r: (-r["score"], r["service"]))
