"""Allocation policies: small scorers and filters composed into a :class:`Policy`.

A scorer maps the candidate servers of one request to numbers (lower is better); a
filter maps them to a keep-mask. A policy applies its filters, then its scorers in
order as a lexicographic (Protean-style filter + prefer) chain, breaks the remaining
ties by server index and picks the GPUs on the chosen server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fleetlab.errors import ConfigError
from fleetlab.placement._fgd import FgdScore, TaskTypes
from fleetlab.placement._kernel import (
    BEST_FIT,
    BEST_FIT_L2,
    DOT_PRODUCT,
    FIRST_FIT,
    LEAST_ALLOCATED,
    MOST_ALLOCATED,
    RTCR,
    TETRIS,
    WORST_FIT,
)
from fleetlab.placement._shape_index import choose
from fleetlab.placement._state import Ask, ClusterState
from fleetlab.sim import Streams


@dataclass(frozen=True)
class View:
    """The candidates of one decision as a scorer sees them.

    In class mode each row is a class of identical servers (``index`` is its
    lowest-numbered member); in server mode each row is one server.

    Attributes
    ----------
    index
        Server index per row (the tie-break order), shape (K,).
    free, inv
        Free capacity and 1/capacity (0 where capacity is 0), shape (K, D).
    gpu
        Free milli-GPUs per GPU slot (-1: no slot), shape (K, G).
    slots
        Class slot per row (class mode; None in server mode), for memoising scorers.
    state
        The whole cluster state (read it, never change it).
    """

    index: np.ndarray
    free: np.ndarray
    inv: np.ndarray
    gpu: np.ndarray
    slots: np.ndarray | None
    state: ClusterState


def server_view(state: ClusterState, cand: np.ndarray) -> View:
    """A :class:`View` of servers ``cand``."""
    gpu = state.gpu_free[cand] if state.gpu_col >= 0 else state.gpu_free[:0]
    return View(cand, state.free[cand], state.inv_cap[cand], gpu, None, state)


def class_view(state: ClusterState, slots: np.ndarray) -> View:
    """A :class:`View` of server classes ``slots``."""
    c = state.classes
    gpu = c.gpu[slots] if state.gpu_col >= 0 else c.gpu[:0]
    return View(c.first[slots], c.free[slots], c.inv[slots], gpu, slots, state)


class Scorer(Protocol):
    """Scores the candidates of one request; lower is better."""

    def __call__(self, view: View, ask: Ask) -> np.ndarray: ...


class Filter(Protocol):
    """Keeps a subset of candidate servers (a hard constraint); returns a mask."""

    def __call__(self, view: View, ask: Ask) -> np.ndarray: ...


GpuPicker = Callable[[ClusterState, int, Ask], tuple[int, ...]]


# ---------------------------------------------------------------------- scorers
def first_fit(view: View, ask: Ask) -> np.ndarray:
    """First fit: the lowest-numbered server that fits."""
    return view.index.astype(np.float64)


def best_fit(view: View, ask: Ask) -> np.ndarray:
    """Best fit (L1): least normalised residual capacity summed over dimensions."""
    return ((view.free - ask.demand) * view.inv).sum(axis=1)


def best_fit_l2(view: View, ask: Ask) -> np.ndarray:
    """Best fit (L2): least Euclidean norm of the normalised residual capacity."""
    r = (view.free - ask.demand) * view.inv
    return np.sqrt((r * r).sum(axis=1))


def worst_fit(view: View, ask: Ask) -> np.ndarray:
    """Worst fit (L1): most normalised residual capacity (spreads load)."""
    return -best_fit(view, ask)


def dot_product(view: View, ask: Ask) -> np.ndarray:
    """Dot product: least dot product of normalised demand and residual (packs scarce dims)."""
    d = ask.demand * view.inv
    return ((view.free * view.inv - d) * d).sum(axis=1)


def tetris(view: View, ask: Ask) -> np.ndarray:
    """Tetris alignment (Grandl et al.): largest dot product of demand and free capacity."""
    return -(view.free * view.inv * view.inv * ask.demand).sum(axis=1)


def _utilisation_after(view: View, ask: Ask) -> np.ndarray:
    has = view.inv > 0
    used = 1.0 - (view.free - ask.demand) * view.inv
    return np.where(has, used, 0.0).sum(axis=1) / np.maximum(has.sum(axis=1), 1)


def most_allocated(view: View, ask: Ask) -> np.ndarray:
    """Kubernetes MostAllocated: highest mean requested/capacity ratio after placing."""
    return -_utilisation_after(view, ask)


def least_allocated(view: View, ask: Ask) -> np.ndarray:
    """Kubernetes LeastAllocated: lowest mean requested/capacity ratio after placing."""
    return _utilisation_after(view, ask)


def requested_to_capacity_ratio(
    shape: Sequence[tuple[float, float]] = ((0.0, 0.0), (100.0, 10.0)),
) -> Scorer:
    """Kubernetes RequestedToCapacityRatio with a piecewise-linear ``shape``.

    Parameters
    ----------
    shape
        ``(utilisation %, score)`` points, utilisation ascending; the server with the
        highest mean shaped score over its dimensions wins. The default packs.

    Raises
    ------
    ConfigError
        Fewer than two points or utilisation not ascending.
    """
    xs = np.array([p[0] for p in shape], dtype=np.float64)
    ys = np.array([p[1] for p in shape], dtype=np.float64)
    if xs.size < 2 or np.any(np.diff(xs) <= 0):
        raise ConfigError(f"shape: expected >= 2 points with ascending utilisation, found {shape}")

    def score(view: View, ask: Ask) -> np.ndarray:
        has = view.inv > 0
        util = np.clip((1.0 - (view.free - ask.demand) * view.inv) * 100.0, 0, 100)
        shaped = np.where(has, np.interp(util, xs, ys), 0.0)
        return -shaped.sum(axis=1) / np.maximum(has.sum(axis=1), 1)

    score._shape_only = True  # type: ignore[attr-defined]
    score._kernel_code = RTCR  # type: ignore[attr-defined]
    score._rtcr_shape = (xs, ys)  # type: ignore[attr-defined]
    return score


def gpu_packing(view: View, ask: Ask) -> np.ndarray:
    """GPU packing: least free GPU left after placing (fills used GPU servers first)."""
    col = view.state.gpu_col
    if col < 0:
        return np.zeros(view.index.size)
    return view.free[:, col] - ask.demand[col]


def gpu_clustering(view: View, ask: Ask) -> np.ndarray:
    """GPU clustering: prefer servers already running tasks with the same per-GPU request.

    Scores minus the number of residents asking for the same ``gpu_milli`` (0 for tasks
    without GPUs), so tasks of one GPU shape gather on the same servers.
    """
    if ask.gpu_count == 0:
        return np.zeros(view.index.size)
    shapes = view.state.gpu_shapes
    milli = ask.gpu_milli
    return -np.fromiter(
        (shapes[i].get(milli, 0) for i in view.index.tolist()), np.float64, view.index.size
    )


def random_fit(seed: int) -> Scorer:
    """Random fit: a uniformly random feasible server, drawn from a seeded stream."""
    rng = Streams(seed).get("placement.random")

    def score(view: View, ask: Ask) -> np.ndarray:
        return rng.random(view.index.size)

    return score


def prefer_nonempty(view: View, ask: Ask) -> np.ndarray:
    """0 for servers already hosting something, 1 for empty ones (keeps servers empty)."""
    return (view.state.count[view.index] == 0).astype(np.float64)


def lifetime_alignment(view: View, ask: Ask) -> np.ndarray:
    """LAVA-style: prefer servers whose residents leave just after this request.

    A busy server whose latest predicted exit is after the request's scores the gap
    (seconds); one whose exit the request would extend scores 1e12 + the extension;
    an empty server scores 4e12, so servers are only opened when nothing else fits.
    """
    exit_t = view.state.exit_time[view.index]
    dep = ask.predicted_departure
    empty = view.state.count[view.index] == 0
    big = 1e12
    gap = np.where(exit_t >= dep, exit_t - dep, big + np.minimum(dep - exit_t, big))
    gap = np.where(np.isfinite(gap), gap, 3 * big)
    return np.where(empty, 4 * big, gap)


def predicted_best_fit(view: View, ask: Ask) -> np.ndarray:
    """Best fit on predicted P95 core usage (for oversubscription)."""
    st = view.state
    if st.core_col < 0:
        return best_fit(view, ask)
    cap = st.cluster.capacity[view.index, st.core_col]
    return (cap - st.p95_used[view.index] - ask.p95_demand) / np.maximum(cap, 1e-9)


# Scalar twins of the scorers for one class row (free, inv, demand as lists), with the
# same floating-point operations in the same order as the numpy versions (numpy sums a
# row of < 8 values left to right), so they give bit-identical scores.
def _py_best_fit(f: list[float], inv: list[float], d: list[float]) -> float:
    return sum([(a - b) * c for a, b, c in zip(f, d, inv, strict=True)])


def _py_worst_fit(f: list[float], inv: list[float], d: list[float]) -> float:
    return -_py_best_fit(f, inv, d)


def _py_best_fit_l2(f: list[float], inv: list[float], d: list[float]) -> float:
    r = [(a - b) * c for a, b, c in zip(f, d, inv, strict=True)]
    return math.sqrt(sum([x * x for x in r]))


def _py_dot_product(f: list[float], inv: list[float], d: list[float]) -> float:
    dd = [b * c for b, c in zip(d, inv, strict=True)]
    return sum([(a * c - e) * e for a, c, e in zip(f, inv, dd, strict=True)])


def _py_tetris(f: list[float], inv: list[float], d: list[float]) -> float:
    return -sum([a * c * c * b for a, b, c in zip(f, d, inv, strict=True)])


def _py_utilisation_after(f: list[float], inv: list[float], d: list[float]) -> float:
    used = [1.0 - (a - b) * c if c > 0 else 0.0 for a, b, c in zip(f, d, inv, strict=True)]
    return sum(used) / max(sum(1 for c in inv if c > 0), 1)


def _py_most_allocated(f: list[float], inv: list[float], d: list[float]) -> float:
    return -_py_utilisation_after(f, inv, d)


# scorers whose class score depends only on the class's resource state and the
# request's shape: decided through per-shape score heaps (_shape_index), with their
# scalar twins where they have one
for _f, _py in (
    (best_fit, _py_best_fit),
    (best_fit_l2, _py_best_fit_l2),
    (worst_fit, _py_worst_fit),
    (dot_product, _py_dot_product),
    (tetris, _py_tetris),
    (most_allocated, _py_most_allocated),
    (least_allocated, _py_utilisation_after),
):
    _f._shape_only = True  # type: ignore[attr-defined]
    _f._py_score = _py  # type: ignore[attr-defined]

# the compiled kernel's twin of each scorer (see _kernel.place_stream)
for _f, _code in (
    (first_fit, FIRST_FIT),
    (best_fit, BEST_FIT),
    (best_fit_l2, BEST_FIT_L2),
    (worst_fit, WORST_FIT),
    (dot_product, DOT_PRODUCT),
    (tetris, TETRIS),
    (most_allocated, MOST_ALLOCATED),
    (least_allocated, LEAST_ALLOCATED),
):
    _f._kernel_code = _code  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- filters
def spread(max_per_rack: int) -> Filter:
    """Anti-affinity: at most ``max_per_rack`` of one tenant's VMs per rack (fault domain)."""
    if max_per_rack < 1:
        raise ConfigError(f"max_per_rack: expected >= 1, found {max_per_rack}")

    def keep(view: View, ask: Ask) -> np.ndarray:
        racks = view.state.tenant_racks.get(ask.tenant) if ask.tenant >= 0 else None
        full = [r for r, c in racks.items() if c >= max_per_rack] if racks else []
        if not full:
            return np.ones(view.index.size, dtype=bool)
        return ~np.isin(view.state.cluster.rack[view.index], full)

    return keep


# ---------------------------------------------------------------------- policy
def packed_gpus(state: ClusterState, node: int, ask: Ask) -> tuple[int, ...]:
    """GPU choice by best fit (fullest GPU that fits a shared task)."""
    return state.packed_gpus(node, ask)


@dataclass(frozen=True)
class Policy:
    """An allocation policy: hard filters, then a lexicographic chain of scorers.

    Attributes
    ----------
    name
        Label used in results.
    prefer
        Scorers applied in order; each keeps the candidates tied at its minimum.
    filters
        Hard constraints applied before scoring (e.g. :func:`spread`).
    oversub_ratio
        When set, admit on predicted P95 core usage ≤ capacity × ratio.
    gpu_pick
        Chooses the GPUs on the chosen server.
    by_class
        The scorers read only resource state, so servers with equal state are scored
        once per class (exact, and much faster); False for per-server scorers.
    migrate
        When a request fits nowhere, the simulator may move one resident VM to another
        server (chosen by this policy) if that makes room for it (defragmentation);
        each move is counted in the ``migrations`` metric.
    """

    name: str
    prefer: tuple[Scorer, ...]
    filters: tuple[Filter, ...] = ()
    oversub_ratio: float | None = None
    gpu_pick: GpuPicker = packed_gpus
    by_class: bool = True
    migrate: bool = False


def decide(policy: Policy, state: ClusterState, ask: Ask) -> tuple[int, tuple[int, ...]] | None:
    """Where ``policy`` puts ``ask`` now: ``(server, gpu slots)``, or None if nowhere.

    Does not change ``state``; call :meth:`ClusterState.place` to apply the decision.
    """
    if policy.by_class and not policy.filters and policy.oversub_ratio is None:
        if len(policy.prefer) == 1 and getattr(policy.prefer[0], "_shape_only", False):
            return _decide_indexed(policy, state, ask)
        slots = np.flatnonzero(state.classes.fits(ask))
        if slots.size == 0:
            return None
        view = class_view(state, slots)
    else:
        cand = np.flatnonzero(state.fits(ask, oversub_ratio=policy.oversub_ratio))
        if cand.size == 0:
            return None
        view = server_view(state, cand)
        for keep in policy.filters:
            mask = keep(view, ask)
            if not mask.all():
                view = server_view(state, view.index[mask])
            if view.index.size == 0:
                return None
    last = len(policy.prefer) - 1
    for i, scorer in enumerate(policy.prefer):
        if view.index.size == 1:
            break
        s = scorer(view, ask)
        best = s.min()
        mask = s <= best + 1e-9 * max(1.0, abs(best))
        if i == last:
            node = int(view.index[mask].min())
            return node, policy.gpu_pick(state, node, ask)
        if not mask.all():
            view = _subset(view, mask)
    node = int(view.index.min())
    return node, policy.gpu_pick(state, node, ask)


def _decide_indexed(
    policy: Policy, state: ClusterState, ask: Ask
) -> tuple[int, tuple[int, ...]] | None:
    scorer = policy.prefer[0]
    key = (scorer, ask.demand.tobytes(), ask.gpu_count, ask.gpu_milli, ask.gpu_model)
    node = choose(
        state.classes,
        key,
        ask,
        lambda slots: scorer(class_view(state, slots), ask),
        getattr(scorer, "_py_score", None),
    )
    if node < 0:
        return None
    return node, policy.gpu_pick(state, node, ask)


def _subset(view: View, mask: np.ndarray) -> View:
    slots = None if view.slots is None else view.slots[mask]
    gpu = view.gpu[mask] if view.gpu.shape[0] else view.gpu
    return View(view.index[mask], view.free[mask], view.inv[mask], gpu, slots, view.state)


PolicyName = Literal[
    "first-fit",
    "best-fit",
    "best-fit-l2",
    "worst-fit",
    "dot-product",
    "tetris",
    "most-allocated",
    "least-allocated",
    "rtcr",
    "random",
    "gpu-packing",
    "gpu-clustering",
    "protean",
    "fgd",
    "lifetime",
    "oversub",
]

POLICY_NAMES: tuple[str, ...] = PolicyName.__args__  # type: ignore[attr-defined]


def make_policy(
    name: str,
    *,
    seed: int = 0,
    types: TaskTypes | None = None,
    oversub_ratio: float = 1.5,
    max_per_rack: int | None = None,
    migrate: bool = False,
) -> Policy:
    """Build a named policy.

    Parameters
    ----------
    name
        One of :data:`POLICY_NAMES`.
    seed
        Seed of ``random``.
    types
        Target workload for ``fgd`` (see :func:`task_types`); required for it.
    oversub_ratio
        Ratio for ``oversub`` (predicted P95 cores may reach capacity × ratio).
    max_per_rack
        When set, every policy also spreads a tenant's VMs: at most this many per rack.
    migrate
        Let the simulator move one resident VM to make room for a request that fits
        nowhere (see :attr:`Policy.migrate`).

    Raises
    ------
    ConfigError
        Unknown name, or ``fgd`` without ``types``.
    """
    filters: tuple[Filter, ...] = (spread(max_per_rack),) if max_per_rack else ()
    simple: dict[str, tuple[Scorer, ...]] = {
        "first-fit": (first_fit,),
        "best-fit": (best_fit,),
        "best-fit-l2": (best_fit_l2,),
        "worst-fit": (worst_fit,),
        "dot-product": (dot_product,),
        "tetris": (tetris,),
        "most-allocated": (most_allocated,),
        "least-allocated": (least_allocated,),
        "rtcr": (requested_to_capacity_ratio(),),
        "gpu-packing": (gpu_packing, best_fit),
    }
    per_server: dict[str, tuple[Scorer, ...]] = {
        "protean": (prefer_nonempty, best_fit),
        "lifetime": (lifetime_alignment, best_fit),
        "gpu-clustering": (gpu_clustering, best_fit),
        "random": (random_fit(seed),) if name == "random" else (),
    }
    if name in simple:
        return Policy(name, simple[name], filters, migrate=migrate)
    if name in per_server:
        return Policy(name, per_server[name], filters, by_class=False, migrate=migrate)
    if name == "oversub":
        if not oversub_ratio > 0:
            raise ConfigError(f"oversub_ratio: expected > 0, found {oversub_ratio}")
        return Policy(
            name,
            (predicted_best_fit, best_fit),
            filters,
            oversub_ratio=oversub_ratio,
            by_class=False,
            migrate=migrate,
        )
    if name == "fgd":
        if types is None:
            raise ConfigError("fgd: needs the target workload (task types), found none")
        score = FgdScore(types)
        return Policy(name, (score, best_fit), filters, gpu_pick=score.pick_gpus, migrate=migrate)
    raise ConfigError(f"policy: unknown name {name!r} (expected one of {', '.join(POLICY_NAMES)})")
