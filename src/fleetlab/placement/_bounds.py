"""Lower bounds on the servers a trace needs: per-dimension fluid bound and an LP."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import linprog

from fleetlab.errors import ConfigError
from fleetlab.placement._cluster import GPU_DIM, Cluster
from fleetlab.placement._requests import Requests


def load_curve(reqs: Requests) -> tuple[np.ndarray, np.ndarray]:
    """Total active demand over time.

    Returns
    -------
    times, load
        Event times (s) and the active demand per dimension just after each, shape
        (T,) and (T, D). Departures at a time come before arrivals at that time.
    """
    r = reqs.size
    if r == 0:
        return np.zeros(0), np.zeros((0, reqs.demand.shape[1]))
    fin = np.isfinite(reqs.departure)
    times = np.concatenate([reqs.arrival, reqs.departure[fin]])
    kind = np.concatenate([np.ones(r), np.zeros(int(fin.sum()))])  # departures first
    delta = np.vstack([reqs.demand, -reqs.demand[fin]])
    order = np.lexsort((kind, times))
    return times[order], np.cumsum(delta[order], axis=0)


def fluid_bound(reqs: Requests, capacity: np.ndarray) -> dict[str, Any]:
    """The per-dimension fluid bound for servers of one capacity vector.

    ``max over t and d of ceil(active demand_d(t) / capacity_d)``.

    Parameters
    ----------
    reqs
        The requests.
    capacity
        Capacity of one server per dimension, shape (D,).

    Returns
    -------
    dict
        ``servers`` (the bound), ``peak_t_s`` (when it binds), ``dimension`` (which
        dimension binds) and ``per_dimension`` (bound per dimension).
    """
    times, load = load_curve(reqs)
    if times.size == 0:
        return {"servers": 0, "peak_t_s": None, "dimension": None, "per_dimension": {}}
    need = np.divide(load, capacity, out=np.zeros_like(load), where=capacity > 0)
    need = np.where((capacity <= 0) & (load > 1e-9), np.inf, need)
    per = np.ceil(need.max(axis=0) - 1e-9)
    t_i, d_i = np.unravel_index(int(np.argmax(need)), need.shape)
    return {
        "servers": float(per.max()),
        "peak_t_s": float(times[t_i]),
        "dimension": int(d_i),
        "per_dimension": per.tolist(),
    }


def peak_times(reqs: Requests, capacity: np.ndarray, *, k: int = 3) -> np.ndarray:
    """The ``k`` event times with the highest normalised load (distinct, descending)."""
    times, load = load_curve(reqs)
    if times.size == 0:
        return np.zeros(0)
    norm = np.divide(load, capacity, out=np.zeros_like(load), where=capacity > 0).max(axis=1)
    order = np.argsort(-norm, kind="stable")
    out: list[float] = []
    for i in order:
        t = float(times[i])
        if t not in out:
            out.append(t)
        if len(out) == k:
            break
    return np.asarray(out)


def lp_bound(
    reqs: Requests,
    cluster: Cluster,
    *,
    at_s: float,
    available: bool = True,
) -> dict[str, Any]:
    """LP relaxation of the servers needed to host the VMs active at time ``at_s``.

    Request shapes ``k`` (with counts ``c_k``) and server types ``t`` (distinct
    capacity vectors); variables ``x_kt`` (shape-k VMs on type t) and ``n_t`` (servers
    of type t). Minimise ``sum n_t`` subject to ``sum_t x_kt = c_k``; per type and
    dimension ``sum_k d_kd x_kt <= C_td n_t``; whole GPUs ``sum_k g_k x_kt <= G_t n_t``;
    at most one "big" VM (more than half a server in some dimension) per server;
    ``x_kt = 0`` where shape k does not fit type t; and ``n_t <=`` the servers of that
    type in ``cluster`` when ``available``. Solved with HiGHS.

    Returns
    -------
    dict
        ``servers`` (the LP optimum rounded up), ``lp_value``, ``active`` (VMs active),
        ``status`` (``"optimal"`` or ``"infeasible"``) and ``per_type`` (servers by type).

    Raises
    ------
    ConfigError
        The cluster has no servers.
    """
    if cluster.size == 0:
        raise ConfigError("cluster: no servers")
    act = (reqs.arrival <= at_s) & (reqs.departure > at_s)
    frame = pl.DataFrame(
        {f"d{j}": reqs.demand[act, j] for j in range(reqs.demand.shape[1])}
        | {"g": reqs.gpu_count[act], "m": reqs.gpu_milli[act]}
    )
    if frame.height == 0:
        return {"servers": 0, "lp_value": 0.0, "active": 0, "status": "optimal", "per_type": {}}
    shapes = frame.group_by(frame.columns).len().sort(frame.columns)
    dcols = [c for c in shapes.columns if c.startswith("d")]
    dem = shapes.select(dcols).to_numpy().astype(np.float64)
    whole = (shapes["m"].to_numpy() >= 1000) * shapes["g"].to_numpy()
    counts = shapes["len"].to_numpy().astype(np.float64)
    caps, inverse, avail = np.unique(
        np.column_stack([cluster.capacity, cluster.gpus]),
        axis=0,
        return_inverse=True,
        return_counts=True,
    )
    tcap, tgpu = caps[:, :-1], caps[:, -1]
    nk, nt, nd = dem.shape[0], caps.shape[0], dem.shape[1]
    nx = nk * nt
    nvar = nx + nt

    def xi(k: int, t: int) -> int:
        return k * nt + t

    c = np.concatenate([np.zeros(nx), np.ones(nt)])
    a_eq = np.zeros((nk, nvar))
    for k in range(nk):
        for t in range(nt):
            a_eq[k, xi(k, t)] = 1.0
    rows: list[np.ndarray] = []
    bounds: list[tuple[float, float | None]] = []
    fits = np.zeros((nk, nt), dtype=bool)
    for t in range(nt):
        fits[:, t] = (dem <= tcap[t] + 1e-9).all(axis=1) & (whole <= tgpu[t])
        gcol = cluster.dims.index(GPU_DIM) if GPU_DIM in cluster.dims else -1
        for d in range(nd):
            if d == gcol:
                continue
            row = np.zeros(nvar)
            for k in range(nk):
                row[xi(k, t)] = dem[k, d]
            row[nx + t] = -tcap[t, d]
            rows.append(row)
        if gcol >= 0:  # GPU milli capacity and whole GPUs
            row = np.zeros(nvar)
            for k in range(nk):
                row[xi(k, t)] = dem[k, gcol]
            row[nx + t] = -tgpu[t]
            rows.append(row)
            row = np.zeros(nvar)
            for k in range(nk):
                row[xi(k, t)] = whole[k]
            row[nx + t] = -tgpu[t]
            rows.append(row)
        big = (dem > tcap[t] / 2 + 1e-9).any(axis=1)
        if big.any():
            row = np.zeros(nvar)
            for kk in np.flatnonzero(big).tolist():
                row[xi(kk, t)] = 1.0
            row[nx + t] = -1.0
            rows.append(row)
    for k in range(nk):
        for t in range(nt):
            bounds.append((0.0, None if fits[k, t] else 0.0))
    for t in range(nt):
        bounds.append((0.0, float(avail[t]) if available else None))
    res = linprog(
        c,
        A_ub=np.vstack(rows) if rows else None,
        b_ub=np.zeros(len(rows)) if rows else None,
        A_eq=a_eq,
        b_eq=counts,
        bounds=bounds,
        method="highs",
    )
    active = int(act.sum())
    if res.status != 0:
        return {
            "servers": None,
            "lp_value": None,
            "active": active,
            "status": "infeasible",
            "per_type": {},
        }
    n = res.x[nx:]
    labels = [str(cluster.server_type[int(np.flatnonzero(inverse == t)[0])]) for t in range(nt)]
    return {
        "servers": int(np.ceil(res.fun - 1e-6)),
        "lp_value": float(res.fun),
        "active": active,
        "status": "optimal",
        "per_type": {lab: float(v) for lab, v in zip(labels, n, strict=True) if v > 1e-9},
    }


def bounds(reqs: Requests, cluster: Cluster, *, peaks: int = 3) -> dict[str, Any]:
    """Fluid and LP lower bounds on the servers ``cluster``'s kind needs for ``reqs``.

    The fluid bound uses the largest server capacity per dimension (a valid lower
    bound for any mix); the LP bound is the largest over the ``peaks`` busiest times.

    Returns
    -------
    dict
        ``fluid`` (see :func:`fluid_bound`), ``lp`` (the binding :func:`lp_bound`
        result, with ``t_s``) and ``servers`` (the larger of the two).
    """
    biggest = cluster.capacity.max(axis=0)
    fluid = fluid_bound(reqs, biggest)
    best: dict[str, Any] = {"servers": 0}
    for t in peak_times(reqs, biggest, k=peaks):
        res = lp_bound(reqs, cluster, at_s=float(t), available=False)
        if res["servers"] is not None and res["servers"] >= best.get("servers", 0):
            best = {**res, "t_s": float(t)}
    return {
        "fluid": fluid,
        "lp": best,
        "servers": max(fluid["servers"], best.get("servers") or 0),
    }
