"""The compiled placement kernel: a whole request stream decided in one numba call.

The Python policies (``_policies``) are the readable reference and the path for custom
policies; they cost ~30–40 µs per request in CPython, mostly in the state update. This
module replays a request stream (arrivals in order, departures first at equal times,
exactly as the simulator does) for the single-scorer resource policies — first-fit,
best-fit (L1, L2), worst-fit, dot-product, tetris, most/least-allocated and
RequestedToCapacityRatio — with the same floating-point operations in the same order,
so it makes the same decisions, at a few µs per decision.

Index: per request shape (demand vector, GPU count, per-GPU share, GPU model) a
*tournament tree* over the servers: each leaf holds the server's score for that shape
(+inf when it does not fit or is down), each inner node the minimum of its children.
A decision reads the root (the best score), then walks down to the leftmost leaf within
the scan's tie tolerance (``best + 1e-9 * max(1, |best|)``): the lowest-numbered server
among the tied best, exactly the full scan's choice, in O(log N). Placing or releasing
a VM recomputes that server's leaf in every kept tree and the path to the root, stopping
at the first level where no tree's minimum changed; the trees are stored node-major
(row = tree node, column = tree) so that path is contiguous memory for all trees at
once. At most ``max_trees`` trees are kept (the least recently used one is recycled and
rebuilt), so memory stays bounded whatever the number of shapes.

Why numba: 5 µs per decision including the update is out of reach for CPython, and a
compiled loop over plain arrays needs no other toolchain; ``cache=True`` keeps the
compiled code next to this module (first compile ~7 CPU-s, later loads ~0.25 CPU-s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from fleetlab.errors import ConfigError
from fleetlab.placement._cluster import GPU_DIM, Cluster
from fleetlab.placement._requests import Requests

if TYPE_CHECKING:
    from fleetlab.placement._policies import Policy

#: kernel scorer codes, in the order of ``_policies.KERNEL_SCORERS``
FIRST_FIT, BEST_FIT, BEST_FIT_L2, WORST_FIT, DOT_PRODUCT, TETRIS = 0, 1, 2, 3, 4, 5
MOST_ALLOCATED, LEAST_ALLOCATED, RTCR = 6, 7, 8

_INF = math.inf


@dataclass(frozen=True)
class StreamPlacement:
    """Where the compiled kernel put each request of a stream.

    Attributes
    ----------
    node
        Server index per request, -1 where nothing fitted; shape (R,).
    gpus
        GPU slots given per request, -1 padded; shape (R, G) with G the cluster's most
        GPUs per server (at least 1).
    """

    node: np.ndarray
    gpus: np.ndarray


# ---------------------------------------------------------------------- scoring
@njit(cache=True, nogil=True)
def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float:  # pragma: no cover - jit
    # numpy's arr_interp for one point (same branches, same slope formula)
    n = xs.shape[0]
    if x < xs[0]:
        return ys[0]
    if x > xs[n - 1]:
        return ys[n - 1]
    if x == xs[n - 1]:
        return ys[n - 1]
    j = 0
    while j + 1 < n and xs[j + 1] <= x:
        j += 1
    if xs[j] == x:
        return ys[j]
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


@njit(cache=True, nogil=True)
def _score(
    code: int,
    s: int,
    free: np.ndarray,
    inv: np.ndarray,
    dem: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
) -> float:  # pragma: no cover - jit
    # the numpy scorers of _policies for one server row, summed left to right as numpy
    # sums a short row, so the scores are bit-identical
    d = free.shape[1]
    if code == FIRST_FIT:
        return float(s)
    acc = 0.0
    if code in (BEST_FIT, WORST_FIT):
        for j in range(d):
            acc += (free[s, j] - dem[j]) * inv[s, j]
        return acc if code == BEST_FIT else -acc
    if code == BEST_FIT_L2:
        for j in range(d):
            r = (free[s, j] - dem[j]) * inv[s, j]
            acc += r * r
        return math.sqrt(acc)
    if code == DOT_PRODUCT:
        for j in range(d):
            e = dem[j] * inv[s, j]
            acc += (free[s, j] * inv[s, j] - e) * e
        return acc
    if code == TETRIS:
        for j in range(d):
            acc += free[s, j] * inv[s, j] * inv[s, j] * dem[j]
        return -acc
    has = 0
    for j in range(d):
        if inv[s, j] > 0:
            has += 1
            used = 1.0 - (free[s, j] - dem[j]) * inv[s, j]
            if code == RTCR:
                used = _interp(min(max(used * 100.0, 0.0), 100.0), xs, ys)
            acc += used
        else:
            acc += 0.0
    mean = acc / float(max(has, 1))
    if code == LEAST_ALLOCATED:
        return mean
    return -mean


@njit(cache=True, nogil=True)
def _leaf(
    code: int,
    s: int,
    sh: int,
    free: np.ndarray,
    inv: np.ndarray,
    up: np.ndarray,
    gpu_max: np.ndarray,
    gpu_whole: np.ndarray,
    gpu_col: int,
    sh_dem: np.ndarray,
    sh_count: np.ndarray,
    sh_milli: np.ndarray,
    sh_model: np.ndarray,
    model_ok: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
) -> float:  # pragma: no cover - jit
    # the server's score for shape ``sh``, +inf when it cannot host it (ClusterState.fits)
    if not up[s]:
        return _INF
    dem = sh_dem[sh]
    for j in range(free.shape[1]):
        need = dem[j]
        if need > 0 and j != gpu_col and not free[s, j] >= need - 1e-9:
            return _INF
    count = sh_count[sh]
    if count > 0:
        milli = sh_milli[sh]
        if milli < 1000:
            if gpu_max[s] < milli:
                return _INF
        elif gpu_whole[s] < count:
            return _INF
        if sh_model[sh] >= 0 and not model_ok[sh_model[sh], s]:
            return _INF
    return _score(code, s, free, inv, dem, xs, ys)


# ---------------------------------------------------------------------- state updates
@njit(cache=True, nogil=True)
def _refresh_gpu(s: int, gpu_free, gpu_max, gpu_whole, free, gpu_col) -> None:  # pragma: no cover
    top = 0
    whole = 0
    total = 0
    for g in range(gpu_free.shape[1]):
        x = gpu_free[s, g]
        if x > top:
            top = x
        if x == 1000:
            whole += 1
        if x > 0:
            total += x
    gpu_max[s] = top
    gpu_whole[s] = whole
    if gpu_col >= 0:
        free[s, gpu_col] = total / 1000.0


@njit(cache=True, nogil=True)
def _pick_gpus(
    s: int, count: int, milli: int, gpu_free: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover
    # ClusterState.packed_gpus: a shared task takes the fullest GPU that still fits it
    # (lowest slot among equals); a whole-GPU task the first ``count`` free GPUs
    for g in range(out.shape[0]):
        out[g] = -1
    if count == 0:
        return
    if milli < 1000:
        best = -1
        for g in range(gpu_free.shape[1]):
            x = gpu_free[s, g]
            if x >= milli and (best < 0 or x < gpu_free[s, best]):
                best = g
        out[0] = best
        return
    k = 0
    for g in range(gpu_free.shape[1]):
        if k < count and gpu_free[s, g] == 1000:
            out[k] = g
            k += 1


# ---------------------------------------------------------------------- trees
# ``trees`` is node-major, shape (2P, T): row i holds node i of every kept tree, so one
# server's leaf-to-root path for all T trees is a run of contiguous rows (cache-friendly,
# and the per-level minimum over T columns vectorises).
@njit(cache=True, nogil=True)
def _build(
    trees,
    t,
    p,
    n,
    code,
    sh,
    free,
    inv,
    up,
    gpu_max,
    gpu_whole,
    gpu_col,
    sh_dem,
    sh_count,
    sh_milli,
    sh_model,
    model_ok,
    xs,
    ys,
) -> None:  # pragma: no cover
    for s in range(n):
        trees[p + s, t] = _leaf(
            code,
            s,
            sh,
            free,
            inv,
            up,
            gpu_max,
            gpu_whole,
            gpu_col,
            sh_dem,
            sh_count,
            sh_milli,
            sh_model,
            model_ok,
            xs,
            ys,
        )
    for s in range(n, p):
        trees[p + s, t] = _INF
    for i in range(p - 1, 0, -1):
        a = trees[2 * i, t]
        b = trees[2 * i + 1, t]
        trees[i, t] = a if a <= b else b


@njit(cache=True, nogil=True)
def _touch(
    trees,
    tree_shape,
    p,
    s,
    code,
    free,
    inv,
    up,
    gpu_max,
    gpu_whole,
    gpu_col,
    sh_dem,
    sh_count,
    sh_milli,
    sh_model,
    model_ok,
    xs,
    ys,
) -> None:  # pragma: no cover
    # server ``s`` changed: its leaf in every kept tree, then the path to the root,
    # stopping at the first level where no tree's minimum changed
    row = trees[p + s]
    changed = False
    for t in range(trees.shape[1]):
        sh = tree_shape[t]
        v = _INF
        if sh >= 0:
            v = _leaf(
                code,
                s,
                sh,
                free,
                inv,
                up,
                gpu_max,
                gpu_whole,
                gpu_col,
                sh_dem,
                sh_count,
                sh_milli,
                sh_model,
                model_ok,
                xs,
                ys,
            )
        if row[t] != v:
            row[t] = v
            changed = True
    i = (p + s) >> 1
    while changed and i >= 1:
        a = trees[2 * i]
        b = trees[2 * i + 1]
        out = trees[i]
        changed = False
        for t in range(trees.shape[1]):  # branch-free: vectorises
            m = a[t] if a[t] <= b[t] else b[t]
            changed |= out[t] != m
            out[t] = m
        i >>= 1


@njit(cache=True, nogil=True)
def _descend(trees, t, p) -> int:  # pragma: no cover - jit
    # the leftmost leaf within the scan's tie tolerance of the best score (-1: none fits)
    best = trees[1, t]
    if best == _INF:
        return -1
    thr = best + 1e-9 * max(1.0, abs(best))
    i = 1
    while i < p:
        i = 2 * i if trees[2 * i, t] <= thr else 2 * i + 1
    return i - p


@njit(cache=True, nogil=True)
def _replay(
    code: int,
    xs: np.ndarray,
    ys: np.ndarray,
    capacity: np.ndarray,
    inv: np.ndarray,
    gpus_per_server: np.ndarray,
    gpu_col: int,
    arrival: np.ndarray,
    departure: np.ndarray,
    leave: np.ndarray,
    shape_of: np.ndarray,
    sh_dem: np.ndarray,
    sh_count: np.ndarray,
    sh_milli: np.ndarray,
    sh_model: np.ndarray,
    model_ok: np.ndarray,
    max_trees: int,
    out_node: np.ndarray,
    out_gpus: np.ndarray,
) -> None:  # pragma: no cover - jit
    n, d = capacity.shape
    g = out_gpus.shape[1]
    r = arrival.shape[0]
    n_shapes = sh_dem.shape[0]
    free = capacity.copy()
    up = np.ones(n, dtype=np.bool_)
    count = np.zeros(n, dtype=np.int64)
    gpu_free = np.full((n, g), -1, dtype=np.int64)
    for s in range(n):
        for k in range(gpus_per_server[s]):
            gpu_free[s, k] = 1000
    gpu_max = np.zeros(n, dtype=np.int64)
    gpu_whole = np.zeros(n, dtype=np.int64)
    for s in range(n):
        if gpus_per_server[s] > 0:
            gpu_max[s] = 1000
        gpu_whole[s] = gpus_per_server[s]
    # trees: at most max_trees, least recently used recycled
    p = 1
    while p < n:
        p *= 2
    t_count = max(min(max_trees, n_shapes), 1)
    trees = np.full((2 * p, t_count), _INF)
    tree_shape = np.full(t_count, -1, dtype=np.int64)
    tree_used = np.zeros(t_count, dtype=np.int64)
    slot_of = np.full(max(n_shapes, 1), -1, dtype=np.int64)
    # departures: every request's (departure, index), sorted once outside; a cursor
    # walks it and releases the placed ones (the order of the simulator's heap)
    cur = 0
    picked = np.empty(max(g, 1), dtype=np.int64)
    for i in range(r):
        # release every VM leaving at or before this arrival, in (time, index) order;
        # an entry not yet arrived (index >= i) can only leave now if it lasts 0 s, and
        # so can every later entry: stop there and take them after their arrival
        while cur < r and departure[leave[cur]] <= arrival[i] and leave[cur] < i:
            j = leave[cur]
            cur += 1
            if out_node[j] < 0:
                continue
            # ClusterState.release
            s = out_node[j]
            sh = shape_of[j]
            for q in range(d):
                free[s, q] += sh_dem[sh, q]
            if sh_count[sh] > 0:
                milli = sh_milli[sh]
                for q in range(g):
                    gq = out_gpus[j, q]
                    if gq >= 0:
                        gpu_free[s, gq] += milli if milli < 1000 else 1000
                _refresh_gpu(s, gpu_free, gpu_max, gpu_whole, free, gpu_col)
            count[s] -= 1
            if count[s] == 0:
                for q in range(d):
                    free[s, q] = capacity[s, q]
            _touch(
                trees,
                tree_shape,
                p,
                s,
                code,
                free,
                inv,
                up,
                gpu_max,
                gpu_whole,
                gpu_col,
                sh_dem,
                sh_count,
                sh_milli,
                sh_model,
                model_ok,
                xs,
                ys,
            )
        # decide: the tree of this request's shape (a recycled one is rebuilt)
        sh = shape_of[i]
        t = slot_of[sh]
        if t < 0:
            t = 0
            for q in range(t_count):
                if tree_shape[q] < 0:
                    t = q
                    break
                if tree_used[q] < tree_used[t]:
                    t = q
            if tree_shape[t] >= 0:
                slot_of[tree_shape[t]] = -1
            tree_shape[t] = sh
            slot_of[sh] = t
            _build(
                trees,
                t,
                p,
                n,
                code,
                sh,
                free,
                inv,
                up,
                gpu_max,
                gpu_whole,
                gpu_col,
                sh_dem,
                sh_count,
                sh_milli,
                sh_model,
                model_ok,
                xs,
                ys,
            )
        tree_used[t] = i + 1
        s = _descend(trees, t, p)
        out_node[i] = s
        if s < 0:
            continue
        # ClusterState.place
        _pick_gpus(s, sh_count[sh], sh_milli[sh], gpu_free, picked)
        for q in range(g):
            out_gpus[i, q] = picked[q]
        for q in range(d):
            free[s, q] -= sh_dem[sh, q]
        if sh_count[sh] > 0:
            milli = sh_milli[sh]
            for q in range(g):
                gq = picked[q]
                if gq >= 0:
                    gpu_free[s, gq] -= milli if milli < 1000 else 1000
            _refresh_gpu(s, gpu_free, gpu_max, gpu_whole, free, gpu_col)
        count[s] += 1
        _touch(
            trees,
            tree_shape,
            p,
            s,
            code,
            free,
            inv,
            up,
            gpu_max,
            gpu_whole,
            gpu_col,
            sh_dem,
            sh_count,
            sh_milli,
            sh_model,
            model_ok,
            xs,
            ys,
        )


# ---------------------------------------------------------------------- Python side
def kernel_scorer(policy: Policy) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The kernel's scorer code and RTCR shape for ``policy``, or None if it has none.

    A policy runs in the kernel when it is a single resource-only scorer the kernel
    knows (tagged ``_kernel_code`` in ``_policies``), with no filter, no
    oversubscription, no migrations and the default GPU choice.
    """
    from fleetlab.placement._policies import packed_gpus

    if policy.filters or policy.oversub_ratio is not None or not policy.by_class:
        return None
    if policy.migrate:
        return None
    if len(policy.prefer) != 1 or policy.gpu_pick is not packed_gpus:
        return None
    code = getattr(policy.prefer[0], "_kernel_code", None)
    if code is None:
        return None
    xs, ys = getattr(policy.prefer[0], "_rtcr_shape", (np.zeros(2), np.zeros(2)))
    return int(code), np.ascontiguousarray(xs, np.float64), np.ascontiguousarray(ys, np.float64)


def place_stream(
    cluster: Cluster, reqs: Requests, policy: Policy, *, max_trees: int = 64
) -> StreamPlacement:
    """Decide a whole request stream with the compiled kernel (same decisions as Python).

    Requests arrive in order; before each arrival every placed request whose departure
    is at or before it leaves (in (departure, index) order); a request nothing can host
    fails and never occupies capacity. These are the simulator's semantics without
    node outages.

    Parameters
    ----------
    cluster
        The cluster.
    reqs
        The requests, in arrival order (see :func:`requests_from_vms`).
    policy
        A single-scorer resource policy (``first-fit``, ``best-fit``, ``best-fit-l2``,
        ``worst-fit``, ``dot-product``, ``tetris``, ``most-allocated``,
        ``least-allocated``, ``rtcr``) without filters.
    max_trees
        Most per-shape score trees kept at once (each holds 2 × servers floats).

    Returns
    -------
    StreamPlacement

    Raises
    ------
    ConfigError
        The policy has no compiled form, or ``max_trees`` < 1.
    """
    spec = kernel_scorer(policy)
    if spec is None:
        raise ConfigError(
            f"policy {policy.name!r}: no compiled form (expected a single score-based "
            "scorer without filters or migrations: first-fit, best-fit, best-fit-l2, worst-fit, "
            "dot-product, tetris, most-allocated, least-allocated, rtcr)"
        )
    if max_trees < 1:
        raise ConfigError(f"max_trees: expected >= 1, found {max_trees}")
    code, xs, ys = spec
    n = cluster.size
    g = max(int(cluster.max_gpus), 1)
    gpu_col = cluster.dims.index(GPU_DIM) if GPU_DIM in cluster.dims else -1
    cap = np.ascontiguousarray(cluster.capacity, dtype=np.float64)
    inv = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)
    # GPU model specs ("A|B"): one mask over servers per distinct spec
    spec_id: dict[str, int] = {}
    model_code = np.full(reqs.size, -1, dtype=np.int64)
    named = np.flatnonzero(np.asarray(reqs.gpu_model, dtype=object).astype(bool))
    for i, m in zip(named.tolist(), reqs.gpu_model[named].tolist(), strict=True):
        model_code[i] = spec_id.setdefault(str(m), len(spec_id))
    server_models = [str(m) for m in cluster.gpu_model.tolist()]
    model_ok = np.zeros((max(len(spec_id), 1), n), dtype=np.bool_)
    for m, k in spec_id.items():
        allowed = set(m.split("|"))
        model_ok[k] = [x in allowed for x in server_models]
    dem = np.ascontiguousarray(reqs.demand, dtype=np.float64).reshape(reqs.size, len(cluster.dims))
    count = np.asarray(reqs.gpu_count, dtype=np.int64)
    milli = np.asarray(reqs.gpu_milli, dtype=np.int64)
    # request shapes: rows with the same bit patterns (demand, GPU count, share, model)
    rows = np.ascontiguousarray(np.column_stack([dem.view(np.int64), count, milli, model_code]))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, shape_of = np.unique(keys, return_index=True, return_inverse=True)
    shape_of = shape_of.reshape(-1)
    out_node = np.full(reqs.size, -1, dtype=np.int64)
    out_gpus = np.full((reqs.size, g), -1, dtype=np.int64)
    _replay(
        code,
        xs,
        ys,
        cap,
        inv,
        np.asarray(cluster.gpus, dtype=np.int64),
        gpu_col,
        np.ascontiguousarray(reqs.arrival, dtype=np.float64),
        np.ascontiguousarray(reqs.departure, dtype=np.float64),
        np.lexsort((np.arange(reqs.size), reqs.departure)).astype(np.int64),
        np.ascontiguousarray(shape_of, dtype=np.int64),
        np.ascontiguousarray(dem[first]),
        np.ascontiguousarray(count[first]),
        np.ascontiguousarray(milli[first]),
        np.ascontiguousarray(model_code[first]),
        model_ok,
        int(max_trees),
        out_node,
        out_gpus,
    )
    return StreamPlacement(out_node, out_gpus)
