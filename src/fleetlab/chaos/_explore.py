"""Graph-guided fault search: single and pairwise dependency faults, in blast-radius order.

Filibuster/LDFI-style: a baseline run records which dependencies a request exercises;
faults are injected only where calls happen (a fault on a dependency nobody calls cannot
be observed); a pair is tried only when its second fault hits a call that happens while
the first is injected (fallbacks show up this way); and a set that contains a known
failing set is skipped, since its failure is implied. Each run injects the faults under
open-loop load through the proxies, measures the SLO and removes the faults (leased, so
they go away even if the explorer dies).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from fleetlab.chaos._client import ProxyClient
from fleetlab.chaos._experiment import _Ledger, rollback
from fleetlab.chaos._http import HttpPool
from fleetlab.chaos._load import open_loop, slo_check, summarize, to_frame
from fleetlab.chaos._proxy import LOOPBACK, check_allowed
from fleetlab.chaos._spec import LoadSpec, Slo
from fleetlab.errors import ConfigError, FleetlabError

if TYPE_CHECKING:
    import networkx as nx

FaultKind = Literal["down", "slow", "error"]


class GraphLike(Protocol):
    """What the explorer needs of a dependency graph (``fleetlab.depgraph.DependencyGraph``)."""

    graph: nx.DiGraph
    entry_points: list[str]


class ExploreSpec(BaseModel):
    """How to explore: fault kinds, load per run, SLO and limits.

    Attributes
    ----------
    kinds
        Single faults tried on each dependency: ``down`` (connections reset), ``slow``
        (``slow_ms`` added to every response) and ``error`` (HTTP ``error_status``).
    pair_kinds
        Kinds combined into pairs (both members); empty: singles only.
    rate_per_s, window_s, timeout_s
        Open-loop load on the entry per run: rate, measured window (s), request timeout.
    settle_s
        Pause after removing a run's faults before the next run (s).
    slo
        What counts as broken (defaults: p99 <= 300 ms and error rate <= 5 %).
    amplification
        A dependency receiving at least this many times its baseline calls per entry
        request under a fault is reported as a retry storm.
    max_runs
        Hard bound on fault runs (the baseline not counted).
    confirm_margin
        A run that breaks only a latency term, by less than this fraction of the limit,
        is run again and counts as failing only if the second run fails too (a short
        window's p99 is close to its maximum, so one scheduling stall can break it).
    lease_ttl_s
        Lease of a run's faults beyond its window and request timeout (seconds): if the
        explorer dies, the proxy drops them by itself.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: tuple[FaultKind, ...] = ("down", "slow", "error")
    pair_kinds: tuple[FaultKind, ...] = ("down",)
    slow_ms: float = Field(default=500.0, gt=0)
    error_status: int = Field(default=503, ge=400, le=599)
    rate_per_s: float = Field(default=40.0, gt=0, le=2000)
    window_s: float = Field(default=0.5, gt=0, le=600)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    settle_s: float = Field(default=0.05, ge=0, le=60)
    slo: Slo = Field(default_factory=lambda: Slo(p99_ms=300.0, error_rate=0.05))
    amplification: float = Field(default=3.0, gt=1)
    max_runs: int = Field(default=200, ge=1, le=10_000)
    confirm_margin: float = Field(default=0.5, ge=0)
    lease_ttl_s: float = Field(default=3.0, gt=0, le=600)


@dataclass
class ExploreResult:
    """The outcome of an exploration.

    Attributes
    ----------
    matrix
        The resilience matrix, one row per run: ``faults``, ``size``, ``requests``,
        ``error_rate``, ``p50_ms``, ``p99_ms``, one pass/fail column per SLO term
        (``slo_p99_ms``...), ``ok``, ``max_amplification``, ``amplified``, ``called``.
    minimal_failing
        Failing fault sets none of whose proper subsets fail (each a sorted list of
        ``service:kind``).
    findings
        Diagnoses: ``{service, finding, evidence}`` (missing timeout, retry storm, hard
        dependency, redundancy exhausted).
    order
        Services in the order explored (largest blast radius first) with their radius.
    metrics
        Runs, candidate space, runs saved by pruning (by reason), elapsed seconds.
    """

    matrix: pl.DataFrame
    minimal_failing: list[list[str]]
    findings: list[dict[str, Any]]
    order: list[dict[str, Any]]
    metrics: dict[str, Any]


def blast_order(graph: GraphLike, services: list[str]) -> list[dict[str, Any]]:
    """Dependencies sorted by blast radius: share of traffic, callers affected, calls in.

    Uses ``fleetlab.depgraph.blast_radius`` when ``graph`` is a ``DependencyGraph``.
    """
    from fleetlab.depgraph import DependencyGraph, blast_radius

    out = []
    for svc in services:
        if isinstance(graph, DependencyGraph):
            br = blast_radius(graph, svc)
            share, affected, calls = (
                br["share_of_traffic"],
                len(br["affected_services"]),
                br["calls_in"],
            )
        else:
            import networkx as nx

            affected = len(nx.ancestors(graph.graph, svc))
            calls = sum(d.get("calls", 0) for _, _, d in graph.graph.in_edges(svc, data=True))
            share = math.nan
        out.append(
            {
                "service": svc,
                "share_of_traffic": share,
                "affected": affected,
                "calls_in": int(calls),
            }
        )
    out.sort(
        key=lambda r: (
            -(0 if math.isnan(r["share_of_traffic"]) else r["share_of_traffic"]),
            -r["affected"],
            -r["calls_in"],
            r["service"],
        )
    )
    return out


def _toxic(kind: str, spec: ExploreSpec) -> dict[str, Any]:
    if kind == "down":
        return {"type": "down", "attributes": {}}
    if kind == "slow":
        return {"type": "latency", "attributes": {"latency": spec.slow_ms}}
    return {"type": "http_abort", "attributes": {"status": spec.error_status}}


def _label(fs: frozenset[tuple[str, str]]) -> str:
    return " + ".join(f"{s}:{k}" for s, k in sorted(fs))


def explore(
    graph: GraphLike,
    *,
    entry_url: str,
    api: str,
    proxies: Mapping[str, str] | None = None,
    spec: ExploreSpec | None = None,
    token: str | None = None,
    allow: tuple[str, ...] = LOOPBACK,
    on_run: Callable[[int, int, str], None] | None = None,
) -> ExploreResult:
    """Search the fault space of ``graph`` from ``entry_url`` and build the resilience matrix.

    Parameters
    ----------
    graph
        The dependency graph (``fleetlab.depgraph.DependencyGraph``); its dependencies
        (every service but the entry points) are the fault sites.
    entry_url
        URL loaded during each run (loopback unless ``allow`` says otherwise).
    api
        Control API of the proxies in front of the dependencies (fleetlab or Toxiproxy;
        with Toxiproxy, no request counts: no unexercised pruning, no amplification).
    proxies
        Service -> proxy name (default: the service's own name). Services without a
        proxy on the API are skipped.
    spec
        Fault kinds, load, SLO and limits.
    token, allow
        Control API token and the target allowlist.
    on_run
        ``on_run(done, planned, label)`` after each run (progress).

    Returns
    -------
    ExploreResult

    Raises
    ------
    SafetyError
        ``entry_url`` or ``api`` outside the allowlist.
    ConfigError
        No dependency of the graph has a proxy.
    """
    spec = spec or ExploreSpec()
    host = httpx.URL(entry_url).host
    check_allowed(host, allow, what="entry")
    loop = asyncio.new_event_loop()  # plain asyncio: uvloop would take over signals here
    try:
        with ProxyClient(api, token=token, allow=allow) as client:
            return loop.run_until_complete(
                _explore(graph, entry_url, client, dict(proxies or {}), spec, on_run)
            )
    finally:
        loop.close()


async def _stats(client: ProxyClient) -> dict[str, int]:
    doc = await asyncio.to_thread(client.proxies)
    return {n: int((p.get("stats") or {}).get("requests", -1)) for n, p in doc.items()}


async def _explore(
    graph: GraphLike,
    entry_url: str,
    client: ProxyClient,
    mapping: dict[str, str],
    spec: ExploreSpec,
    on_run: Callable[[int, int, str], None] | None,
) -> ExploreResult:
    t_start = time.monotonic()
    available = await asyncio.to_thread(client.proxies)
    entries = set(graph.entry_points)
    deps = [s for s in graph.graph.nodes if s not in entries]
    proxied = {s: mapping.get(s, s) for s in deps if mapping.get(s, s) in available}
    if not proxied:
        raise ConfigError(
            f"proxies: no dependency of the graph has a proxy on the API (services "
            f"{sorted(deps)}, proxies {sorted(available)})"
        )
    order = blast_order(graph, sorted(proxied))
    load = LoadSpec(url=entry_url, rate_per_s=spec.rate_per_s, timeout_s=spec.timeout_s)
    rows: list[dict[str, Any]] = []
    results: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    http = HttpPool()
    try:

        async def run(faults: frozenset[tuple[str, str]]) -> dict[str, Any]:
            ledger = _Ledger(holder=f"explore-{uuid.uuid4().hex}")
            before = await _stats(client)
            try:
                for svc, kind in sorted(faults):
                    t = _toxic(kind, spec)
                    name = f"explore-{kind}-{ledger.holder[-6:]}"
                    await asyncio.to_thread(
                        client.add_toxic,
                        proxied[svc],
                        t["type"],
                        name=name,
                        attributes=t["attributes"],
                        lease_holder=ledger.holder,
                        lease_ttl_s=spec.lease_ttl_s + spec.window_s + spec.timeout_s,
                    )
                    ledger.toxics.append((proxied[svc], name))
                t0 = time.monotonic()
                samples = await open_loop(load, spec.window_s, t0=t0, client=http)
            finally:
                await asyncio.to_thread(rollback, client, ledger)
            after = await _stats(client)
            summary = summarize(to_frame(samples))
            check = slo_check(summary, spec.slo)
            n = max(1, summary["requests"])
            per_req = {
                s: (after.get(p, -1) - before.get(p, -1)) / n
                for s, p in proxied.items()
                if before.get(p, -1) >= 0
            }
            await asyncio.sleep(spec.settle_s)
            return {"summary": summary, "check": check, "per_request": per_req}

        reruns = 0

        async def confirmed(fs: frozenset[tuple[str, str]]) -> dict[str, Any]:
            nonlocal reruns
            res = await run(fs)
            breaches = res["check"]["breaches"]
            marginal = bool(breaches) and all(
                b["slo"] in ("p50_ms", "p99_ms")
                and b["value"] < b["limit"] * (1.0 + spec.confirm_margin)
                for b in breaches
            )
            if marginal:
                reruns += 1
                again = await run(fs)
                if again["check"]["ok"]:
                    return again
            return res

        base = await run(frozenset())
        base_calls = base["per_request"]
        counted = bool(base_calls)
        exercised = {s for s, v in base_calls.items() if v > 0} if counted else set(proxied)
        rows.append(_row(frozenset(), base, base_calls, spec))
        if not base["check"]["ok"]:
            raise FleetlabError(
                f"entry {entry_url}: the system breaks its SLO with no fault injected "
                f"({base['check']['breaches']}); fix the steady state first"
            )

        ordered = [r["service"] for r in order]
        kinds = list(spec.kinds)
        space_singles = len(ordered) * len(kinds)
        space_pairs = math.comb(len(ordered), 2) * len(spec.pair_kinds) ** 2
        pruned = {"implied_by_failure": 0, "not_exercised": 0, "over_budget": 0}
        planned = space_singles
        done = 0
        for svc in ordered:
            for kind in kinds:
                if svc not in exercised:
                    pruned["not_exercised"] += 1
                    continue
                if done >= spec.max_runs:
                    pruned["over_budget"] += 1
                    continue
                fs = frozenset({(svc, kind)})
                res = await confirmed(fs)
                results[fs] = res
                rows.append(_row(fs, res, base_calls, spec))
                done += 1
                if on_run:
                    on_run(done, planned, _label(fs))
        failing_singles = {next(iter(fs)) for fs, r in results.items() if not r["check"]["ok"]}
        tried_pairs: set[frozenset[tuple[str, str]]] = set()
        for svc_a in ordered:
            for kind_a in spec.pair_kinds:
                a = (svc_a, kind_a)
                for svc_b in ordered:
                    if svc_b == svc_a:
                        continue
                    for kind_b in spec.pair_kinds:
                        b = (svc_b, kind_b)
                        fs = frozenset({a, b})
                        if fs in tried_pairs:
                            continue
                        tried_pairs.add(fs)
                        if a in failing_singles or b in failing_singles:
                            pruned["implied_by_failure"] += 1
                            continue
                        ra = results.get(frozenset({a}))
                        rb = results.get(frozenset({b}))
                        called_with_a = _called(ra, base_calls, counted, proxied)
                        called_with_b = _called(rb, base_calls, counted, proxied)
                        if not (
                            (svc_b in called_with_a and (svc_a in exercised or ra))
                            or (svc_a in called_with_b and (svc_b in exercised or rb))
                        ):
                            pruned["not_exercised"] += 1
                            continue
                        if done >= spec.max_runs:
                            pruned["over_budget"] += 1
                            continue
                        res = await confirmed(fs)
                        results[fs] = res
                        rows.append(_row(fs, res, base_calls, spec))
                        done += 1
                        if on_run:
                            on_run(done, planned, _label(fs))
    finally:
        http.close()

    matrix = pl.DataFrame(rows)
    failing = [fs for fs, r in results.items() if not r["check"]["ok"]]
    minimal = sorted(
        (
            sorted(f"{s}:{k}" for s, k in fs)
            for fs in failing
            if not any(other < fs for other in failing)
        ),
        key=lambda x: (len(x), x),
    )
    findings = _findings(results, base_calls, spec, failing_singles)
    candidates = space_singles + space_pairs
    metrics = {
        "runs": done,
        "confirmation_reruns": reruns,
        "candidates": candidates,
        "runs_saved": candidates - done,
        "pruned_implied_by_failure": pruned["implied_by_failure"],
        "pruned_not_exercised": pruned["not_exercised"],
        "pruned_over_budget": pruned["over_budget"],
        "failing_sets": len(failing),
        "minimal_failing_sets": len(minimal),
        "findings": len(findings),
        "elapsed_s": time.monotonic() - t_start,
        "baseline_p99_ms": base["summary"]["p99_ms"],
        "baseline_error_rate": base["summary"]["error_rate"],
    }
    return ExploreResult(matrix, minimal, findings, order, metrics)


def _called(
    res: dict[str, Any] | None, base: dict[str, float], counted: bool, proxied: dict[str, str]
) -> set[str]:
    if res is None:
        return set()
    if not counted:
        return set(proxied)
    return {s for s, v in res["per_request"].items() if v > 0}


def _row(
    fs: frozenset[tuple[str, str]], res: dict[str, Any], base: dict[str, float], spec: ExploreSpec
) -> dict[str, Any]:
    s = res["summary"]
    breached = {b["slo"] for b in res["check"]["breaches"]}
    amp_svc, amp = "", math.nan
    for svc, v in res["per_request"].items():
        b = base.get(svc, 0.0)
        ratio = v / b if b > 0 else (math.inf if v > 0 else math.nan)
        if not math.isnan(ratio) and (math.isnan(amp) or ratio > amp):
            amp_svc, amp = svc, ratio
    row: dict[str, Any] = {
        "faults": _label(fs) or "(none: baseline)",
        "size": len(fs),
        "requests": s["requests"],
        "error_rate": s["error_rate"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
    }
    for key in ("p50_ms", "p99_ms", "error_rate"):
        if getattr(spec.slo, key) is not None:
            row[f"slo_{key}"] = "fail" if key in breached else "pass"
    row["ok"] = res["check"]["ok"]
    row["max_amplification"] = None if math.isnan(amp) or math.isinf(amp) else round(amp, 2)
    row["amplified"] = amp_svc
    row["called"] = ",".join(sorted(x for x, v in res["per_request"].items() if v > 0))
    return row


def _findings(
    results: dict[frozenset[tuple[str, str]], dict[str, Any]],
    base: dict[str, float],
    spec: ExploreSpec,
    failing_singles: set[tuple[str, str]],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    services = sorted({s for fs in results for s, _ in fs})
    for svc in services:
        single = {k: results.get(frozenset({(svc, k)})) for k in ("down", "slow", "error")}
        slow, down, error = single["slow"], single["down"], single["error"]
        if (
            slow is not None
            and not slow["check"]["ok"]
            and all(r is not None and r["check"]["ok"] for r in (down, error))
        ):
            out.append(
                {
                    "service": svc,
                    "finding": "missing timeout",
                    "evidence": f"{svc}:slow breaks {_breach(slow)} while {svc}:down and "
                    f"{svc}:error are tolerated: the call is optional but "
                    "waited on without a timeout",
                }
            )
        for kind in ("error", "down"):
            r = single[kind]
            b = base.get(svc, 0.0)
            if r is None or b <= 0:
                continue
            ratio = r["per_request"].get(svc, 0.0) / b
            if ratio >= spec.amplification:
                out.append(
                    {
                        "service": svc,
                        "finding": "retry storm",
                        "evidence": f"under {svc}:{kind} it receives {ratio:.1f}x its "
                        "baseline calls per request (retries without backoff)",
                    }
                )
                break
        hard = [
            k
            for k in ("down", "error")
            if (svc, k) in failing_singles
            and "error_rate" in {b["slo"] for b in single[k]["check"]["breaches"]}
        ]
        if hard:
            out.append(
                {
                    "service": svc,
                    "finding": "hard dependency",
                    "evidence": f"{' and '.join(f'{svc}:{k}' for k in hard)} fail requests "
                    "(error-rate SLO): the entry cannot serve without it",
                }
            )
    for fs, r in results.items():
        if len(fs) == 2 and not r["check"]["ok"] and not any(x in failing_singles for x in fs):
            out.append(
                {
                    "service": " + ".join(sorted(s for s, _ in fs)),
                    "finding": "redundancy exhausted",
                    "evidence": f"{_label(fs)} breaks {_breach(r)} though each alone is "
                    "tolerated (a fallback and its primary fail together)",
                }
            )
    return out


def _breach(res: dict[str, Any]) -> str:
    return ", ".join(
        f"{b['slo']} ({_fmt(b['value'])} > {_fmt(b['limit'])})" for b in res["check"]["breaches"]
    )


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
