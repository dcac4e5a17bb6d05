"""The trace-driven, event-driven placement simulator."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.placement._cluster import GPU_DIM, Cluster
from fleetlab.placement._fgd import TaskTypes, cluster_fragmentation, task_types
from fleetlab.placement._kernel import StreamRun, kernel_ineligible
from fleetlab.placement._policies import Policy, decide, make_policy
from fleetlab.placement._requests import Requests, requests_from_vms
from fleetlab.placement._state import Ask, ClusterState, ask_of

Progress = Callable[[int], None]

#: which replay runs a simulation: the compiled kernel, the Python path, or the kernel
#: whenever the run is eligible (see :func:`kernel_reason`)
Engine = Literal["auto", "kernel", "python"]


@dataclass(frozen=True)
class SimResult:
    """What one simulated policy produced.

    Attributes
    ----------
    policy
        The policy's name.
    timeline
        One row per sample time: ``t_s``, ``active``, ``failures``, ``empty_servers``,
        ``used_servers``, per dimension ``alloc_<d>`` (allocated / capacity of up
        servers), ``density_<d>`` (allocated / capacity of non-empty servers),
        ``stranded_<d>`` (free capacity on servers that cannot host the typical request,
        over total) and ``gpu_frag`` (fragmented GPUs / GPUs, GPU clusters only).
    placements
        One row per request: ``vm_id``, ``node`` (null if it failed), ``start_s``,
        ``end_s`` (when it left, was evicted or lost), ``outcome`` (``placed``,
        ``failed``, ``too_large``, ``evicted``, ``lost``).
    metrics
        Totals: requests, failures, failure rate, peak/mean allocation and density per
        dimension, stranded share, used servers, evictions, lost VMs, migrations (VMs
        moved to make room, policies with ``migrate`` only) and ``engine`` (``kernel``
        or ``python``: which replay ran).
    """

    policy: str
    timeline: pl.DataFrame
    placements: pl.DataFrame
    metrics: dict[str, Any]


def typical_request(reqs: Requests) -> np.ndarray:
    """The median demand per dimension (the request used to measure stranding)."""
    if reqs.size == 0:
        return np.zeros(reqs.demand.shape[1])
    return np.median(reqs.demand, axis=0)


def too_large(reqs: Requests, cluster: Cluster) -> np.ndarray:
    """Requests that no server of ``cluster`` could host even when empty."""
    cap = cluster.capacity
    bad = np.ones(reqs.size, dtype=bool)
    for cls in np.unique(cap, axis=0):
        bad &= ~(reqs.demand <= cls + 1e-9).all(axis=1)
    gcount = cluster.gpus.max() if cluster.size else 0
    bad |= reqs.gpu_count > gcount
    return bad


def _sample(
    state: ClusterState | StreamRun, typical: np.ndarray, types: TaskTypes | None
) -> dict[str, float]:
    # reads only cluster, up, free, count (and gpu_free, core_col for gpu_frag), which
    # the Python state and the kernel's StreamRun both hold, so both sample identically
    cl = state.cluster
    up = state.up
    cap = cl.capacity
    used = cap - state.free
    busy = up & (state.count > 0)
    row: dict[str, float] = {
        "empty_servers": float((up & (state.count == 0)).sum()),
        "used_servers": float(busy.sum()),
        "down_servers": float((~up).sum()),
    }
    each = state.free >= typical - 1e-9
    fits = each.all(axis=1)
    # stranded: capacity of a dimension that could host the typical request on a server
    # where another dimension cannot (Borg's "stranded resources")
    stranded_free = np.where((up & ~fits)[:, None] & each, state.free, 0.0).sum(axis=0)
    total_up = np.where(up[:, None], cap, 0.0).sum(axis=0)
    total_busy = np.where(busy[:, None], cap, 0.0).sum(axis=0)
    alloc = np.where(up[:, None], used, 0.0).sum(axis=0)
    for j, d in enumerate(cl.dims):
        row[f"alloc_{d}"] = float(alloc[j] / total_up[j]) if total_up[j] > 0 else 0.0
        row[f"density_{d}"] = float(alloc[j] / total_busy[j]) if total_busy[j] > 0 else 0.0
        row[f"stranded_{d}"] = float(stranded_free[j] / total_up[j]) if total_up[j] > 0 else 0.0
    if types is not None and GPU_DIM in cl.dims:
        gpus = float(cl.gpus[up].sum())
        row["gpu_frag"] = cluster_fragmentation(state, types) / gpus if gpus else 0.0
    return row


#: memory the kernel engine's per-shape score trees may take (bytes)
TREE_BYTES = 64 << 20

#: most (VM, server) pairs tried to make room for one request that fits nowhere
MIGRATION_ATTEMPTS = 8


def _make_room(
    state: ClusterState, pol: Policy, reqs: Requests, ask: Ask
) -> tuple[int, int] | None:
    """Move one resident VM so that ``ask`` fits; returns ``(VM, its new server)`` or None.

    Tries, server by server, the residents whose departure would free enough capacity
    (every non-GPU dimension) for ``ask``, at most :data:`MIGRATION_ATTEMPTS` of them:
    the VM leaves, ``pol`` must then place ``ask`` (tentatively) and re-place the VM
    elsewhere; otherwise the state is restored exactly. On success the VM sits on its
    new server and ``ask`` is not placed (the caller decides it again).
    """
    dem = ask.demand
    cols = [j for j in range(dem.size) if dem[j] > 0 and j != state.gpu_col]
    tried = 0
    for s in np.flatnonzero(state.up & (state.count > 0)).tolist():
        for v in sorted(state.residents[s]):
            _, gpus, vdem, _, _ = state.placed[v]
            if any(state.free[s, j] + vdem[j] < dem[j] - 1e-9 for j in cols):
                continue
            if tried >= MIGRATION_ATTEMPTS:
                return None
            tried += 1
            vask = ask_of(reqs, v)
            state.release(v, vask.tenant)
            here = decide(pol, state, ask)
            if here is not None:
                state.place(ask, *here)
                there = decide(pol, state, vask)
                state.release(ask.index, ask.tenant)
                if there is not None and there[0] != s:
                    state.place(vask, *there)
                    return v, there[0]
            state.place(vask, s, gpus)
    return None


def kernel_reason(policy: Policy, outages: pl.DataFrame | None = None) -> str | None:
    """Why a run of ``policy`` (with ``outages``) cannot use the compiled kernel, or None.

    Eligible: a single built-in score policy with a compiled twin (``first-fit``,
    ``best-fit``, ``best-fit-l2``, ``worst-fit``, ``dot-product``, ``tetris``,
    ``most-allocated``, ``least-allocated``, ``rtcr``), no filters (anti-affinity), no
    oversubscription, no migrations, the default GPU choice, and no node outages.
    """
    if outages is not None and outages.height:
        return f"node outages given ({outages.height} rows); the kernel runs without outages"
    return kernel_ineligible(policy)


@dataclass(frozen=True)
class _Replay:
    """What either replay hands back to :func:`simulate` (arrays of shape (R,))."""

    node: np.ndarray
    start: np.ndarray
    end: np.ndarray
    outcome: np.ndarray
    rows: list[dict[str, float]]
    failures: int
    evictions: int
    lost: int
    migrations: int
    peak_busy: int


def simulate(
    cluster: Cluster,
    vms: pl.DataFrame | Requests,
    policy: Policy | str,
    *,
    seed: int = 0,
    samples: int = 200,
    outages: pl.DataFrame | None = None,
    types: TaskTypes | None = None,
    progress: Progress | None = None,
    engine: Engine = "auto",
) -> SimResult:
    """Replay arrivals and departures of ``vms`` on ``cluster`` under ``policy``.

    Parameters
    ----------
    cluster
        The cluster (see :func:`load_cluster`, :func:`build_cluster`).
    vms
        A canonical ``vms`` table or prepared :class:`Requests`.
    policy
        A :class:`Policy` or a name from :data:`POLICY_NAMES`.
    seed
        Seed for policies that draw (``random``).
    samples
        Number of evenly spaced sample times in the timeline.
    outages
        Node outages (``node``, ``down_s``, ``up_s``) from
        :func:`fleetlab.sim.failure_timeline`: a node going down evicts its VMs, which
        are re-placed by the same policy or lost.
    types
        Target workload for FGD and for the fragmentation metric (default: the
        task shapes of ``vms`` when the cluster has GPUs).
    progress
        Called with the number of events handled so far, now and then.
    engine
        ``auto`` (default): the compiled kernel (:func:`place_stream`'s, stopped at
        every sample time) when the run is eligible (see :func:`kernel_reason`), else
        the Python path; ``kernel``: the kernel or an error; ``python``: the Python
        path (the reference; any policy). Both give identical results.

    Returns
    -------
    SimResult

    Raises
    ------
    InputFormatError
        ``vms`` is malformed (see :func:`requests_from_vms`).
    ConfigError
        Unknown policy name or engine, or ``engine="kernel"`` for a run the kernel
        cannot do (the message says why).
    """
    if engine not in ("auto", "kernel", "python"):
        raise ConfigError(f"engine: expected auto, kernel or python, found {engine!r}")
    reqs = vms if isinstance(vms, Requests) else requests_from_vms(vms, cluster)
    if types is None and GPU_DIM in cluster.dims:
        types = task_types(reqs, cluster.dims)
    pol = policy if isinstance(policy, Policy) else make_policy(policy, seed=seed, types=types)
    why = kernel_reason(pol, outages) if engine != "python" else "engine='python'"
    if engine == "kernel" and why is not None:
        raise ConfigError(f"engine='kernel': not eligible: {why}")
    typical = typical_request(reqs)
    big = too_large(reqs, cluster)
    r = reqs.size
    finite = reqs.departure[np.isfinite(reqs.departure)]
    t0 = float(reqs.arrival[0]) if r else 0.0
    t1 = max(float(reqs.arrival[-1]) if r else 0.0, float(finite.max()) if finite.size else 0.0)
    grid = np.linspace(t0, t1, max(samples, 2)) if r else np.zeros(0)
    if why is None:
        run = _replay_kernel(cluster, reqs, pol, big, grid, typical, types, progress)
    else:
        run = _replay_python(cluster, reqs, pol, big, grid, typical, types, outages, progress)
    timeline = pl.DataFrame(run.rows) if run.rows else pl.DataFrame({"t_s": []})
    names = np.asarray(cluster.node_ids, dtype=object)
    start, end = run.start, run.end
    placements = pl.DataFrame(
        {
            "vm_id": reqs.vm_id.tolist(),
            "node": [names[n] if n >= 0 else None for n in run.node.tolist()],
            "start_s": start,
            "end_s": np.where(np.isnan(end) & ~np.isnan(start), reqs.departure, end),
            "outcome": run.outcome.tolist(),
        },
        schema={
            "vm_id": pl.String,
            "node": pl.String,
            "start_s": pl.Float64,
            "end_s": pl.Float64,
            "outcome": pl.String,
        },
    ).with_columns(pl.col("end_s").fill_nan(None))
    metrics = _metrics(
        pol.name, reqs, timeline, run.failures, int(big.sum()), run.evictions, run.lost, cluster
    )
    metrics["migrations"] = run.migrations
    metrics["peak_used_servers"] = run.peak_busy
    metrics["engine"] = "kernel" if why is None else "python"
    return SimResult(
        pol.name, timeline.with_columns(pl.lit(pol.name).alias("policy")), placements, metrics
    )


def _replay_kernel(
    cluster: Cluster,
    reqs: Requests,
    pol: Policy,
    big: np.ndarray,
    grid: np.ndarray,
    typical: np.ndarray,
    types: TaskTypes | None,
    progress: Progress | None,
) -> _Replay:
    """The compiled replay: stop before each sample time, sample, go on."""
    # per-shape trees hold 2 x (servers rounded up to a power of 2) floats each: keep
    # them within TREE_BYTES (64 trees up to 65,536 servers, fewer above; the number of
    # trees changes only how often one is rebuilt, never a decision)
    p = 1 << max(cluster.size - 1, 0).bit_length()
    trees = int(max(1, min(64, TREE_BYTES // (16 * p))))
    run = StreamRun(cluster, reqs, pol, skip=big, max_trees=trees)
    rows: list[dict[str, float]] = []
    for g in grid.tolist():
        # the Python path samples grid time g before the first event at or after g
        run.advance(g)
        row = {"t_s": float(g), "active": float(run.active), "failures": float(run.failures)}
        row.update(_sample(run, typical, types))
        rows.append(row)
        if progress is not None:
            progress(run.handled)
    run.advance(math.inf)
    node = run.node
    placed = node >= 0
    # a placed VM starts at its arrival and ends at its departure (inf: never leaves)
    start = np.where(placed, reqs.arrival, np.nan)
    end = np.where(placed, reqs.departure, np.nan)
    outcome = np.where(big, "too_large", np.where(placed, "placed", "failed")).astype(object)
    return _Replay(node, start, end, outcome, rows, run.failures, 0, 0, 0, run.peak_busy)


def _replay_python(
    cluster: Cluster,
    reqs: Requests,
    pol: Policy,
    big: np.ndarray,
    grid: np.ndarray,
    typical: np.ndarray,
    types: TaskTypes | None,
    outages: pl.DataFrame | None,
    progress: Progress | None,
) -> _Replay:
    """The reference replay: an event heap and the Python policies (any policy)."""
    state = ClusterState(cluster)
    r = reqs.size
    node_out = np.full(r, -1, dtype=np.int64)
    start = np.full(r, np.nan)
    end = np.full(r, np.nan)
    outcome = np.full(r, "failed", dtype=object)
    outcome[big] = "too_large"
    # events: (time, kind, payload) with kind 0 = node up, 1 = departure, 2 = node down,
    # 3 = arrival: at equal times capacity is freed before it is used.
    heap: list[tuple[float, int, int]] = []
    node_index = {str(n): i for i, n in enumerate(cluster.node_ids)}
    down_count = np.zeros(cluster.size, dtype=np.int64)
    if outages is not None and outages.height:
        for name, d, u in outages.select("node", "down_s", "up_s").iter_rows():
            i = node_index.get(str(name))
            if i is not None:
                heap.append((float(d), 2, i))
                heap.append((float(u), 0, i))
        heapq.heapify(heap)
    rows: list[dict[str, float]] = []
    gi = 0
    failures = evictions = lost = migrations = 0
    active = 0
    busy = peak_busy = 0
    a = 0
    handled = 0

    def record_until(t: float) -> None:
        nonlocal gi
        while gi < grid.size and grid[gi] <= t:
            row = {"t_s": float(grid[gi]), "active": float(active), "failures": float(failures)}
            row.update(_sample(state, typical, types))
            rows.append(row)
            gi += 1

    def place(i: int, now: float) -> bool:
        nonlocal active, busy, peak_busy, migrations
        ask = ask_of(reqs, i)
        choice = decide(pol, state, ask)
        if choice is None and pol.migrate:
            moved = _make_room(state, pol, reqs, ask)
            if moved is not None:
                migrations += 1
                node_out[moved[0]] = moved[1]
                busy = int((state.count[state.up] > 0).sum())
                peak_busy = max(peak_busy, busy)
                choice = decide(pol, state, ask)
        if choice is None:
            return False
        node, gpus = choice
        state.place(ask, node, gpus)
        if state.count[node] == 1:
            busy += 1
            peak_busy = max(peak_busy, busy)
        node_out[i] = node
        active += 1
        if np.isfinite(reqs.departure[i]):
            heapq.heappush(heap, (float(reqs.departure[i]), 1, i))
        return True

    while a < r or heap:
        if heap and (a >= r or heap[0][0] <= reqs.arrival[a]):
            t, kind, x = heapq.heappop(heap)
            record_until(t)
            if kind == 1:
                freed = state.release(x, int(reqs.tenant[x]))
                if freed >= 0:
                    active -= 1
                    end[x] = t
                    busy -= int(state.count[freed] == 0)
            elif kind == 2:
                down_count[x] += 1
                if state.up[x]:
                    state.set_up(x, False)
                    busy -= int(state.count[x] > 0)
                    for v in sorted(state.residents_of(x)):
                        state.release(v, int(reqs.tenant[v]))
                        active -= 1
                        evictions += 1
                        if not place(v, t):
                            lost += 1
                            outcome[v] = "lost"
                            end[v] = t
                            node_out[v] = x
                        else:
                            outcome[v] = "evicted"
            else:
                down_count[x] = max(down_count[x] - 1, 0)
                if down_count[x] == 0:
                    state.set_up(x, True)
        else:
            t = float(reqs.arrival[a])
            record_until(t)
            if not big[a] and place(a, t):
                outcome[a] = "placed"
                start[a] = t
            else:
                failures += 1
            a += 1
        handled += 1
        if progress is not None and handled % 4096 == 0:
            progress(handled)
    record_until(np.inf)
    return _Replay(
        node_out, start, end, outcome, rows, failures, evictions, lost, migrations, peak_busy
    )


def _metrics(
    name: str,
    reqs: Requests,
    timeline: pl.DataFrame,
    failures: int,
    big: int,
    evictions: int,
    lost: int,
    cluster: Cluster,
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "policy": name,
        "requests": reqs.size,
        "failures": failures,
        "too_large": big,
        "failure_rate": failures / reqs.size if reqs.size else 0.0,
        "evictions": evictions,
        "lost": lost,
    }
    if timeline.height and "used_servers" in timeline.columns:
        cols = [
            "empty_servers",
            *(
                c
                for c in timeline.columns
                if c.split("_")[0] in ("alloc", "density", "stranded", "gpu")
            ),
        ]
        means = timeline.select(pl.col(cols).mean()).row(0, named=True)
        peaks = timeline.select(pl.col(cols).max()).row(0, named=True)
        m["mean_empty_servers"] = means["empty_servers"]
        for d in cluster.dims:
            m[f"peak_alloc_{d}"] = peaks[f"alloc_{d}"]
            m[f"mean_alloc_{d}"] = means[f"alloc_{d}"]
            m[f"mean_density_{d}"] = means[f"density_{d}"]
            m[f"mean_stranded_{d}"] = means[f"stranded_{d}"]
        if "gpu_frag" in timeline.columns:
            m["mean_gpu_frag"] = means["gpu_frag"]
    return m


def compare(
    cluster: Cluster,
    vms: pl.DataFrame | Requests,
    policies: Sequence[Policy | str],
    *,
    seed: int = 0,
    samples: int = 200,
    outages: pl.DataFrame | None = None,
    oversub_ratio: float = 1.5,
    max_per_rack: int | None = None,
    with_bounds: bool = True,
    progress: Progress | None = None,
    migrate: bool = False,
    engine: Engine = "auto",
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Simulate several policies on the same trace and cluster, with the lower bound.

    Parameters
    ----------
    cluster, vms, seed, samples, outages
        As :func:`simulate`.
    policies
        Policies or names (see :data:`POLICY_NAMES`).
    oversub_ratio, max_per_rack, migrate
        Options for named policies (see :func:`make_policy`).
    engine
        As :func:`simulate` (``auto``: the kernel for each eligible policy); the
        summary's ``engine`` column says which ran.
    with_bounds
        Also compute the fluid and LP lower bounds and each policy's gap to them
        (``gap_to_bound`` = peak servers used / bound - 1).

    Returns
    -------
    summary, timeline, metrics
        ``summary``: one row of totals per policy; ``timeline``: every policy's
        timeline stacked (column ``policy``); ``metrics``: ``{"policies": {name:
        totals}, "bounds": ...}``.

    Raises
    ------
    InputFormatError, ConfigError
        As :func:`simulate`.
    """
    from fleetlab.placement._bounds import bounds as lower_bounds

    reqs = vms if isinstance(vms, Requests) else requests_from_vms(vms, cluster)
    types = task_types(reqs, cluster.dims) if GPU_DIM in cluster.dims else None
    results = []
    for p in policies:
        pol = (
            p
            if isinstance(p, Policy)
            else make_policy(
                p,
                seed=seed,
                types=types,
                oversub_ratio=oversub_ratio,
                max_per_rack=max_per_rack,
                migrate=migrate,
            )
        )
        results.append(
            simulate(
                cluster,
                reqs,
                pol,
                seed=seed,
                samples=samples,
                outages=outages,
                types=types,
                progress=progress,
                engine=engine,
            )
        )
    metrics: dict[str, Any] = {"policies": {r.policy: r.metrics for r in results}}
    summary = pl.DataFrame([r.metrics for r in results])
    if with_bounds and reqs.size:
        b = lower_bounds(reqs, cluster)
        metrics["bounds"] = b
        if b["servers"] and "peak_used_servers" in summary.columns:
            summary = summary.with_columns(
                pl.lit(b["servers"]).alias("lower_bound_servers"),
                (pl.col("peak_used_servers") / b["servers"] - 1.0).alias("gap_to_bound"),
            )
    timeline = pl.concat([r.timeline for r in results], how="diagonal")
    return summary, timeline, metrics
