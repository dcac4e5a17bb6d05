"""The mutable state of a cluster during one run: free capacity, GPUs, residents."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from fleetlab.placement._cluster import GPU_DIM, Cluster
from fleetlab.placement._requests import Requests
from fleetlab.placement._shape_index import ShapeIndex


@dataclass(frozen=True)
class Ask:
    """One request as a policy sees it (demand in the cluster's dimensions)."""

    index: int
    demand: np.ndarray
    gpu_count: int
    gpu_milli: int
    gpu_model: str
    tenant: int
    arrival: float
    predicted_departure: float
    p95_demand: float


def ask_of(reqs: Requests, i: int) -> Ask:
    """The :class:`Ask` for request ``i`` of ``reqs``."""
    return Ask(
        index=i,
        demand=reqs.demand[i],
        gpu_count=int(reqs.gpu_count[i]),
        gpu_milli=int(reqs.gpu_milli[i]),
        gpu_model=str(reqs.gpu_model[i] or ""),
        tenant=int(reqs.tenant[i]),
        arrival=float(reqs.arrival[i]),
        predicted_departure=float(reqs.predicted_departure[i]),
        p95_demand=float(reqs.p95_demand[i]),
    )


class ClusterState:
    """Free capacity per server and dimension, per-GPU free milli-units and residents.

    Created fresh by every run (never shared). ``free`` has shape (N, D);
    ``gpu_free`` has shape (N, G) with -1 for GPU slots a server does not have.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.free = cluster.capacity.copy()
        self.free_t = np.ascontiguousarray(self.free.T)
        g = max(cluster.max_gpus, 1)
        slots = np.arange(g)[None, :] < cluster.gpus[:, None]
        self.gpu_free = np.where(slots, 1000, -1).astype(np.int64)
        self.gpu_max = np.where(cluster.gpus > 0, 1000, 0).astype(np.int64)
        self.gpu_whole = cluster.gpus.astype(np.int64).copy()
        self.up = np.ones(cluster.size, dtype=bool)
        self.count = np.zeros(cluster.size, dtype=np.int64)
        self.p95_used = np.zeros(cluster.size, dtype=np.float64)
        self.exit_time = np.full(cluster.size, -np.inf)
        self.residents: list[dict[int, float]] = [{} for _ in range(cluster.size)]
        self.gpu_shapes: list[dict[int, int]] = [{} for _ in range(cluster.size)]
        self.placed: dict[int, tuple[int, tuple[int, ...], np.ndarray, int, float]] = {}
        self.tenant_racks: dict[int, dict[int, int]] = {}
        self.gpu_col = cluster.dims.index(GPU_DIM) if GPU_DIM in cluster.dims else -1
        self.core_col = cluster.dims.index("cores") if "cores" in cluster.dims else -1
        cap = cluster.capacity
        self.inv_cap = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)
        self._model_mask: dict[str, np.ndarray] = {}
        self._models = cluster.gpu_model
        _, self._type_id = np.unique(
            np.column_stack([cap, cluster.gpus]), axis=0, return_inverse=True
        )
        model_id = {m: i for i, m in enumerate(sorted(set(self._models.tolist())))}
        self._model_code = [model_id[m] for m in self._models.tolist()]
        self._type_id = self._type_id.tolist()
        self.classes = ServerClasses(self)

    # ------------------------------------------------------------------ feasibility
    def model_mask(self, spec: str) -> np.ndarray:
        """Servers whose GPU model is one of ``spec`` (``"A|B"``); memoised per run."""
        mask = self._model_mask.get(spec)
        if mask is None:
            allowed = set(spec.split("|"))
            mask = np.fromiter((m in allowed for m in self._models), bool, self.cluster.size)
            self._model_mask[spec] = mask
        return mask

    def fits(self, ask: Ask, *, oversub_ratio: float | None = None) -> np.ndarray:
        """Boolean mask of the servers that can host ``ask`` now.

        With ``oversub_ratio`` the ``cores`` dimension admits while the sum of predicted
        P95 core usage stays within ``capacity * ratio`` instead of the requested cores.
        """
        mask = self.up.copy()
        for j, need in enumerate(ask.demand):
            if j == self.gpu_col:
                continue
            if j == self.core_col and oversub_ratio is not None:
                cap = self.cluster.capacity[:, j] * oversub_ratio
                mask &= self.p95_used + ask.p95_demand <= cap + 1e-9
                continue
            if need > 0:
                mask &= self.free_t[j] >= need - 1e-9
        if ask.gpu_count > 0:
            if ask.gpu_milli < 1000:
                mask &= self.gpu_max >= ask.gpu_milli
            else:
                mask &= self.gpu_whole >= ask.gpu_count
            if ask.gpu_model:
                mask &= self.model_mask(ask.gpu_model)
        return mask

    # ------------------------------------------------------------------ GPU choice
    def gpu_options(self, node: int, ask: Ask) -> list[tuple[int, ...]]:
        """Distinct ways to give ``ask`` GPUs on ``node`` (one per distinct free level)."""
        if ask.gpu_count == 0:
            return [()]
        row = self.gpu_free[node]
        if ask.gpu_milli < 1000:
            seen: dict[int, int] = {}
            for g, f in enumerate(row):
                if f >= ask.gpu_milli and int(f) not in seen:
                    seen[int(f)] = g
            return [(g,) for g in seen.values()]
        whole = np.flatnonzero(row == 1000)[: ask.gpu_count]
        return [tuple(int(g) for g in whole)] if whole.size == ask.gpu_count else []

    def packed_gpus(self, node: int, ask: Ask) -> tuple[int, ...]:
        """GPUs by best fit: the fullest GPU that still fits a shared request."""
        opts = self.gpu_options(node, ask)
        if len(opts) <= 1 or ask.gpu_milli >= 1000:
            return opts[0] if opts else ()
        row = self.gpu_free[node]
        return min(opts, key=lambda o: (row[o[0]], o[0]))

    # ------------------------------------------------------------------ updates
    def _refresh_gpu(self, node: int) -> None:
        row = self.gpu_free[node].tolist()
        self.gpu_max[node] = max(max(row), 0)
        self.gpu_whole[node] = row.count(1000)
        if self.gpu_col >= 0:
            total = sum(x for x in row if x > 0) / 1000.0
            self.free[node, self.gpu_col] = total
            self.free_t[self.gpu_col, node] = total

    def key(self, node: int) -> tuple:
        """The resource state of ``node``: servers with equal keys score equally."""
        return (
            self._type_id[node],
            self._model_code[node],
            tuple([round(x, 6) for x in self.free[node].tolist()]),
            tuple(sorted(self.gpu_free[node].tolist(), reverse=True)),
        )

    def set_up(self, node: int, up: bool) -> None:
        """Mark ``node`` up or down (down servers are never candidates)."""
        if self.up[node] == up:
            return
        self.up[node] = up
        if up:
            self.classes.add(node)
        else:
            self.classes.remove(node)

    def place(self, ask: Ask, node: int, gpus: tuple[int, ...]) -> None:
        """Put ``ask`` on ``node`` using GPU slots ``gpus``."""
        self.classes.remove(node)
        dem = ask.demand
        self.free[node] -= dem
        self.free_t[:, node] = self.free[node]
        if gpus:
            for g in gpus:
                self.gpu_free[node, g] -= ask.gpu_milli if ask.gpu_milli < 1000 else 1000
            self._refresh_gpu(node)
        self.count[node] += 1
        self.p95_used[node] += ask.p95_demand
        self.residents[node][ask.index] = ask.predicted_departure
        if ask.gpu_count:
            shapes = self.gpu_shapes[node]
            shapes[ask.gpu_milli] = shapes.get(ask.gpu_milli, 0) + 1
        if ask.predicted_departure > self.exit_time[node]:
            self.exit_time[node] = ask.predicted_departure
        rack = int(self.cluster.rack[node])
        if ask.tenant >= 0:
            racks = self.tenant_racks.setdefault(ask.tenant, {})
            racks[rack] = racks.get(rack, 0) + 1
        self.placed[ask.index] = (node, gpus, dem, ask.gpu_milli, ask.p95_demand)
        self.classes.add(node)

    def release(self, index: int, tenant: int = -1) -> int:
        """Remove request ``index``; returns the node it was on (-1 if not placed)."""
        entry = self.placed.pop(index, None)
        if entry is None:
            return -1
        node, gpus, dem, milli, p95 = entry
        if self.up[node]:
            self.classes.remove(node)
        self.free[node] += dem
        self.free_t[:, node] = self.free[node]
        if gpus:
            for g in gpus:
                self.gpu_free[node, g] += milli if milli < 1000 else 1000
            self._refresh_gpu(node)
        self.count[node] -= 1
        self.p95_used[node] -= p95
        if gpus:
            shapes = self.gpu_shapes[node]
            shapes[milli] -= 1
            if not shapes[milli]:
                del shapes[milli]
        res = self.residents[node]
        res.pop(index, None)
        self.exit_time[node] = max(res.values()) if res else -np.inf
        if tenant >= 0:
            racks = self.tenant_racks.get(tenant)
            rack = int(self.cluster.rack[node])
            if racks and rack in racks:
                racks[rack] -= 1
        if self.count[node] == 0:  # wipe float drift on an emptied server
            self.free[node] = self.cluster.capacity[node]
            self.free_t[:, node] = self.free[node]
            self.p95_used[node] = 0.0
        if self.up[node]:
            self.classes.add(node)
        return node

    def residents_of(self, node: int) -> list[int]:
        """Requests now on ``node``."""
        return list(self.residents[node])


class ServerClasses:
    """Servers grouped by identical resource state (type, free capacity, GPU shares).

    Resource-only scores are equal within a class, so a policy scores one row per
    class instead of one per server; each class keeps its members in a heap so its
    lowest-numbered member (the first-fit tie-break) is at hand.
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        n, d = state.free.shape
        g = state.gpu_free.shape[1]
        size = 64
        self.free = np.zeros((size, d))
        self.inv = np.zeros((size, d))
        self.gpu = np.full((size, g), -1, dtype=np.int64)
        self.gpu_max = np.zeros(size, dtype=np.int64)
        self.gpu_whole = np.zeros(size, dtype=np.int64)
        self.first = np.zeros(size, dtype=np.int64)
        self.uid = np.zeros(size, dtype=np.int64)
        self.live: list[int] = [0] * size  # uid of the live class per slot, 0 if none
        self.next_uid = 1
        self.alive = np.zeros(size, dtype=bool)
        self.keys: list[tuple] = [()] * size
        self.slot_of: dict[tuple, int] = {}
        self.members: list[set[int]] = [set() for _ in range(size)]
        self.heaps: list[list[int]] = [[] for _ in range(size)]
        self.node_slot = np.full(n, -1, dtype=np.int64)
        self.spare: list[int] = list(range(size - 1, -1, -1))
        # creation log (slot, uid) read by the per-shape score heaps (_shape_index);
        # trimmed by starting a new epoch, which makes every heap rebuild
        self.log: list[int] = []
        self.log_uid: list[int] = []
        self.epoch = 0
        self.log_limit = 1024
        self.indexes: dict[tuple, ShapeIndex] = {}
        for node in range(n):
            self.add(node)

    def _grow(self) -> None:
        old = self.free.shape[0]
        new = old * 2
        for name in ("free", "inv", "gpu"):
            arr = getattr(self, name)
            fill = -1 if name == "gpu" else 0
            ext = np.full((new - old, arr.shape[1]), fill, dtype=arr.dtype)
            setattr(self, name, np.vstack([arr, ext]))
        for name in ("gpu_max", "gpu_whole", "first", "uid", "alive"):
            arr = getattr(self, name)
            setattr(self, name, np.concatenate([arr, np.zeros(new - old, dtype=arr.dtype)]))
        self.keys.extend([()] * (new - old))
        self.live.extend([0] * (new - old))
        self.members.extend(set() for _ in range(new - old))
        self.heaps.extend([] for _ in range(new - old))
        self.spare.extend(range(new - 1, old - 1, -1))

    def add(self, node: int) -> None:
        """Put ``node`` into the class of its current state."""
        st = self.state
        key = st.key(node)
        slot = self.slot_of.get(key)
        if slot is None:
            if not self.spare:
                self._grow()
            slot = self.spare.pop()
            self.slot_of[key] = slot
            self.keys[slot] = key
            self.free[slot] = st.free[node]
            self.inv[slot] = st.inv_cap[node]
            self.gpu[slot] = st.gpu_free[node]
            self.gpu_max[slot] = st.gpu_max[node]
            self.gpu_whole[slot] = st.gpu_whole[node]
            self.alive[slot] = True
            self.uid[slot] = self.next_uid
            self.live[slot] = self.next_uid
            self.next_uid += 1
            self.first[slot] = node
            self.heaps[slot] = [node]
            self.members[slot] = {node}
            if len(self.log) > 4 * max(len(self.slot_of), self.log_limit):
                self.log, self.log_uid = [], []
                self.epoch += 1
                self.indexes.clear()
            self.log.append(slot)
            self.log_uid.append(self.live[slot])
        else:
            self.members[slot].add(node)
            heapq.heappush(self.heaps[slot], node)
            if node < self.first[slot]:
                self.first[slot] = node
        self.node_slot[node] = slot

    def remove(self, node: int) -> None:
        """Take ``node`` out of its class."""
        slot = int(self.node_slot[node])
        if slot < 0:
            return
        self.node_slot[node] = -1
        mem = self.members[slot]
        mem.discard(node)
        if not mem:
            self.alive[slot] = False
            self.live[slot] = 0
            del self.slot_of[self.keys[slot]]
            self.heaps[slot] = []
            self.spare.append(slot)
            return
        heap = self.heaps[slot]
        while heap[0] not in mem:
            heapq.heappop(heap)
        self.first[slot] = heap[0]

    def fits(self, ask: Ask) -> np.ndarray:
        """Boolean mask over class slots that can host ``ask``."""
        st = self.state
        mask = self.alive.copy()
        for j, need in enumerate(ask.demand):
            if need > 0 and j != st.gpu_col:
                mask &= self.free[:, j] >= need - 1e-9
        if ask.gpu_count > 0:
            if ask.gpu_milli < 1000:
                mask &= self.gpu_max >= ask.gpu_milli
            else:
                mask &= self.gpu_whole >= ask.gpu_count
            if ask.gpu_model:
                mask &= st.model_mask(ask.gpu_model)[self.first]
        return mask
