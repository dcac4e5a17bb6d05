"""GPU fragmentation (Weng et al., ATC'23) and the FGD scorer.

The fragmentation of a node for one task type ``m`` is the amount of unallocated GPU
(in milli-GPUs) that ``m`` cannot use there: all of it when ``m`` does not fit the node
(CPU, memory or GPUs short) or asks for no GPU; otherwise the free share of the GPUs
that cannot host ``m`` (GPUs with less free than a shared task's milli request, or the
partially used GPUs for a whole-GPU task). A node's fragmentation for a workload is the
popularity-weighted sum over task types; FGD places each task where this grows least.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from fleetlab.placement._requests import Requests


@dataclass(frozen=True)
class TaskTypes:
    """A target workload: distinct task shapes and their popularity.

    Attributes
    ----------
    cores, memory_gb
        CPU and memory demand per type (0 when the cluster lacks the dimension).
    gpu_count, gpu_milli
        GPUs per task and milli-GPUs per GPU.
    prob
        Popularity of each type (sums to 1).
    """

    cores: np.ndarray
    memory_gb: np.ndarray
    gpu_count: np.ndarray
    gpu_milli: np.ndarray
    prob: np.ndarray


def task_types(reqs: Requests, dims: tuple[str, ...]) -> TaskTypes:
    """The distinct task shapes of ``reqs`` weighted by how often they occur."""
    cores = reqs.demand[:, dims.index("cores")] if "cores" in dims else np.zeros(reqs.size)
    mem = reqs.demand[:, dims.index("memory_gb")] if "memory_gb" in dims else np.zeros(reqs.size)
    frame = (
        pl.DataFrame({"c": cores, "m": mem, "n": reqs.gpu_count, "g": reqs.gpu_milli})
        .group_by("c", "m", "n", "g")
        .len()
        .sort("c", "m", "n", "g")
    )
    total = float(frame["len"].sum()) or 1.0
    return TaskTypes(
        cores=frame["c"].to_numpy(),
        memory_gb=frame["m"].to_numpy(),
        gpu_count=frame["n"].to_numpy(),
        gpu_milli=frame["g"].to_numpy(),
        prob=frame["len"].to_numpy() / total,
    )


def fragmentation(
    cpu_free: np.ndarray, mem_free: np.ndarray, gpu_free: np.ndarray, types: TaskTypes
) -> np.ndarray:
    """Expected GPU fragmentation of nodes, in milli-GPUs.

    Parameters
    ----------
    cpu_free, mem_free
        Free cores and GiB per node, shape (U,).
    gpu_free
        Free milli-GPUs per GPU slot, shape (U, G); -1 marks a slot the node lacks.
    types
        The target workload.

    Returns
    -------
    numpy.ndarray
        ``F_n(M)`` per node, shape (U,).
    """
    g = np.clip(gpu_free, 0, None).astype(np.float64)[:, None, :]  # (U,1,G)
    total = g.sum(axis=2)  # (U,1)
    fits_cm = (cpu_free[:, None] >= types.cores[None, :] - 1e-9) & (
        mem_free[:, None] >= types.memory_gb[None, :] - 1e-9
    )  # (U,M)
    milli = types.gpu_milli[None, :, None].astype(np.float64)
    share = (types.gpu_count == 1) & (types.gpu_milli < 1000)  # (M,)
    usable = g >= milli  # (U,M,G)
    frag_share = (g * ~usable).sum(axis=2)  # (U,M)
    any_usable = usable.any(axis=2)
    full = (g >= 1000).sum(axis=2)  # (U,1)
    frag_whole = (g * (g < 1000)).sum(axis=2)  # (U,1)
    fits_whole = full >= types.gpu_count[None, :]
    per_type = np.where(
        types.gpu_count[None, :] == 0,
        total,
        np.where(
            ~fits_cm,
            total,
            np.where(
                share[None, :],
                np.where(any_usable, frag_share, total),
                np.where(fits_whole, frag_whole, total),
            ),
        ),
    )
    return per_type @ types.prob


@dataclass
class FgdScore:
    """The FGD scorer: growth of a node's fragmentation if the task is placed there.

    Holds a memo of node-state fragmentation (a pure function of the state), so
    create one per run or share it between runs over the same workload.
    """

    types: TaskTypes
    memo: dict[tuple, float] = field(default_factory=dict)
    delta: dict[tuple, float] = field(default_factory=dict)
    by_slot: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    owner: object = None

    def _frag_many(self, keys: list[tuple]) -> list[float]:
        missing = [k for k in dict.fromkeys(keys) if k not in self.memo]
        if len(self.memo) > 400_000:
            self.memo.clear()
        if missing:
            cpu = np.array([k[0] for k in missing], dtype=np.float64)
            mem = np.array([k[1] for k in missing], dtype=np.float64)
            gpu = np.array([k[2] for k in missing], dtype=np.int64)
            for k, v in zip(missing, fragmentation(cpu, mem, gpu, self.types), strict=True):
                self.memo[k] = float(v)
        return [self.memo[k] for k in keys]

    @staticmethod
    def _key(cpu: float, mem: float, row: np.ndarray) -> tuple:
        return (round(cpu, 6), round(mem, 6), tuple(sorted(row.tolist(), reverse=True)))

    def _option_keys(self, state, node: int, ask) -> tuple[list[tuple[int, ...]], list[tuple]]:
        cpu, mem = self._cm(state, node)
        row = state.gpu_free[node]
        opts = state.gpu_options(node, ask)
        dc, dm = self._dcm(state, ask)
        keys = [self._key(cpu, mem, row)]
        use = ask.gpu_milli if ask.gpu_milli < 1000 else 1000
        for opt in opts:
            after = row.copy()
            for gi in opt:
                after[gi] -= use
            keys.append(self._key(cpu - dc, mem - dm, after))
        return opts, keys

    def options(self, state, node: int, ask) -> list[tuple[tuple[int, ...], float]]:
        """Each GPU option on ``node`` with the fragmentation growth it causes."""
        opts, keys = self._option_keys(state, node, ask)
        vals = self._frag_many(keys)
        return [(opt, vals[i + 1] - vals[0]) for i, opt in enumerate(opts)]

    @staticmethod
    def _cm(state, node: int) -> tuple[float, float]:
        cpu = float(state.free[node, state.core_col]) if state.core_col >= 0 else np.inf
        mcol = state.cluster.dims.index("memory_gb") if "memory_gb" in state.cluster.dims else -1
        mem = float(state.free[node, mcol]) if mcol >= 0 else np.inf
        return cpu, mem

    @staticmethod
    def _dcm(state, ask) -> tuple[float, float]:
        dims = state.cluster.dims
        dc = float(ask.demand[state.core_col]) if state.core_col >= 0 else 0.0
        dm = float(ask.demand[dims.index("memory_gb")]) if "memory_gb" in dims else 0.0
        return dc, dm

    def __call__(self, view, ask) -> np.ndarray:
        """Fragmentation growth per candidate (milli-GPUs; lower is better)."""
        st = view.state
        dc, dm = self._dcm(st, ask)
        shape = (round(dc, 6), round(dm, 6), ask.gpu_count, ask.gpu_milli)
        if view.slots is None:
            keys = [st.key(int(i)) for i in view.index.tolist()]
            return self._score_keys(st, keys, view.index.tolist(), ask, shape)
        cls = st.classes
        if self.owner is not cls:
            self.owner, self.by_slot = cls, {}
        size = cls.uid.size
        cache = self.by_slot.get(shape)
        if cache is None or cache[0].size < size:
            old = cache
            cache = (np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.float64))
            if old is not None:
                cache[0][: old[0].size] = old[0]
                cache[1][: old[1].size] = old[1]
            self.by_slot[shape] = cache
        slots = view.slots
        uids = cls.uid[slots]
        out = cache[1][slots]
        miss = np.flatnonzero(cache[0][slots] != uids)
        if miss.size:
            ms = slots[miss]
            keys = [cls.keys[s] for s in ms.tolist()]
            vals = self._score_keys(st, keys, view.index[miss].tolist(), ask, shape)
            cache[0][ms] = uids[miss]
            cache[1][ms] = vals
            out[miss] = vals
        return out

    def _score_keys(self, st, keys: list[tuple], nodes: list[int], ask, shape) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.float64)
        delta = self.delta
        todo: list[tuple[int, list[tuple]]] = []
        for i, k in enumerate(keys):
            v = delta.get((k, shape))
            if v is None:
                _, okeys = self._option_keys(st, nodes[i], ask)
                todo.append((i, okeys))
            else:
                out[i] = v
        if todo:
            self._frag_many([k for _, ks in todo for k in ks])
            memo = self.memo
            for i, ks in todo:
                base = memo[ks[0]]
                v = min((memo[k] - base for k in ks[1:]), default=np.inf)
                delta[(keys[i], shape)] = v
                out[i] = v
        return out

    def pick_gpus(self, state, node: int, ask) -> tuple[int, ...]:
        """The GPU option on ``node`` with the least fragmentation growth."""
        opts = self.options(state, node, ask)
        if not opts:
            return ()
        return min(opts, key=lambda o: (o[1], o[0]))[0]


def cluster_fragmentation(state, types: TaskTypes) -> float:
    """Total expected GPU fragmentation of the up servers, in GPUs."""
    n = state.cluster.size
    cpu = state.free[:, state.core_col] if state.core_col >= 0 else np.full(n, np.inf)
    dims = state.cluster.dims
    mem = state.free[:, dims.index("memory_gb")] if "memory_gb" in dims else np.full(n, np.inf)
    has = state.up & (state.cluster.gpus > 0)
    if not has.any():
        return 0.0
    frag = fragmentation(cpu[has], mem[has], state.gpu_free[has], types)
    return float(frag.sum()) / 1000.0
