"""The compiled placement kernel: a whole request stream decided in one numba call.

The Python policies (``_policies``) are the readable reference and the path for custom
policies; they cost ~30–40 µs per request in CPython, mostly in the state update. This
module replays a request stream (arrivals in order, departures first at equal times,
exactly as the simulator does) for the single-scorer resource policies — first-fit,
best-fit (L1, L2), worst-fit, dot-product, tetris, most/least-allocated and
RequestedToCapacityRatio — with the same floating-point operations in the same order,
so it makes the same decisions, at a few µs per decision.

Index: per request shape (demand vector, GPU count, per-GPU share, GPU model) a
*tournament tree* over the servers with fan-out 8 (eight float64 siblings share one
64-byte cache line; 5 levels for 10,000 servers): each leaf holds the server's score for
that shape (+inf when it does not fit or is down), each inner node the minimum of its
children. A decision reads the root (the best score), then walks down, at each level
into the leftmost child within the scan's tie tolerance (``best + 1e-9 * max(1,
|best|)``), to the lowest-numbered server among the tied best: exactly the full scan's
choice, in O(log N). The trees are *lazy*: placing or releasing a VM only marks that
server dirty in every kept tree (a flag and a per-tree stack, O(trees) writes); when a
shape is asked for, its tree recomputes its dirty leaves (a server changed several times
counts once) and repairs each changed leaf's path to the root, taking a better child's
value without reading its siblings and stopping at the first unchanged node. An often
asked shape pays about one leaf per update, a rarely asked one pays in a batch, or is
rebuilt when more than N / 8 servers went dirty. The trees are exact whenever they are
read, so decisions are those of an eager update. At most ``max_trees`` trees are kept
(the least recently used one is recycled and rebuilt), so memory stays bounded whatever
the number of shapes (per tree ~1.15 N floats plus 1.5 bytes per server of bookkeeping).

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
#: children per inner tree node (8 float64s: one 64-byte cache line)
_FAN = 8


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
# ``trees`` is tree-major, shape (T, size): row t is tree t, level by level from the
# leaves (``off[lv]`` where level lv starts; level 0 holds server s's leaf at s, node j of
# level lv has children _FAN * j .. _FAN * j + 7 of level lv - 1, each level padded with
# +inf to a multiple of _FAN; the last level is the root), so one tree's repair and
# descent stay in its own memory. The trees
# are lazy: a state update only marks the server dirty in every kept tree (``dirty``,
# and its index pushed on that tree's ``stack``); a tree is brought up to date only when
# its shape is asked for (``_repair``), so an often asked shape pays about one leaf per
# update and a rarely asked one pays in a batch, where a server touched several times
# counts once. A stack that overflows (more than ``stack.shape[1]`` dirty servers) sets
# ``full``: the tree is rebuilt instead.
@njit(cache=True, nogil=True)
def _min_of(tree: np.ndarray, base: int) -> float:  # pragma: no cover - jit
    # the minimum of the _FAN siblings starting at ``base`` (one cache line)
    m = tree[base]
    for c in range(1, _FAN):
        x = tree[base + c]
        m = x if x < m else m
    return m


@njit(cache=True, nogil=True)
def _build(
    trees,
    t,
    off,
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
    dirty,
    top,
    full,
) -> None:  # pragma: no cover
    tree = trees[t]
    for s in range(n):
        tree[s] = _leaf(
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
        dirty[s, t] = False
    width = n
    for lv in range(1, off.shape[0]):
        width = (width + _FAN - 1) // _FAN
        for j in range(width):
            tree[off[lv] + j] = _min_of(tree, off[lv - 1] + _FAN * j)
    top[t] = 0
    full[t] = False


@njit(cache=True, nogil=True)
def _mark(tree_shape, dirty, stack, top, full, s) -> None:  # pragma: no cover - jit
    # server ``s`` changed: mark its leaf stale in every kept tree (O(trees) writes)
    cap = stack.shape[1]
    for t in range(tree_shape.shape[0]):
        if tree_shape[t] < 0 or full[t] or dirty[s, t]:
            continue
        k = top[t]
        if k < cap:
            stack[t, k] = s
            top[t] = k + 1
            dirty[s, t] = True
        else:
            full[t] = True


@njit(cache=True, nogil=True)
def _repair(
    trees,
    t,
    off,
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
    dirty,
    stack,
    top,
    full,
) -> None:  # pragma: no cover
    # bring tree ``t`` up to date: each dirty leaf recomputed and, when it changed, its
    # path to the root repaired, one leaf after the other (so the tree is exact before
    # each): a node takes a better child's value without looking at the siblings, only a
    # minimum that got worse rescans them, and the walk stops where a node is unchanged
    if full[t]:
        _build(
            trees,
            t,
            off,
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
            dirty,
            top,
            full,
        )
        return
    tree = trees[t]
    todo = stack[t]
    last = off.shape[0] - 1
    for q in range(top[t]):
        s = todo[q]
        dirty[s, t] = False
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
        old = tree[s]
        if old == v:
            continue
        tree[s] = v
        # the path to the root; ``old`` -> ``v`` is the change of the child below
        j = s
        for lv in range(1, last + 1):
            j //= _FAN
            at = off[lv] + j
            was = tree[at]
            if v < was:  # the child is the new minimum
                tree[at] = v
            elif v == was or old > was:  # the minimum is still there
                break
            else:  # the child was the minimum and got worse: look at its siblings
                v = _min_of(tree, off[lv - 1] + _FAN * j)
                if v == was:
                    break
                tree[at] = v
            old = was
    top[t] = 0


@njit(cache=True, nogil=True)
def _descend(trees, t, off) -> int:  # pragma: no cover - jit
    # the leftmost leaf within the scan's tie tolerance of the best score (-1: none fits):
    # at each level the leftmost child whose minimum is within it
    tree = trees[t]
    top = off.shape[0] - 1
    best = tree[off[top]]
    if best == _INF:
        return -1
    thr = best + 1e-9 * max(1.0, abs(best))
    j = 0
    for lv in range(top - 1, -1, -1):
        base = off[lv] + _FAN * j
        c = 0
        while not tree[base + c] <= thr:
            c += 1
        j = _FAN * j + c
    return j


@njit(cache=True, nogil=True)
def _advance(
    until: float,
    code: int,
    xs: np.ndarray,
    ys: np.ndarray,
    capacity: np.ndarray,
    inv: np.ndarray,
    gpu_col: int,
    arrival: np.ndarray,
    departure: np.ndarray,
    leave: np.ndarray,
    skip: np.ndarray,
    shape_of: np.ndarray,
    sh_dem: np.ndarray,
    sh_count: np.ndarray,
    sh_milli: np.ndarray,
    sh_model: np.ndarray,
    model_ok: np.ndarray,
    free: np.ndarray,
    up: np.ndarray,
    count: np.ndarray,
    gpu_free: np.ndarray,
    gpu_max: np.ndarray,
    gpu_whole: np.ndarray,
    trees: np.ndarray,
    off: np.ndarray,
    tree_shape: np.ndarray,
    tree_used: np.ndarray,
    dirty: np.ndarray,
    stack: np.ndarray,
    top: np.ndarray,
    full: np.ndarray,
    slot_of: np.ndarray,
    picked: np.ndarray,
    out_node: np.ndarray,
    out_gpus: np.ndarray,
    pos: np.ndarray,
) -> None:  # pragma: no cover - jit
    # Handle every event strictly before ``until`` and return: the state (free, GPU
    # slots, counts, trees) lives in the arrays passed in, the cursors and counters in
    # ``pos`` = [next arrival, departure cursor, active, failures, busy servers, peak
    # busy servers, events handled], so a caller can stop at its sample times, read
    # the state and go on. Departures (in (time, index) order) go before arrivals at
    # equal times, exactly as the simulator's heap.
    n, d = capacity.shape
    g = out_gpus.shape[1]
    r = arrival.shape[0]
    t_count = trees.shape[0]
    i = pos[0]
    cur = pos[1]
    active = pos[2]
    failures = pos[3]
    busy = pos[4]
    peak = pos[5]
    handled = pos[6]
    while True:
        # release every VM leaving at or before the next arrival (or before ``until``
        # once no arrival is due), in (time, index) order; an entry not yet arrived
        # (index >= i) can only leave now if it lasts 0 s, and so can every later
        # entry: stop there and take them after their arrival
        due = i < r and arrival[i] < until
        while cur < r and leave[cur] < i:
            j = leave[cur]
            if due:
                if not departure[j] <= arrival[i]:
                    break
            elif not departure[j] < until:
                break
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
                busy -= 1
                for q in range(d):
                    free[s, q] = capacity[s, q]
            active -= 1
            handled += 1
            _mark(tree_shape, dirty, stack, top, full, s)
        if not due:
            break
        handled += 1
        if skip[i]:  # too large for any server: a failure, never decided
            failures += 1
            i += 1
            continue
        # decide: the tree of this request's shape, brought up to date (a recycled one is
        # rebuilt)
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
            full[t] = True
        _repair(
            trees,
            t,
            off,
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
            dirty,
            stack,
            top,
            full,
        )
        tree_used[t] = i + 1
        s = _descend(trees, t, off)
        out_node[i] = s
        if s < 0:
            failures += 1
            i += 1
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
        if count[s] == 1:
            busy += 1
            if busy > peak:
                peak = busy
        active += 1
        i += 1
        _mark(tree_shape, dirty, stack, top, full, s)
    pos[0] = i
    pos[1] = cur
    pos[2] = active
    pos[3] = failures
    pos[4] = busy
    pos[5] = peak
    pos[6] = handled


# ---------------------------------------------------------------------- Python side
def kernel_ineligible(policy: Policy) -> str | None:
    """Why ``policy`` has no compiled form, or None when the kernel can run it.

    A policy runs in the kernel when it is a single resource-only scorer the kernel
    knows (tagged ``_kernel_code`` in ``_policies``), with no filter, no
    oversubscription, no migrations and the default GPU choice.
    """
    from fleetlab.placement._policies import packed_gpus

    if policy.filters:
        return f"policy {policy.name!r} has filters (anti-affinity / spread)"
    if policy.oversub_ratio is not None:
        return f"policy {policy.name!r} oversubscribes (oversub_ratio)"
    if policy.migrate:
        return f"policy {policy.name!r} migrates VMs (migrate=True)"
    if not policy.by_class:
        return f"policy {policy.name!r} scores per server (by_class=False)"
    if len(policy.prefer) != 1:
        return f"policy {policy.name!r} chains {len(policy.prefer)} scorers"
    if policy.gpu_pick is not packed_gpus:
        return f"policy {policy.name!r} chooses GPUs its own way"
    if getattr(policy.prefer[0], "_kernel_code", None) is None:
        return f"policy {policy.name!r}: its scorer has no compiled twin"
    return None


def kernel_scorer(policy: Policy) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The kernel's scorer code and RTCR shape for ``policy``, or None if it has none.

    See :func:`kernel_ineligible` for what the kernel can run.
    """
    if kernel_ineligible(policy) is not None:
        return None
    code = policy.prefer[0]._kernel_code  # type: ignore[attr-defined]
    xs, ys = getattr(policy.prefer[0], "_rtcr_shape", (np.zeros(2), np.zeros(2)))
    return int(code), np.ascontiguousarray(xs, np.float64), np.ascontiguousarray(ys, np.float64)


class StreamRun:
    """A request stream replayed by the compiled kernel, stoppable at any time.

    Created by :func:`simulate` (one per run, never shared): :meth:`advance` handles
    every arrival and departure before a time, after which the live state (``free``,
    ``gpu_free``, ``count``, ``up``: the attributes :class:`ClusterState` has under
    the same names) can be sampled exactly as the Python path samples its state.

    Attributes
    ----------
    cluster
        The cluster.
    free
        Free capacity, shape (N, D).
    gpu_free
        Free milli-GPUs per GPU slot (-1: no slot), shape (N, G).
    count
        VMs per server, shape (N,).
    up
        All True (the kernel runs without outages), shape (N,).
    core_col
        Column of ``cores`` in ``free`` (-1 if absent).
    node
        Server per request so far (-1: failed or not yet arrived), shape (R,).
    gpus
        GPU slots per request, -1 padded, shape (R, G).
    """

    def __init__(
        self,
        cluster: Cluster,
        reqs: Requests,
        policy: Policy,
        *,
        skip: np.ndarray | None = None,
        max_trees: int = 64,
    ) -> None:
        spec = kernel_scorer(policy)
        if spec is None:
            raise ConfigError(
                f"policy {policy.name!r}: no compiled form (expected a single score-based "
                "scorer without filters or migrations: first-fit, best-fit, best-fit-l2, "
                "worst-fit, dot-product, tetris, most-allocated, least-allocated, rtcr)"
            )
        if max_trees < 1:
            raise ConfigError(f"max_trees: expected >= 1, found {max_trees}")
        self.code, self.xs, self.ys = spec
        self.cluster = cluster
        n = cluster.size
        g = max(int(cluster.max_gpus), 1)
        self.gpu_col = cluster.dims.index(GPU_DIM) if GPU_DIM in cluster.dims else -1
        self.core_col = cluster.dims.index("cores") if "cores" in cluster.dims else -1
        cap = np.ascontiguousarray(cluster.capacity, dtype=np.float64)
        self.capacity = cap
        self.inv = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)
        # GPU model specs ("A|B"): one mask over servers per distinct spec
        spec_id: dict[str, int] = {}
        model_code = np.full(reqs.size, -1, dtype=np.int64)
        named = np.flatnonzero(np.asarray(reqs.gpu_model, dtype=object).astype(bool))
        for i, m in zip(named.tolist(), reqs.gpu_model[named].tolist(), strict=True):
            model_code[i] = spec_id.setdefault(str(m), len(spec_id))
        server_models = [str(m) for m in cluster.gpu_model.tolist()]
        self.model_ok = np.zeros((max(len(spec_id), 1), n), dtype=np.bool_)
        for m, k in spec_id.items():
            allowed = set(m.split("|"))
            self.model_ok[k] = [x in allowed for x in server_models]
        dem = np.ascontiguousarray(reqs.demand, dtype=np.float64).reshape(
            reqs.size, len(cluster.dims)
        )
        count = np.asarray(reqs.gpu_count, dtype=np.int64)
        milli = np.asarray(reqs.gpu_milli, dtype=np.int64)
        # request shapes: rows with the same bit patterns (demand, GPU count, share, model)
        rows = np.ascontiguousarray(np.column_stack([dem.view(np.int64), count, milli, model_code]))
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        _, first, shape_of = np.unique(keys, return_index=True, return_inverse=True)
        self.shape_of = np.ascontiguousarray(shape_of.reshape(-1), dtype=np.int64)
        self.sh_dem = np.ascontiguousarray(dem[first]).reshape(first.size, len(cluster.dims))
        self.sh_count = np.ascontiguousarray(count[first])
        self.sh_milli = np.ascontiguousarray(milli[first])
        self.sh_model = np.ascontiguousarray(model_code[first])
        self.arrival = np.ascontiguousarray(reqs.arrival, dtype=np.float64)
        self.departure = np.ascontiguousarray(reqs.departure, dtype=np.float64)
        self.leave = np.lexsort((np.arange(reqs.size), reqs.departure)).astype(np.int64)
        self.skip = (
            np.zeros(reqs.size, dtype=np.bool_)
            if skip is None
            else np.ascontiguousarray(skip, dtype=np.bool_)
        )
        # the live state, as ClusterState initialises it
        gpus_per = np.asarray(cluster.gpus, dtype=np.int64)
        self.free = cap.copy()
        self.up = np.ones(n, dtype=np.bool_)
        self.count = np.zeros(n, dtype=np.int64)
        self.gpu_free = np.where(np.arange(g)[None, :] < gpus_per[:, None], 1000, -1).astype(
            np.int64
        )
        self.gpu_max = np.where(gpus_per > 0, 1000, 0).astype(np.int64)
        self.gpu_whole = gpus_per.copy()
        # trees: at most max_trees, least recently used recycled
        # tree levels: leaves (one per server), then one node per _FAN nodes below, up
        # to the root; each level padded with +inf to a multiple of _FAN slots
        off = [0]
        width = n
        size = -(-n // _FAN) * _FAN
        while width > 1:
            width = -(-width // _FAN)
            off.append(size)
            size += -(-width // _FAN) * _FAN
        if len(off) == 1:  # one server: its leaf is the root's only child
            off.append(size)
            size += _FAN
        self.off = np.asarray(off, dtype=np.int64)
        t_count = max(min(max_trees, first.size), 1)
        self.trees = np.full((t_count, size), _INF)
        self.tree_shape = np.full(t_count, -1, dtype=np.int64)
        self.tree_used = np.zeros(t_count, dtype=np.int64)
        # lazy updates: per tree, which servers changed since it was last asked for; at
        # most n / 8 remembered (then the tree is rebuilt when asked), so the bookkeeping
        # adds at most 1.5 bytes per server and tree to the trees' 16
        self.dirty = np.zeros((n, t_count), dtype=np.bool_)
        self.stack = np.zeros((t_count, max(n // 8, 16)), dtype=np.int32)
        self.top = np.zeros(t_count, dtype=np.int64)
        self.full = np.zeros(t_count, dtype=np.bool_)
        self.slot_of = np.full(max(first.size, 1), -1, dtype=np.int64)
        self.picked = np.empty(g, dtype=np.int64)
        self.node = np.full(reqs.size, -1, dtype=np.int64)
        self.gpus = np.full((reqs.size, g), -1, dtype=np.int64)
        self.pos = np.zeros(7, dtype=np.int64)

    @property
    def active(self) -> int:
        """VMs placed and not yet gone."""
        return int(self.pos[2])

    @property
    def failures(self) -> int:
        """Requests that arrived and could not be placed (too large ones included)."""
        return int(self.pos[3])

    @property
    def busy(self) -> int:
        """Servers hosting at least one VM now."""
        return int(self.pos[4])

    @property
    def peak_busy(self) -> int:
        """Most servers hosting at least one VM at once so far."""
        return int(self.pos[5])

    @property
    def handled(self) -> int:
        """Events handled so far (arrivals and departures of placed VMs)."""
        return int(self.pos[6])

    def advance(self, until: float) -> None:
        """Handle every arrival and departure strictly before ``until`` (seconds)."""
        _advance(
            float(until),
            self.code,
            self.xs,
            self.ys,
            self.capacity,
            self.inv,
            self.gpu_col,
            self.arrival,
            self.departure,
            self.leave,
            self.skip,
            self.shape_of,
            self.sh_dem,
            self.sh_count,
            self.sh_milli,
            self.sh_model,
            self.model_ok,
            self.free,
            self.up,
            self.count,
            self.gpu_free,
            self.gpu_max,
            self.gpu_whole,
            self.trees,
            self.off,
            self.tree_shape,
            self.tree_used,
            self.dirty,
            self.stack,
            self.top,
            self.full,
            self.slot_of,
            self.picked,
            self.node,
            self.gpus,
            self.pos,
        )


def place_stream(
    cluster: Cluster, reqs: Requests, policy: Policy, *, max_trees: int = 64
) -> StreamPlacement:
    """Decide a whole request stream with the compiled kernel (same decisions as Python).

    Requests arrive in order; before each arrival every placed request whose departure
    is at or before it leaves (in (departure, index) order); a request nothing can host
    fails and never occupies capacity. These are the simulator's semantics without
    node outages (:func:`simulate` uses this kernel for eligible runs).

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
        Most per-shape score trees kept at once (each holds ~1.15 × servers floats and
        1.5 bytes per server of bookkeeping).

    Returns
    -------
    StreamPlacement

    Raises
    ------
    ConfigError
        The policy has no compiled form, or ``max_trees`` < 1.
    """
    run = StreamRun(cluster, reqs, policy, max_trees=max_trees)
    run.advance(_INF)
    return StreamPlacement(run.node, run.gpus)
