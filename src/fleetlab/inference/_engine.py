"""The serving engine: continuous-batching replicas driven by one cluster event loop.

Design for speed (1M requests through 16 replicas in about a minute on 2 cores):

* The performance model is compiled to look-up tables (:mod:`._perf`), so an iteration's
  time is ``linear[tokens] + head[seqs] + a_p * pairs + a_d * context``.
* A replica that only decodes advances a whole *stretch* of iterations in closed form:
  with ``n`` sequences and context sum ``S`` the ``j``-th iteration takes
  ``A + b (S + j n)``, so ``k`` iterations take ``k A + b (k S + n k (k-1) / 2)``. A
  stretch ends at the next finish (a heap keyed by the iteration a sequence completes),
  at the next KV-block shortage, or, when a request is routed to the replica, at the end
  of the iteration running at that moment (solved from the quadratic).
* Per-token work is never done in Python: a decoding sequence is the pair
  (iteration it joined, context then); its state at any iteration follows from the
  replica's iteration counter.

The loop is a tight heap of replica wake-ups and KV hand-offs merged with the sorted
arrival array; it does not use :class:`fleetlab.sim.EventLoop` because profiling showed
the generic callback dispatch costing more than the simulation work itself.

Pipeline parallelism (``pp > 1``) follows vLLM's virtual engines: a replica is ``pp``
*lanes*, each a full continuous-batching scheduler with ``1/pp`` of the KV blocks, so up
to ``pp`` micro-batches are in flight, one per stage. A lane's iteration passes the
stages in order; each stage serves one micro-batch at a time, first come first served,
so its times follow from the stages' "free at" clocks when it is planned (no per-stage
events). A lane advances one iteration per event (no closed-form stretches, which would
skip over the other lanes' stage occupancy); ``pp == 1`` keeps the stretches.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from fleetlab.inference._perf import IterationModel

__all__ = ["EngineResult", "Router", "make_router", "run_engine"]

_NEVER = 1 << 60


class Router(Protocol):
    """Chooses the replica a request goes to.

    ``route(rid, pool)`` gets the request index and the candidate replicas (objects with
    ``outstanding`` (requests routed and not finished), ``kv_load()`` (fraction of KV
    blocks in use) and ``index``) and returns a position in ``pool``.
    """

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        """Position in ``pool`` of the replica that serves request ``rid``."""
        ...


class _RoundRobin:
    """Replicas in turn."""

    def __init__(self) -> None:
        self.next = 0

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        i = self.next % len(pool)
        self.next += 1
        return i


class _LeastOutstanding:
    """The replica with the fewest unfinished requests (lowest index on ties)."""

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        best, bi = _NEVER, 0
        for i, rep in enumerate(pool):
            if rep.outstanding < best:
                best, bi = rep.outstanding, i
        return bi


class _LeastKv:
    """The replica with the lowest KV-cache load (waiting prompts counted)."""

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        loads = [rep.kv_load() for rep in pool]
        return int(np.argmin(loads))


class _PowerOfTwo:
    """Two replicas drawn at random; the one with fewer unfinished requests."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        if len(pool) == 1:
            return 0
        a, b = self.rng.choice(len(pool), size=2, replace=False)
        return int(a if pool[a].outstanding <= pool[b].outstanding else b)


class _PrefixAffinity:
    """Requests sharing a first prefix id go to the same replica (least outstanding first)."""

    def __init__(self, keys: Sequence[int], slack: int = 8) -> None:
        self.keys = keys
        self.slack = slack
        self.home: dict[int, int] = {}
        self.fallback = _LeastOutstanding()

    def route(self, rid: int, pool: Sequence[Any]) -> int:
        key = self.keys[rid]
        least = self.fallback.route(rid, pool)
        if key < 0:
            return least
        home = self.home.get(key)
        if (
            home is None
            or home >= len(pool)
            or (pool[home].outstanding > pool[least].outstanding + self.slack)
        ):
            self.home[key] = least
            return least
        return home


def make_router(name: str, *, seed: int = 0, prefix_keys: Sequence[int] | None = None) -> Router:
    """Build a fresh built-in router by name.

    Parameters
    ----------
    name : {"round_robin", "least_outstanding", "least_kv", "power_of_two", "prefix"}
        Policy.
    seed : int
        Seed of ``power_of_two``'s draws.
    prefix_keys : sequence of int, optional
        Per request, its first prefix id (-1 if none); needed by ``prefix``.

    Returns
    -------
    Router
    """
    from fleetlab.errors import ConfigError
    from fleetlab.sim import stream

    if name == "round_robin":
        return _RoundRobin()
    if name == "least_outstanding":
        return _LeastOutstanding()
    if name == "least_kv":
        return _LeastKv()
    if name == "power_of_two":
        return _PowerOfTwo(stream(seed, "inference.router"))
    if name == "prefix":
        return _PrefixAffinity(prefix_keys or [])
    raise ConfigError(
        f"unknown router {name!r} (expected one of: least_kv, least_outstanding, "
        "power_of_two, prefix, round_robin)"
    )


@dataclass
class PoolConfig:
    """What the engine needs to know about one pool of identical replicas."""

    perf: IterationModel
    kv_blocks: int
    block_size: int
    scheduler: str
    max_num_seqs: int
    max_batched_tokens: int
    chunk_size: int
    prefix_caching: bool
    prefix_block_tokens: int
    role: str  # "mixed", "prefill", "decode"
    gpus: int
    power: Any  # a GpuSpec (power_w), priced per GPU
    #: board power cap per GPU (W); None is the GPU's TDP
    power_limit_w: float | None = None
    #: pipeline stages; with pp > 1, ``pp_send[t]`` is one stage-to-stage send of t tokens
    pp: int = 1
    pp_send: np.ndarray | None = None
    #: CPU part of an iteration (seconds per iteration, per sequence): with pp > 1 it runs
    #: on the host before the first stage and occupies no stage
    cpu_overhead_s: tuple[float, float] = (0.0, 0.0)


@dataclass
class EngineResult:
    """Raw arrays of one engine run (indices follow the arrival-sorted request order)."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    admitted_s: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    prefill_replica: np.ndarray
    cached_tokens: np.ndarray
    tbt_max_s: np.ndarray
    busy_s: list[float]
    energy_j: list[float]
    idle_w: list[float]
    iterations: list[int]
    tokens: list[int]
    end_s: float
    seqs: list[int] = field(default_factory=list)
    series: dict[str, list[Any]] = field(default_factory=dict)
    queue_area: float = 0.0
    #: arrival time of every request as simulated (closed-loop requests get theirs when
    #: their predecessor finishes; open-loop ones keep the given time)
    arrival_s: np.ndarray | None = None
    #: ``preprocess_s`` only: when each request entered the preprocessing queue (its
    #: ``arrival_s`` is then when preprocessing ended and the scheduler saw it)
    sent_s: np.ndarray | None = None
    #: faults only: per request, times re-sent after its replica went down, whether it
    #: failed (``on_crash="drop"``), and the tokens those re-sends had to prefill again
    retries: np.ndarray | None = None
    failed: np.ndarray | None = None
    reprefill_tokens: np.ndarray | None = None


class _Replica:
    """Mutable state of one replica during a run."""

    __slots__ = (
        "busy",
        "cache",
        "cfg",
        "dec_ctx",
        "dec_n",
        "down",
        "energy",
        "evn",
        "fast",
        "gk",
        "group",
        "gv",
        "heap",
        "index",
        "it",
        "iters",
        "kv_fixed",
        "last_sample",
        "order",
        "outstanding",
        "pend",
        "prefilling",
        "rep",
        "seqs",
        "slow",
        "step",
        "tokens",
        "ver",
        "wait_len",
        "waiting",
    )

    def __init__(self, index: int, cfg: PoolConfig, rep: int | None = None) -> None:
        self.index = index  # position in the engine's flat list (event dispatch)
        self.rep = index if rep is None else rep  # the replica it reports as
        self.group: _Pipeline | None = None
        self.cfg = cfg
        self.waiting: deque[int] = deque()
        self.prefilling: list[list[int]] = []  # [rid, done, total] (sarathi chunks)
        self.heap: list[tuple[int, int, int]] = []  # (finish_iter, rid, ver)
        self.order: list[tuple[int, int]] = []  # (rid, ver) in admission order (LIFO preempt)
        self.dec_n = 0
        self.dec_ctx = 0
        self.it = 0
        self.kv_fixed = 0
        self.outstanding = 0
        self.step: tuple[Any, ...] | None = None
        self.ver = 0
        self.busy = 0.0
        self.energy = 0.0
        self.iters = 0
        self.tokens = 0
        self.seqs = 0  # sequences summed over iterations (mean batch size = seqs / iters)
        self.cache: OrderedDict[int, None] = OrderedDict()
        self.last_sample = -math.inf
        self.wait_len = 0
        # suffix maxima of inter-token gaps, keyed by the iteration they start at
        # (a monotonic stack: a request's max TBT is the first entry at or after its join)
        self.gk: list[int] = []
        self.gv: list[float] = []
        self.evn = 0  # gap events so far (the key of the next one)
        self.pend: list[tuple[int, float]] = []  # prefill-only iterations that paused decodes
        self.down = 0  # open crash/partition windows (faults): > 0 means unreachable
        self.slow = 1.0  # slowdown factor on iteration times (faults)
        perf, g = cfg.perf, cfg.power
        # hot-path constants as plain Python numbers (numpy scalars are slow)
        self.fast = (
            perf.linear.tolist(),
            perf.head.tolist(),
            perf.attn_fixed,
            perf.attn_prefill_per_pair,
            perf.attn_decode_per_token,
            perf.linear_flops_per_token,
            perf.attn_flops_per_ctx,
            perf.peak_flops_total,
            g.idle_w * cfg.gpus,
            (g.tdp_w - g.idle_w) * cfg.gpus,
            g.power_per_compute_util,
            g.power_base,
            len(perf.linear),
            len(perf.head),
            perf.attn_flops_per_pair,
            g.power_per_memory_util,
            perf.hbm_bytes_per_s,
            perf.weight_bytes_per_gpu,
            perf.kv_bytes_per_token_per_gpu,
            # busy power never exceeds the limit: the clock drops to hold it
            1.0
            if cfg.power_limit_w is None
            else min(1.0, (cfg.power_limit_w - g.idle_w) / (g.tdp_w - g.idle_w)),
        )

    def used_blocks(self) -> int:
        if self.cfg.scheduler == "orca":
            return self.kv_fixed
        b = self.cfg.block_size
        return self.kv_fixed + (self.dec_ctx + self.dec_n * (b - 1)) // b

    def kv_load(self) -> float:
        return (self.used_blocks() + self.wait_len) / self.cfg.kv_blocks


class _Pipeline:
    """A pipeline-parallel replica: its lanes (virtual engines) and its stages' clocks.

    Routers see this object (``outstanding``, ``kv_load()``, ``index``); a routed
    request goes to the lane with the fewest unfinished requests, as vLLM's
    virtual engines do.
    """

    __slots__ = ("cpu", "free", "index", "lanes", "last_sample", "send", "stages")

    def __init__(
        self, index: int, lanes: list[_Replica], send: list[float], cpu: tuple[float, float]
    ) -> None:
        self.index = index
        self.lanes = lanes
        self.stages = len(lanes)
        self.free = [0.0] * self.stages  # when each stage finishes its queued work
        self.send = send
        self.cpu = cpu
        self.last_sample = -math.inf

    @property
    def outstanding(self) -> int:
        return sum(lane.outstanding for lane in self.lanes)

    def kv_load(self) -> float:
        used = sum(lane.used_blocks() + lane.wait_len for lane in self.lanes)
        return used / sum(lane.cfg.kv_blocks for lane in self.lanes)

    def lane(self) -> _Replica:
        best = self.lanes[0]
        for lane in self.lanes:
            if lane.outstanding < best.outstanding:
                best = lane
        return best

    def run(
        self, now: float, dur: float, head: float, tokens: int, seqs: int
    ) -> tuple[float, float]:
        """Put one micro-batch through the stages; return (its finish time, busy time).

        ``dur`` is the iteration's time through all stages with ``pp - 1`` sends
        (:class:`IterationModel`) and ``head`` its LM head + sampling + CPU part. The
        CPU part (scheduling, input preparation) runs on the host first and holds no
        stage, the LM head and sampling run on the last stage, and the layers' time is
        split evenly over the stages (layers are). The busy time is the stages' total
        work divided by their number (the replica-equivalent time used for utilisation
        and energy).
        """
        p = self.stages
        send = self.send[tokens if tokens < len(self.send) else len(self.send) - 1]
        cpu = self.cpu[0] + self.cpu[1] * seqs
        head -= cpu
        body = (dur - head - cpu - (p - 1) * send) / p
        free = self.free
        t = now + cpu
        for s in range(p):
            if s:
                t += send
            if free[s] > t:
                t = free[s]
            t += body if s < p - 1 else body + head
            free[s] = t
        return t, body + head / p


def run_engine(
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    pools: Sequence[PoolConfig],
    sizes: Sequence[int],
    *,
    routers: Sequence[Router],
    prefixes: Sequence[Sequence[int]] | None = None,
    kv_transfer_s_per_token: float = 0.0,
    sample_every_s: float = 1.0,
    successor: np.ndarray | None = None,
    send_delay_s: np.ndarray | None = None,
    faults: Sequence[tuple[float, int, int, float]] | None = None,
    on_crash: str = "retry",
    preprocess_s: np.ndarray | None = None,
    mixed_prompt_tokens: int | None = None,
) -> EngineResult:
    """Simulate requests (sorted by arrival) through one or two pools of replicas.

    With one pool (role ``mixed``) requests are served end to end. With two pools
    (roles ``prefill`` and ``decode``) a request's prompt runs on the first, its KV cache
    moves to a replica of the second after ``prompt * kv_transfer_s_per_token`` seconds,
    and decoding continues there.

    Closed-loop clients (off by default): with ``successor``, request ``successor[i]``
    (``-1``: none) is sent the moment request ``i`` finishes, plus ``send_delay_s[succ]``
    seconds when given (the client's own time between receiving its last token and
    sending the next request). Such requests carry ``inf`` in ``arrival`` (after every
    finite arrival); their simulated send times come back in ``EngineResult.arrival_s``.
    This is how a benchmark client at fixed concurrency behaves, and it is exact: a send
    time follows from the finish event itself, never from an earlier pass.

    Serial preprocessing (off by default): with ``preprocess_s``, a request reaches the
    router ``preprocess_s[i]`` seconds after it reaches the front of one first-come,
    first-served preprocessing queue shared by all requests (a frontend's single
    tokenizer thread); it enters that queue at its arrival or closed-loop send time,
    which come back in ``EngineResult.sent_s``, while ``arrival_s`` holds when
    preprocessing ended.

    Mixed pool (off by default; two pools of ``pp == 1`` replicas only): with
    ``mixed_prompt_tokens``, a replica of one pool takes the other pool's phase when that
    pool is overloaded, as Splitwise's mixed pool does. A prompt whose prefill replica
    already has queued work and would then hold more than ``mixed_prompt_tokens`` prompt
    tokens runs on the decode replica with the fewest pending prompt tokens instead, and
    decodes there. A prefilled request whose decode replica could not hold its whole KV
    cache (prompt and output, on top of what it holds and has queued) decodes on its
    prefill replica if that one can. Either way the request is served end to end on one
    replica, with no KV transfer.

    Faults (off by default; one pool of ``pp == 1`` replicas only): ``faults`` is a list
    of ``(t_s, replica, action, factor)`` with action 0 = the replica becomes unreachable
    (a crash or partition window starts), 1 = one such window ends, 2 = its iteration
    times are multiplied by ``factor`` from now (1.0 ends a slowdown). An unreachable
    replica loses every request on it (waiting, prefilling, decoding) with its KV cache:
    ``on_crash="retry"`` re-sends each to the router at that instant (it prefills its
    prompt and the tokens it already produced again), ``"drop"`` fails it. The router
    only sees reachable replicas; with none, arrivals wait at the router until one
    recovers. A decode stretch is cut at a slowdown boundary (the iteration running
    then keeps its old speed) and, at a crash, the iterations completed before it count.

    Returns
    -------
    EngineResult
    """
    n_req = len(arrival)
    arr = arrival.tolist()
    succ = successor.tolist() if successor is not None else None
    delay = send_delay_s.tolist() if send_delay_s is not None else None
    pre = preprocess_s.tolist() if preprocess_s is not None else None
    if pre is not None and len(pre) != n_req:
        raise ValueError(f"preprocess_s has {len(pre)} entries, expected {n_req}")
    sent_t = list(arrival.tolist()) if pre is not None else []
    pre_free = -math.inf  # when the preprocessing worker is next idle
    n_open = n_req
    if succ is not None:
        if len(succ) != n_req:
            raise ValueError(f"successor has {len(succ)} entries, expected {n_req}")
        n_open = sum(1 for a in arr if a != math.inf)
        if any(a == math.inf for a in arr[:n_open]):
            raise ValueError("closed-loop requests (arrival inf) must follow every finite one")
    p_len = prompt.tolist()
    o_len = output.tolist()
    first_t = [math.nan] * n_req
    fin_t = [math.nan] * n_req
    adm_t = [math.nan] * n_req
    pre_n = [0] * n_req
    rep_of = [-1] * n_req
    prep_of = [-1] * n_req
    cached = [0] * n_req
    tbt_max = [0.0] * n_req
    jkey = [0] * n_req  # the replica's gap-event count when the request joined decode
    gen = [0] * n_req  # tokens generated before the current decode join
    todo = list(p_len)  # tokens to prefill at next admission
    prefilled = [False] * n_req
    it0 = [0] * n_req
    ctx0 = [0] * n_req
    rver = [0] * n_req
    pref = prefixes if prefixes is not None else None
    retry_n = [0] * n_req
    failed = [False] * n_req
    reprefill = [0] * n_req
    lost_t = [math.nan] * n_req  # time of the last token before a crash (TBT across retry)
    held: deque[int] = deque()  # arrivals waiting at the router while no replica is up

    replicas: list[list[Any]] = []  # per pool, what its router sees
    flat: list[_Replica] = []  # every engine (a replica, or a lane of a pipelined one)
    owners: list[list[_Replica]] = []  # per reported replica, its engines
    for cfg, size in zip(pools, sizes, strict=True):
        reps: list[Any] = []
        for _ in range(size):
            if cfg.pp > 1:
                if cfg.pp_send is None:
                    raise ValueError("a pool with pp > 1 needs pp_send")
                lane_cfg = replace(cfg, kv_blocks=cfg.kv_blocks // cfg.pp)
                lanes = []
                for _lane in range(cfg.pp):
                    r = _Replica(len(flat), lane_cfg, rep=len(owners))
                    lanes.append(r)
                    flat.append(r)
                g = _Pipeline(len(owners), lanes, cfg.pp_send.tolist(), cfg.cpu_overhead_s)
                for r in lanes:
                    r.group = g
                reps.append(g)
                owners.append(lanes)
            else:
                r = _Replica(len(flat), cfg, rep=len(owners))
                reps.append(r)
                flat.append(r)
                owners.append([r])
        replicas.append(reps)
    entry_pool = replicas[0]
    decode_pool = replicas[1] if len(replicas) > 1 else None
    entry_piped = pools[0].pp > 1
    decode_piped = len(pools) > 1 and pools[1].pp > 1
    entry_router = routers[0]
    decode_router = routers[1] if len(routers) > 1 else routers[0]
    with_faults = faults is not None
    if with_faults and (decode_pool is not None or entry_piped):
        raise ValueError("faults need one pool of replicas with pp == 1")
    mixing = mixed_prompt_tokens is not None
    if mixing and (decode_pool is None or entry_piped or decode_piped):
        raise ValueError("a mixed pool needs a prefill and a decode pool with pp == 1")
    dest = [-1] * n_req  # mixed pool: the decode replica chosen when the prefill ended
    if on_crash not in ("retry", "drop"):
        raise ValueError(f"on_crash must be 'retry' or 'drop', got {on_crash!r}")

    events: list[tuple[float, int, int, int, int]] = []  # (t, seq, kind, a, ver)
    seq = 0
    fault_acts: list[tuple[int, int, float]] = []
    for ft, frep, fact, ffac in faults or ():
        # kind 3: a fault boundary; its seq sorts after every engine event at the same
        # instant, so an iteration ending exactly at a crash completes first
        if not 0 <= frep < len(flat):
            raise ValueError(f"fault on replica {frep}, expected 0..{len(flat) - 1}")
        events.append((float(ft), _NEVER + len(fault_acts), 3, len(fault_acts), 0))
        fault_acts.append((frep, fact, float(ffac)))
    heapq.heapify(events)
    series: dict[str, list[Any]] = {
        "t_s": [],
        "replica": [],
        "running": [],
        "waiting": [],
        "kv_used": [],
        "busy": [],
    }
    queue_area = 0.0
    in_system = 0
    last_t = 0.0

    def sample(r: _Replica, now: float) -> None:
        if now - r.last_sample < sample_every_s:
            return
        r.last_sample = now
        g = r.group
        if g is not None:  # a pipelined replica reports its lanes together
            if now - g.last_sample < sample_every_s:
                return
            g.last_sample = now
            lanes = g.lanes
            series["t_s"].append(now)
            series["replica"].append(g.index)
            series["running"].append(sum(x.dec_n + len(x.prefilling) for x in lanes))
            series["waiting"].append(sum(len(x.waiting) for x in lanes))
            series["kv_used"].append(
                sum(x.used_blocks() for x in lanes) / sum(x.cfg.kv_blocks for x in lanes)
            )
            series["busy"].append(any(x.step is not None for x in lanes))
            return
        series["t_s"].append(now)
        series["replica"].append(r.rep)
        series["running"].append(r.dec_n + len(r.prefilling))
        series["waiting"].append(len(r.waiting))
        series["kv_used"].append(r.used_blocks() / r.cfg.kv_blocks)
        series["busy"].append(r.step is not None)

    def account(
        r: _Replica, dur: float, flops: float, nbytes: float, tokens: int, iters: int
    ) -> None:
        r.busy += dur
        r.iters += iters
        r.tokens += tokens
        if dur > 0:
            f = r.fast
            # busy power: idle + dynamic * min(1, base + k_m u_mem + k_c u_compute), as in
            # GpuSpec.power_w; ``nbytes`` is what one GPU read from HBM
            level = f[11] + f[15] * nbytes / (dur * f[16]) + f[10] * flops / (dur * f[7])
            r.energy += (f[8] + f[9] * (level if level < f[19] else f[19])) * dur

    def prefix_hits(r: _Replica, rid: int) -> int:
        ids = pref[rid] if pref is not None else ()
        if not ids:
            return 0
        cache = r.cache
        hits = 0
        for h in ids:
            if h in cache:
                hits += 1
                cache.move_to_end(h)
            else:
                break
        cap = max(1, r.cfg.kv_blocks * r.cfg.block_size // r.cfg.prefix_block_tokens)
        for h in ids[hits:]:
            cache[h] = None
        while len(cache) > cap:
            cache.popitem(last=False)
        return hits * r.cfg.prefix_block_tokens

    def join_decode(r: _Replica, rid: int, now: float) -> None:
        """``rid`` has its first ``gen`` tokens; it decodes from the next iteration."""
        remaining = o_len[rid] - gen[rid]
        if remaining <= 0:
            finish(r, rid, now)
            return
        c = p_len[rid] + gen[rid]
        it0[rid] = r.it
        jkey[rid] = r.evn
        ctx0[rid] = c
        v = rver[rid]
        heapq.heappush(r.heap, (r.it + remaining, rid, v))
        r.order.append((rid, v))
        r.dec_n += 1
        r.dec_ctx += c

    def push_gap(r: _Replica, key: int, value: float) -> None:
        gk, gv = r.gk, r.gv
        while gv and gv[-1] <= value:
            gk.pop()
            gv.pop()
        gk.append(key)
        gv.append(value)

    def push_decode_gap(r: _Replica, first: float, largest: float) -> None:
        """A decode event whose first iteration takes ``first`` and longest ``largest``."""
        if r.pend:
            # decodes paused by prefill-only iterations: their gap spans every pause since
            total = sum(d for _, d in r.pend)
            for key, d in r.pend:
                push_gap(r, key, total + first)
                total -= d
            r.pend.clear()
        push_gap(r, r.evn, largest)
        r.evn += 1

    def gap_since(r: _Replica, start: int) -> float:
        i = bisect_left(r.gk, start)
        return r.gv[i] if i < len(r.gv) else 0.0

    def release(rid: int, now: float) -> None:
        """Closed loop: ``rid`` finished, so its client sends its next request."""
        nonlocal seq
        nxt = succ[rid]  # type: ignore[index]
        if nxt >= 0:
            seq += 1
            t = now + (delay[nxt] if delay is not None else 0.0)
            heapq.heappush(events, (t, seq, 2 if pre is None else 5, nxt, 0))

    def finish(r: _Replica, rid: int, now: float) -> None:
        nonlocal in_system
        fin_t[rid] = now
        if succ is not None:
            release(rid, now)
        if o_len[rid] > 1:
            g = gap_since(r, jkey[rid])
            if g > tbt_max[rid]:
                tbt_max[rid] = g
        r.outstanding -= 1
        in_system -= 1
        if r.cfg.scheduler == "orca":
            r.kv_fixed -= -(-(p_len[rid] + o_len[rid]) // r.cfg.block_size)

    def handoff(r: _Replica, rid: int, now: float) -> None:
        """Prefill done on a prefill replica: free it there, send the KV to decode."""
        nonlocal seq
        r.outstanding -= 1
        if r.cfg.scheduler == "orca":
            r.kv_fixed -= -(-(p_len[rid] + o_len[rid]) // r.cfg.block_size)
        if o_len[rid] - gen[rid] <= 0:
            fin_t[rid] = now
            if succ is not None:
                release(rid, now)
            return
        seq += 1
        heapq.heappush(events, (now + kv_transfer_s_per_token * p_len[rid], seq, 1, rid, 0))

    def enqueue(r: _Replica, rid: int, now: float, front: bool = False) -> None:
        if front:
            r.waiting.appendleft(rid)
        else:
            r.waiting.append(rid)
        r.wait_len += -(-todo[rid] // r.cfg.block_size)
        if r.step is None:
            plan(r, now)
        elif r.step[0] == 0:  # decode stretch: cut it at the iteration running now
            truncate(r, now)

    def truncate(r: _Replica, now: float) -> None:
        nonlocal seq
        _, t0, k, a1, c, n, s_ctx = r.step  # type: ignore[misc]
        dt = now - t0
        if k <= 1:
            return
        if dt <= 0:
            j = 0
        elif c > 0:
            half = c / 2.0
            bq = a1 - half
            j = math.ceil((-bq + math.sqrt(bq * bq + 4 * half * dt)) / (2 * half) - 1e-9)
            j = max(1, j)
            while j > 1 and (j - 1) * a1 + half * (j - 1) * (j - 2) >= dt:
                j -= 1
            while j * a1 + half * j * (j - 1) < dt:
                j += 1
        else:
            j = max(1, math.ceil(dt / a1 - 1e-9))
        if j >= k:
            return
        r.step = (0, t0, j, a1, c, n, s_ctx)
        r.ver += 1
        seq += 1
        heapq.heappush(events, (t0 + j * a1 + c * j * (j - 1) / 2.0, seq, 0, r.index, r.ver))

    def preempt_one(r: _Replica) -> bool:
        while r.order:
            rid, v = r.order.pop()
            if rver[rid] != v or not math.isnan(fin_t[rid]):
                continue
            g = gen[rid] + (r.it - it0[rid])
            gap = gap_since(r, jkey[rid])
            if gap > tbt_max[rid]:
                tbt_max[rid] = gap
            r.dec_n -= 1
            r.dec_ctx -= ctx0[rid] + (r.it - it0[rid])
            rver[rid] += 1
            gen[rid] = g
            todo[rid] = p_len[rid] + g
            prefilled[rid] = False
            pre_n[rid] += 1
            r.waiting.appendleft(rid)
            r.wait_len += -(-todo[rid] // r.cfg.block_size)
            return True
        return False

    def admit_prefill(r: _Replica, now: float, budget: int, seqs_free: int) -> list[int]:
        """Move waiting requests into prefill while limits and KV allow."""
        cfg = r.cfg
        b = cfg.block_size
        out: list[int] = []
        free = cfg.kv_blocks - r.used_blocks() - max(1, cfg.kv_blocks // 100)
        while r.waiting and seqs_free > 0:
            rid = r.waiting[0]
            if prefilled[rid]:
                need = -(-(p_len[rid] + gen[rid] + 1) // b)
                if cfg.scheduler == "orca":
                    need = -(-(p_len[rid] + o_len[rid]) // b)
                if need > free:
                    break
                r.waiting.popleft()
                r.wait_len -= -(-todo[rid] // b)
                free -= need
                seqs_free -= 1
                if math.isnan(adm_t[rid]):
                    adm_t[rid] = now
                if cfg.scheduler == "orca":
                    r.kv_fixed += need
                join_decode(r, rid, now)
                continue
            tokens = todo[rid]
            if cfg.scheduler == "orca":
                need = -(-(p_len[rid] + o_len[rid]) // b)
            else:
                need = -(-tokens // b)
            if need > free:
                break
            if cfg.scheduler != "sarathi" and tokens > budget:
                break
            if cfg.scheduler == "sarathi" and budget <= 0:
                break
            r.waiting.popleft()
            r.wait_len -= -(-tokens // b)
            free -= need
            seqs_free -= 1
            r.kv_fixed += need
            if math.isnan(adm_t[rid]):
                adm_t[rid] = now
            if cfg.prefix_caching and pre_n[rid] == 0:
                hit = min(prefix_hits(r, rid), tokens - 1)
                cached[rid] = hit
            else:
                hit = 0
            r.prefilling.append([rid, hit, tokens])
            out.append(rid)
            if cfg.scheduler == "sarathi":
                budget -= tokens - hit
            else:
                budget -= tokens
        return out

    def plan(r: _Replica, now: float) -> None:
        nonlocal seq
        cfg = r.cfg
        sched = cfg.scheduler
        if now - r.last_sample >= sample_every_s:
            sample(r, now)
        while True:
            # admission
            seqs_free = cfg.max_num_seqs - r.dec_n - len(r.prefilling)
            if r.waiting and seqs_free > 0:
                if sched == "sarathi":
                    budget = cfg.chunk_size - r.dec_n
                    for p in r.prefilling:
                        budget -= p[2] - p[1]
                    if budget > 0:
                        admit_prefill(r, now, budget, seqs_free)
                elif sched == "orca":
                    budget = cfg.max_batched_tokens - r.dec_n
                    admit_prefill(r, now, budget, seqs_free)
                elif not r.prefilling:
                    admit_prefill(r, now, cfg.max_batched_tokens, seqs_free)
            if r.prefilling:
                # one iteration with prefill work
                chunks: list[tuple[list[int], int]] = []  # (prefilling entry, length)
                ptoks = 0
                pairs = 0.0
                nseq = 0
                budget = cfg.chunk_size - r.dec_n if sched == "sarathi" else _NEVER
                for p in r.prefilling:
                    if budget <= 0:
                        break
                    start = p[1]
                    left = p[2] - start
                    ln = left if left < budget else budget
                    chunks.append((p, ln))
                    budget -= ln
                    ptoks += ln
                    pairs += ln * (start + (ln + 1) / 2.0)
                    if ln == left:
                        nseq += 1
                if not chunks:  # decodes alone fill the budget: still progress 1 token
                    p = r.prefilling[0]
                    chunks.append((p, 1))
                    ptoks = 1
                    pairs = p[1] + 1.0
                    nseq = 1 if p[2] - p[1] == 1 else 0
                with_decode = sched != "vllm"
                n = r.dec_n if with_decode else 0
                s_ctx = r.dec_ctx if with_decode else 0
                if with_decode and n and sched != "orca":
                    b = cfg.block_size
                    while n and (r.dec_ctx + r.dec_n * b) // b + r.kv_fixed > cfg.kv_blocks:
                        if not preempt_one(r):
                            break
                        n, s_ctx = r.dec_n, r.dec_ctx
                toks = ptoks + n
                nseq += n
                f = r.fast
                dur = (
                    f[0][toks if toks < f[12] else f[12] - 1]
                    + f[1][nseq if nseq < f[13] else f[13] - 1]
                    + f[2]
                    + f[3] * pairs
                    + f[4] * s_ctx
                )
                flops = f[5] * toks + f[14] * pairs + f[6] * s_ctx
                if r.slow != 1.0:
                    dur *= r.slow
                if r.group is None:
                    r.step = (1, now, chunks, n, dur, flops, toks, s_ctx, dur)
                    end = now + dur
                else:
                    head = f[1][nseq if nseq < f[13] else f[13] - 1]
                    end, busy = r.group.run(now, dur, head, toks, nseq)
                    r.step = (1, now, chunks, n, end - now, flops, toks, s_ctx, busy)
                r.ver += 1
                seq += 1
                heapq.heappush(events, (end, seq, 0, r.index, r.ver))
                return
            if r.dec_n:
                n, s_ctx = r.dec_n, r.dec_ctx
                while r.heap and rver[r.heap[0][1]] != r.heap[0][2]:
                    heapq.heappop(r.heap)
                top = r.heap[0][0] - r.it if r.heap else _NEVER
                k = max(1, top)
                if sched != "orca":
                    b = cfg.block_size
                    room = (cfg.kv_blocks - r.kv_fixed) * b - n * (b - 1) - s_ctx
                    k_kv = room // n
                    if k_kv < 1:
                        if preempt_one(r):
                            continue
                        k_kv = 1
                    k = min(k, k_kv)
                f = r.fast
                a = f[0][n if n < f[12] else f[12] - 1] + f[1][n if n < f[13] else f[13] - 1] + f[2]
                bd = f[4]
                a1 = a + bd * s_ctx
                if r.group is not None:  # one micro-batch iteration through the stages
                    head = f[1][n if n < f[13] else f[13] - 1]
                    end, busy = r.group.run(now, a1, head, n, n)
                    r.step = (2, now, end - now, n, s_ctx, busy)
                    r.ver += 1
                    seq += 1
                    heapq.heappush(events, (end, seq, 0, r.index, r.ver))
                    return
                c = bd * n
                if r.slow != 1.0:
                    a1 *= r.slow
                    c *= r.slow
                dur = k * a1 + c * k * (k - 1) / 2.0
                r.step = (0, now, k, a1, c, n, s_ctx)
                r.ver += 1
                seq += 1
                heapq.heappush(events, (now + dur, seq, 0, r.index, r.ver))
                return
            r.step = None
            return

    def wake(r: _Replica, now: float) -> None:
        step = r.step
        if step is None:
            return
        cfg = r.cfg
        if step[0] == 0:
            _, t0, k, _a1, _c, n, s_ctx = step
            f = r.fast
            ctx_total = k * s_ctx + n * k * (k - 1) / 2.0
            account(
                r,
                now - t0,
                f[5] * n * k + f[6] * ctx_total,
                f[17] * k + f[18] * ctx_total,
                n * k,
                k,
            )
            push_decode_gap(r, _a1, _a1 + _c * (k - 1))
            r.seqs += n * k
            r.it += k
            r.dec_ctx += k * n
        elif step[0] == 2:  # one pipelined decode iteration
            _, t0, lat, n, s_ctx, busy = step
            f = r.fast
            account(r, busy, f[5] * n + f[6] * s_ctx, f[17] + f[18] * s_ctx, n, 1)
            push_decode_gap(r, lat, lat)
            r.seqs += n
            r.it += 1
            r.dec_ctx += n
        else:
            _, t0, chunks, n, dur, flops, toks, s_ctx, busy = step
            f = r.fast
            account(r, busy, flops, f[17] + f[18] * s_ctx, toks, 1)
            r.seqs += n + len(chunks)
            if n:
                push_decode_gap(r, dur, dur)
            elif r.dec_n:  # a prefill-only iteration pauses the running decodes
                r.pend.append((r.evn, dur))
                r.evn += 1
            if n:
                r.it += 1
                r.dec_ctx += n
            done_rids = []
            for p, ln in chunks:
                p[1] += ln
                if p[1] >= p[2]:
                    done_rids.append(p[0])
            if done_rids:
                keep = [p for p in r.prefilling if p[1] < p[2]]
                r.prefilling = keep
                b = cfg.block_size
                for rid in done_rids:
                    if math.isnan(first_t[rid]):
                        first_t[rid] = now
                    elif retry_n[rid] and not math.isnan(lost_t[rid]):
                        if now - lost_t[rid] > tbt_max[rid]:
                            tbt_max[rid] = now - lost_t[rid]
                        lost_t[rid] = math.nan
                    gen[rid] += 1
                    if cfg.scheduler != "orca":
                        r.kv_fixed -= -(-todo[rid] // b)
                    prefilled[rid] = True
                    if cfg.role == "prefill" and not (mixing and decode_here(r, rid)):
                        prep_of[rid] = r.rep
                        handoff(r, rid, now)
                    else:
                        join_decode(r, rid, now)
        # finishes
        heap = r.heap
        while heap and heap[0][0] <= r.it:
            _, rid, v = heapq.heappop(heap)
            if rver[rid] != v:
                continue
            r.dec_n -= 1
            r.dec_ctx -= ctx0[rid] + (r.it - it0[rid])
            gen[rid] = o_len[rid]
            rver[rid] += 1
            finish(r, rid, now)
        r.step = None
        plan(r, now)

    def route_up(rid: int, now: float) -> None:
        """Faults: route ``rid`` over the reachable replicas, or hold it at the router."""
        up = [x for x in entry_pool if not x.down]
        if not up:
            held.append(rid)
            return
        r = up[entry_router.route(rid, up)]
        r.outstanding += 1
        rep_of[rid] = r.rep
        enqueue(r, rid, now)

    def crash(r: _Replica, now: float) -> None:
        """``r`` becomes unreachable: settle its work until ``now``, then evict everything."""
        nonlocal in_system
        step = r.step
        if step is not None and step[0] == 0:  # count the decode iterations done by now
            _, t0, k, a1, c, n, s_ctx = step
            j = 0
            while j < k and t0 + (j + 1) * a1 + c * (j + 1) * j / 2.0 <= now:
                j += 1
            if j:
                f = r.fast
                ctx_total = j * s_ctx + n * j * (j - 1) / 2.0
                account(
                    r,
                    j * a1 + c * j * (j - 1) / 2.0,
                    f[5] * n * j + f[6] * ctx_total,
                    f[17] * j + f[18] * ctx_total,
                    n * j,
                    j,
                )
                push_decode_gap(r, a1, a1 + c * (j - 1))
                r.seqs += n * j
                r.it += j
                r.dec_ctx += j * n
            last = t0 + j * a1 + c * j * (j - 1) / 2.0
        else:  # an interrupted prefill iteration is lost
            last = now
        victims: list[int] = []
        for _, rid, v in r.heap:
            if rver[rid] == v and math.isnan(fin_t[rid]):
                g = gap_since(r, jkey[rid])
                if g > tbt_max[rid]:
                    tbt_max[rid] = g
                gen[rid] += r.it - it0[rid]
                lost_t[rid] = last
                victims.append(rid)
        victims.extend(p[0] for p in r.prefilling)
        victims.extend(r.waiting)
        r.waiting.clear()
        r.prefilling = []
        r.heap = []
        r.order = []
        r.pend = []
        r.cache.clear()
        r.dec_n = r.dec_ctx = r.kv_fixed = r.wait_len = r.outstanding = 0
        r.step = None
        r.ver += 1
        for rid in sorted(victims):
            rver[rid] += 1
            prefilled[rid] = False
            todo[rid] = p_len[rid] + gen[rid]
            if on_crash == "drop":
                failed[rid] = True
                in_system -= 1
                if succ is not None:
                    release(rid, now)
            else:
                retry_n[rid] += 1
                reprefill[rid] += todo[rid]
                route_up(rid, now)

    def fault(idx: int, now: float) -> None:
        frep, act, factor = fault_acts[idx]
        r = flat[frep]
        if act == 0:
            r.down += 1
            if r.down == 1:
                crash(r, now)
        elif act == 1:
            r.down -= 1
            if r.down == 0:
                while held and any(not x.down for x in entry_pool):
                    route_up(held.popleft(), now)
        else:
            r.slow = factor
            if r.step is not None and r.step[0] == 0:
                truncate(r, now)

    def pending_prompt(r: _Replica) -> int:
        """Prompt tokens queued or being prefilled on ``r`` (the mixed pool's load)."""
        return r.wait_len * r.cfg.block_size + sum(p[2] - p[1] for p in r.prefilling)

    def decode_here(r: _Replica, rid: int) -> bool:
        """Mixed pool: pick ``rid``'s decode replica; True to decode on ``r`` instead."""
        assert decode_pool is not None
        d = decode_pool[decode_router.route(rid, decode_pool)]
        dest[rid] = d.index
        need = -(-(p_len[rid] + o_len[rid]) // d.cfg.block_size)
        if d.used_blocks() + d.wait_len + need <= d.cfg.kv_blocks:
            return False
        left = o_len[rid] - gen[rid]
        if r.used_blocks() + r.wait_len + -(-left // r.cfg.block_size) > r.cfg.kv_blocks:
            return False  # no room here either: queue on the decode replica
        prep_of[rid] = rep_of[rid] = r.rep
        return True

    def prompt_elsewhere(r: _Replica, rid: int) -> _Replica:
        """Mixed pool: ``r`` or, when its prompt queue is long, the least-loaded decoder."""
        pending = pending_prompt(r)
        assert decode_pool is not None and mixed_prompt_tokens is not None
        if pending == 0 or pending + p_len[rid] <= mixed_prompt_tokens:
            return r
        return min(decode_pool, key=pending_prompt)

    def admit(rid: int, now: float) -> None:
        """Route a request entering the system (an arrival or a closed-loop send)."""
        if with_faults:
            route_up(rid, now)
            return
        pos = entry_router.route(rid, entry_pool)
        r = entry_pool[pos].lane() if entry_piped else entry_pool[pos]
        if mixing:
            r = prompt_elsewhere(r, rid)
            if r.cfg.role == "decode":  # served end to end there
                r.outstanding += 1
                prep_of[rid] = rep_of[rid] = r.rep
                enqueue(r, rid, now)
                return
        r.outstanding += 1
        if decode_pool is None:
            rep_of[rid] = r.rep
        else:
            prep_of[rid] = r.rep
        enqueue(r, rid, now)

    # main loop
    i = 0
    faults_left = len(fault_acts)
    heappop = heapq.heappop
    while i < n_open or events:
        if i < n_open and (not events or arr[i] < events[0][0]):
            now = arr[i]
            queue_area += in_system * (now - last_t)
            last_t = now
            rid = i
            i += 1
            if pre is not None:  # into the preprocessing queue first
                seq += 1
                heapq.heappush(events, (now, seq, 5, rid, 0))
                continue
            in_system += 1
            admit(rid, now)
            continue
        if with_faults and events[0][2] == 3:
            if i >= n_open and in_system == 0 and len(events) == faults_left:
                break  # only fault boundaries remain: nothing left to serve
            faults_left -= 1
        t, _, kind, a, v = heappop(events)
        queue_area += in_system * (t - last_t)
        last_t = t
        if kind == 0:
            r = flat[a]
            if v != r.ver:
                continue
            wake(r, t)
        elif kind == 2:  # a closed-loop client sends its next request
            rid = a
            arr[rid] = t
            in_system += 1
            admit(rid, t)
        elif kind == 3:
            fault(a, t)
        elif kind == 5:  # a request enters the serial preprocessing queue
            assert pre is not None
            sent_t[a] = t
            pre_free = max(t, pre_free) + pre[a]
            seq += 1
            heapq.heappush(events, (pre_free, seq, 2, a, 0))
        else:
            rid = a
            assert decode_pool is not None
            if dest[rid] >= 0:  # mixed pool: chosen when the prefill ended
                r = flat[dest[rid]]
            else:
                pos = decode_router.route(rid, decode_pool)
                r = decode_pool[pos].lane() if decode_piped else decode_pool[pos]
            r.outstanding += 1
            rep_of[rid] = r.rep
            enqueue(r, rid, t)

    end = last_t
    for r in flat:
        sample(r, end + sample_every_s)
    per_rep = [
        (
            sum(x.busy for x in lanes),
            sum(x.energy for x in lanes),
            sum(x.iters for x in lanes),
            sum(x.tokens for x in lanes),
            lanes[0].cfg.power.idle_w * lanes[0].cfg.gpus,
            sum(x.seqs for x in lanes),
        )
        for lanes in owners
    ]
    return EngineResult(
        first_token_s=np.asarray(first_t),
        tbt_max_s=np.asarray(tbt_max),
        finish_s=np.asarray(fin_t),
        admitted_s=np.asarray(adm_t),
        preemptions=np.asarray(pre_n, dtype=np.int64),
        replica=np.asarray(rep_of, dtype=np.int64),
        prefill_replica=np.asarray(prep_of, dtype=np.int64),
        cached_tokens=np.asarray(cached, dtype=np.int64),
        busy_s=[x[0] for x in per_rep],
        energy_j=[x[1] for x in per_rep],
        idle_w=[x[4] for x in per_rep],
        iterations=[x[2] for x in per_rep],
        tokens=[x[3] for x in per_rep],
        seqs=[x[5] for x in per_rep],
        end_s=end,
        series=series,
        queue_area=queue_area,
        arrival_s=np.asarray(arr, dtype=np.float64),
        sent_s=np.asarray(sent_t, dtype=np.float64) if pre is not None else None,
        retries=np.asarray(retry_n, dtype=np.int64) if with_faults else None,
        failed=np.asarray(failed, dtype=bool) if with_faults else None,
        reprefill_tokens=np.asarray(reprefill, dtype=np.int64) if with_faults else None,
    )
