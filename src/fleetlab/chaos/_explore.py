"""Graph-guided fault search: single and pairwise dependency faults, in blast-radius order.

Filibuster/LDFI-style: a baseline run records which dependencies a request exercises;
faults are injected only where calls happen (a fault on a dependency nobody calls cannot
be observed); a pair is tried only when its second fault hits a call that happens while
the first is injected (fallbacks show up this way); and a set that contains a known
failing set is skipped, since its failure is implied. Every run is a real experiment
through :func:`run_experiment`: steady-state hypothesis under the open-loop load, the
fault set as its method, guaranteed (leased) rollback, a journal; the resilience matrix
is built from those journals and the exploration's journal lists every one.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from fleetlab.chaos._client import ProxyClient
from fleetlab.chaos._experiment import run_experiment
from fleetlab.chaos._proxy import LOOPBACK, check_allowed
from fleetlab.chaos._spec import (
    AbortSpec,
    Experiment,
    Fault,
    LoadSpec,
    ProxyTarget,
    Slo,
    SteadyState,
    ToxicSpec,
)
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
        Open-loop load on the entry per run: rate, how long each fault set is injected
        and measured (s; the baseline's steady-state window too), request timeout.
    steady_window_s
        Steady-state window of each fault experiment, before and after its method (s):
        the hypothesis is checked under the same load before anything is injected and
        again after the rollback.
    settle_s
        Recovery pause of each experiment between its rollback and its after-check (s).
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
        Lease of each experiment's faults (seconds, renewed while it runs): if the
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
    steady_window_s: float = Field(default=0.1, gt=0, le=600)
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
        (``slo_p99_ms``...), ``ok``, ``max_amplification``, ``amplified``, ``called``,
        the experiment's ``status`` and ``experiment`` (its index in ``journal``).
    minimal_failing
        Failing fault sets none of whose proper subsets fail (each a sorted list of
        ``service:kind``).
    findings
        Diagnoses: ``{service, finding, evidence}`` (missing timeout, retry storm, hard
        dependency, redundancy exhausted).
    order
        Services in the order explored (largest blast radius first) with their radius.
    metrics
        Runs, candidate space, runs saved by pruning (by reason), experiments run,
        elapsed seconds.
    journal
        The exploration's journal: entry, spec, order, metrics and ``experiments``, the
        journal of every experiment run (baseline, fault sets, confirmation reruns).
    """

    matrix: pl.DataFrame
    minimal_failing: list[list[str]]
    findings: list[dict[str, Any]]
    order: list[dict[str, Any]]
    metrics: dict[str, Any]
    journal: dict[str, Any] = field(default_factory=dict)


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

    Each fault set (and the baseline) is run as an experiment (:func:`run_experiment`):
    steady state under the open-loop load on ``entry_url``, the faults for ``window_s``
    under the same load, rollback, steady state again; every experiment's journal is
    kept in ``result.journal["experiments"]`` and its matrix row is read from it.

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
    FleetlabError
        The baseline breaks the SLO, or an experiment crashed.
    KeyboardInterrupt
        Ctrl-C or SIGTERM during an experiment (after that experiment rolled back).
    """
    spec = spec or ExploreSpec()
    host = httpx.URL(entry_url).host
    check_allowed(host, allow, what="entry")
    with ProxyClient(api, token=token, allow=allow) as client:
        available = client.proxies()
    t_start = time.monotonic()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    entries = set(graph.entry_points)
    deps = [s for s in graph.graph.nodes if s not in entries]
    mapping = dict(proxies or {})
    proxied = {s: mapping.get(s, s) for s in deps if mapping.get(s, s) in available}
    if not proxied:
        raise ConfigError(
            f"proxies: no dependency of the graph has a proxy on the API (services "
            f"{sorted(deps)}, proxies {sorted(available)})"
        )
    order = blast_order(graph, sorted(proxied))
    load = LoadSpec(url=entry_url, rate_per_s=spec.rate_per_s, timeout_s=spec.timeout_s)
    journals: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    results: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    service_of = {p: s for s, p in proxied.items()}
    reruns = 0
    inconclusive = 0

    def run(fs: frozenset[tuple[str, str]]) -> dict[str, Any]:
        nonlocal inconclusive
        exp = _experiment(fs, spec, load, proxied, api=api, token=token, allow=allow)
        for attempt in range(2):
            journal = run_experiment(exp, api=api, token=token).journal
            journal["explore"] = {"faults": sorted(f"{s}:{k}" for s, k in fs), "try": attempt}
            journals.append(journal)
            status = journal["status"]
            if status == "interrupted":
                raise KeyboardInterrupt
            if status == "crashed":
                raise FleetlabError(f"experiment {exp.title!r} crashed: {journal['error']}")
            if status != "failed" or not fs:
                break
            # the steady state did not hold before injecting: nothing was tested; once more
        out = _outcome(journal, fs, service_of, len(journals) - 1)
        if fs and journal["status"] == "failed":
            inconclusive += 1
        return out

    def confirmed(fs: frozenset[tuple[str, str]]) -> dict[str, Any]:
        nonlocal reruns
        res = run(fs)
        breaches = res["check"]["breaches"]
        marginal = bool(breaches) and all(
            b["slo"] in ("p50_ms", "p99_ms")
            and b["value"] < b["limit"] * (1.0 + spec.confirm_margin)
            for b in breaches
        )
        if marginal:
            reruns += 1
            again = run(fs)
            if again["check"]["ok"]:
                return again
        return res

    base = run(frozenset())
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
            res = confirmed(fs)
            results[fs] = res
            rows.append(_row(fs, res, base_calls, spec))
            done += 1
            if on_run:
                on_run(done, planned, _label(fs))
    failing_singles = {next(iter(fs)) for fs, r in results.items() if _fails(r)}
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
                    res = confirmed(fs)
                    results[fs] = res
                    rows.append(_row(fs, res, base_calls, spec))
                    done += 1
                    if on_run:
                        on_run(done, planned, _label(fs))

    matrix = pl.DataFrame(rows)
    failing = [fs for fs, r in results.items() if _fails(r)]
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
        "experiments": len(journals),
        "inconclusive": inconclusive,
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
    journal = {
        "format": "fleetlab-chaos-explore-journal",
        "version": 1,
        "entry": entry_url,
        "api": api,
        "proxies": proxied,
        "spec": spec.model_dump(mode="json"),
        "started_at": started,
        "ended_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "order": order,
        "minimal_failing": minimal,
        "findings": findings,
        "metrics": metrics,
        "experiments": journals,
    }
    return ExploreResult(matrix, minimal, findings, order, metrics, journal)


def _experiment(
    fs: frozenset[tuple[str, str]],
    spec: ExploreSpec,
    load: LoadSpec,
    proxied: Mapping[str, str],
    *,
    api: str,
    token: str | None,
    allow: tuple[str, ...],
) -> Experiment:
    """The experiment of one fault set: its faults for ``window_s`` under the entry load.

    The baseline (no fault) is a steady-state check over ``window_s``.
    """
    method = [
        Fault(
            name=f"{svc}-{kind}",
            proxy=proxied[svc],
            toxic=ToxicSpec.model_validate(_toxic(kind, spec)),
            start_s=0.0,
            duration_s=spec.window_s,
        )
        for svc, kind in sorted(fs)
    ]
    steady = spec.steady_window_s if fs else spec.window_s
    return Experiment(
        title=f"explore: {_label(fs) or 'baseline (no fault)'}",
        description="graph-guided fault search: one fault set under open-loop load",
        proxy=ProxyTarget(api=api, token=token),
        load=load,
        steady_state=SteadyState(title=f"{load.url} meets its SLO", slo=spec.slo, window_s=steady),
        method=method,
        abort=AbortSpec(deadline_s=2 * (steady + spec.timeout_s + 1.0) + spec.window_s),
        recovery_s=spec.settle_s,
        lease_ttl_s=spec.lease_ttl_s,
        allow=list(allow),
    )


def _outcome(
    journal: dict[str, Any],
    fs: frozenset[tuple[str, str]],
    service_of: Mapping[str, str],
    index: int,
) -> dict[str, Any]:
    """What a matrix row needs from an experiment journal (the baseline: its steady state)."""
    phases = journal["phases"]
    phase = phases.get("during" if fs else "before") or phases.get("before") or {}
    keys = ("requests", "errors", "error_rate", "p50_ms", "p99_ms", "mean_ms")
    summary = {k: phase.get(k, math.nan) for k in keys}
    summary["requests"] = int(phase.get("requests", 0) or 0)
    breaches = list(phase.get("breaches", []))
    n = max(1, summary["requests"])
    per_req = {
        service_of[p]: c / n
        for p, c in (phase.get("proxy_requests") or {}).items()
        if p in service_of
    }
    return {
        "summary": summary,
        "check": {"ok": not breaches and bool(phase), "breaches": breaches},
        "per_request": per_req,
        "status": journal["status"],
        "experiment": index,
        "tested": not fs or "during" in phases,
    }


def _fails(res: dict[str, Any]) -> bool:
    """A tested run that broke the SLO (an untested one, steady state never met, is not)."""
    return bool(res["tested"]) and not res["check"]["ok"]


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
    row["ok"] = res["check"]["ok"] if res["tested"] else None
    row["max_amplification"] = None if math.isnan(amp) or math.isinf(amp) else round(amp, 2)
    row["amplified"] = amp_svc
    row["called"] = ",".join(sorted(x for x, v in res["per_request"].items() if v > 0))
    row["status"] = res["status"]
    row["experiment"] = res["experiment"]
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
            and _fails(slow)
            and all(r is not None and r["tested"] and r["check"]["ok"] for r in (down, error))
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
            and (hit := single[k]) is not None  # always: failing singles were run
            and "error_rate" in {b["slo"] for b in hit["check"]["breaches"]}
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
        if len(fs) == 2 and _fails(r) and not any(x in failing_singles for x in fs):
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
