"""Placement decisions per second on a 10,000-server cluster, and gaps to the lower bound.

Runs, in one process:

1. fleetlab's compiled kernel (``place_stream``: per request shape a tournament tree
   of server scores, in numba), fleetlab's Python policy path (servers grouped into
   classes of identical resource state; score-based policies keep, per request shape,
   a heap of classes keyed by score) and a peer: the straightforward numpy bin-packer
   that scores every server per request (what a "toy bin-packer" does), on the same
   request stream; all three must make the same decisions. Prints decisions/s of each
   (wall clock and per CPU-second) and the ratios.
2. The allocator service: decision latency inside the service (``Allocator.allocate``
   and ``handle``, no sockets) and the HTTP round trip on loopback, with releases.
3. Every policy's decisions/s on the same stream: the kernel for the score-based
   policies, the Python path for all (and whether they agree).
4. The kernel alone on a longer stream (``--kernel-requests``, default 200,000) that
   loads the cluster, so departures keep pace with arrivals.
5. End to end: ``simulate()`` (200 timeline samples, placements, metrics) on that
   stream with ``engine="kernel"`` and ``engine="python"`` (``--e2e-policies``), the
   results checked identical; and the kernel's first-compile cost, measured in fresh
   processes with an empty numba cache directory (then a second process loading it).
6. On each real trace in the mirror: peak servers used by best-fit and FGD vs the
   fluid and LP lower bounds, then the FGD protocol on openb.

Usage: ``python benchmarks/placement.py [--servers 10000] [--requests 20000] [--repeat 3]
[--kernel-requests 200000] [--service-requests 60000] [--e2e-policies best-fit,worst-fit]
[--service-only | --e2e-only | --no-traces | --traces-only]``
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import socket
import time
from pathlib import Path

import numpy as np
import polars as pl

from fleetlab import placement as P
from fleetlab.placement._state import ClusterState, ask_of
from fleetlab.sim import Streams

#: the policies with a compiled form (``place_stream``)
KERNEL_POLICIES = (
    "first-fit",
    "best-fit",
    "best-fit-l2",
    "worst-fit",
    "dot-product",
    "tetris",
    "most-allocated",
    "least-allocated",
    "rtcr",
)


def vm_stream(n: int, servers: int, seed: int = 0) -> pl.DataFrame:
    """Azure-like VM sizes, Poisson arrivals, lognormal lifetimes; ~85% cores in use."""
    rng = Streams(seed).get("bench")
    cores = rng.choice([1, 2, 4, 8, 16, 32], size=n, p=[0.3, 0.3, 0.2, 0.12, 0.06, 0.02])
    ratio = rng.choice([2.0, 4.0, 8.0], size=n, p=[0.3, 0.5, 0.2])
    mean_cores = float(cores.mean())
    life = rng.lognormal(np.log(3600.0), 1.0, size=n)
    # arrival rate so that Little's law gives ~85% of the cluster's cores busy
    rate = 0.85 * servers * 48 / (mean_cores * float(life.mean()))
    arrival = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return pl.DataFrame(
        {
            "vm_id": [f"vm{i}" for i in range(n)],
            "created_s": arrival,
            "deleted_s": arrival + life,
            "cores": cores.astype(float),
            "memory_gb": cores * ratio,
        }
    )


def naive_best_fit(cluster: P.Cluster, reqs: P.Requests) -> tuple[np.ndarray, float, float]:
    """The peer: scan every server with numpy for every request (best fit, L1)."""
    import heapq

    free = cluster.capacity.copy()
    inv = 1.0 / cluster.capacity
    where = np.full(reqs.size, -1)
    heap: list[tuple[float, int]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(reqs.size):
        while heap and heap[0][0] <= reqs.arrival[i]:
            _, j = heapq.heappop(heap)
            free[where[j]] += reqs.demand[j]
        dem = reqs.demand[i]
        ok = (free >= dem - 1e-9).all(axis=1)
        cand = np.flatnonzero(ok)
        if cand.size:
            score = ((free[cand] - dem) * inv[cand]).sum(axis=1)
            best = cand[score <= score.min() + 1e-9 * max(1.0, abs(score.min()))].min()
            free[best] -= dem
            where[i] = best
            heapq.heappush(heap, (reqs.departure[i], i))
    return where, time.perf_counter() - t0, time.process_time() - c0


def fleetlab_run(
    cluster: P.Cluster, reqs: P.Requests, policy: P.Policy
) -> tuple[np.ndarray, float, float]:
    """fleetlab's decide/place/release loop over the same stream (decisions timed)."""
    import heapq

    state = ClusterState(cluster)
    where = np.full(reqs.size, -1)
    heap: list[tuple[float, int]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(reqs.size):
        while heap and heap[0][0] <= reqs.arrival[i]:
            _, j = heapq.heappop(heap)
            state.release(j)
        ask = ask_of(reqs, i)
        choice = P.decide(policy, state, ask)
        if choice is not None:
            state.place(ask, *choice)
            where[i] = choice[0]
            heapq.heappush(heap, (reqs.departure[i], i))
    return where, time.perf_counter() - t0, time.process_time() - c0


def kernel_run(
    cluster: P.Cluster, reqs: P.Requests, policy: P.Policy, repeat: int = 1
) -> tuple[np.ndarray, float, float]:
    """The compiled kernel over the same stream: decisions, wall s, CPU s (best of ``repeat``).

    The VM is shared with other processes, so the fastest of a few runs is the figure
    least disturbed by them (each run is a fresh, complete replay).
    """
    best_wall = best_cpu = math.inf
    node = np.zeros(0, dtype=np.int64)
    for _ in range(max(repeat, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        node = P.place_stream(cluster, reqs, policy).node
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return node, best_wall, best_cpu


def _pct(lat: list[float]) -> str:
    ms = np.array(lat) * 1e3
    return (
        f"p50 {np.percentile(ms, 50):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms  "
        f"p99.9 {np.percentile(ms, 99.9):.3f} ms  max {ms.max():.3f} ms"
    )


def _timed(call, body: dict, wall: list[float], cpu: list[float]) -> bool:
    """Run ``call(body)``, appending its wall and this thread's CPU seconds."""
    t0, c0 = time.perf_counter(), time.thread_time()
    ok = call(body)
    cpu.append(time.thread_time() - c0)
    wall.append(time.perf_counter() - t0)
    return ok


def _replay_service(alloc: P.Allocator, vms: pl.DataFrame, call) -> tuple[list[float], list[float]]:
    """Drive ``alloc`` along the stream: releases due, then one timed allocate each.

    Returns the wall-clock and the thread-CPU seconds of each allocate: the CPU time
    excludes the time the OS scheduler gave other processes (the VM is shared).
    """
    import heapq

    wall: list[float] = []
    cpu: list[float] = []
    due: list[tuple[float, str]] = []
    for r in vms.iter_rows(named=True):
        while due and due[0][0] <= r["created_s"]:
            alloc.release(heapq.heappop(due)[1])
        body = {"vm_id": r["vm_id"], "cores": r["cores"], "memory_gb": r["memory_gb"]}
        if _timed(call, body, wall, cpu):
            heapq.heappush(due, (r["deleted_s"], r["vm_id"]))
    return wall, cpu


def service_latency(cluster: P.Cluster, vms: pl.DataFrame, n: int = 3000) -> None:
    """Per-decision latency of the allocator: inside the service, and over HTTP on loopback.

    Inside: ``Allocator.allocate`` (parse the body, decide, update the state) and
    ``handle`` (JSON bytes in, HTTP response bytes out) over the whole stream with its
    releases. HTTP: the first ``n`` requests to a server process, through a raw keep-alive socket
    (the server's own latency) and through httpx (what a Python caller sees).
    """
    import httpx

    pol = P.make_policy("best-fit")
    alloc = P.Allocator(cluster, pol)
    c0 = time.process_time()
    lat, cpu = _replay_service(alloc, vms, lambda b: alloc.allocate(b) is not None)
    total = time.process_time() - c0
    snap = alloc.snapshot()
    print(
        f"  state at the end: {snap['vms']} VMs on {snap['used_servers']} servers, "
        f"{snap['allocated']['cores']:.0%} of cores allocated, {snap['failures']} failures"
    )
    print(
        f"  in-process allocate (parse + decide + state update), {len(lat)} decisions "
        f"with releases, best-fit, {cluster.size} servers "
        f"({total / len(lat) * 1e6:.0f} CPU-µs per request incl. releases):\n"
        f"    wall {_pct(lat)}\n    CPU  {_pct(cpu)}"
    )
    alloc = P.Allocator(cluster, pol)

    def via_handle(body: dict) -> bool:
        out = P.handle(alloc, "POST", "/allocate", json.dumps(body).encode())
        return out.startswith(b"HTTP/1.1 200")

    lat, cpu = _replay_service(alloc, vms, via_handle)
    print(
        f"  in-process handle (JSON in, HTTP bytes out):\n    wall {_pct(lat)}\n    CPU  {_pct(cpu)}"
    )
    rows = vms.head(n).to_dicts()
    bodies = [
        json.dumps({"vm_id": r["vm_id"], "cores": r["cores"], "memory_gb": r["memory_gb"]})
        for r in rows
    ]
    # The server runs in its own process (as `fleetlab placement serve` does): a server
    # thread in this process would share the GIL with the client and add its switch delays.
    ctx = multiprocessing.get_context("fork")
    port_q = ctx.Queue()
    server = ctx.Process(
        target=P.serve,
        args=(P.Allocator(cluster, pol),),
        kwargs={"host": "127.0.0.1", "port": 0, "ready": lambda addr: port_q.put(addr[1])},
        daemon=True,
    )
    server.start()
    port = port_q.get(timeout=60)
    try:
        lat = _raw_http_round_trips(port, bodies)
        print(f"  HTTP round trip (raw socket client, keep-alive, {n} requests): {_pct(lat)}")
        lat = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for r in rows:
                body = {
                    "vm_id": f"{r['vm_id']}-b",
                    "cores": r["cores"],
                    "memory_gb": r["memory_gb"],
                }
                t0 = time.perf_counter()
                c.post("/allocate", json=body)
                lat.append(time.perf_counter() - t0)
        print(f"  HTTP round trip (httpx client, keep-alive, {n} requests): {_pct(lat)}")
    finally:
        server.terminate()
        server.join(5)


def _raw_http_round_trips(port: int, bodies: list[str]) -> list[float]:
    """Time POST /allocate round trips on one keep-alive socket with no HTTP library."""
    lat = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for body in bodies:
            data = body.encode()
            req = (
                b"POST /allocate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data
            )
            t0 = time.perf_counter()
            sock.sendall(req)
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(buf) < length:
                buf += sock.recv(65536)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"allocate failed: {head[:80]!r}")
            buf = buf[length:]
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument(
        "--policies",
        default="first-fit,best-fit,worst-fit,dot-product,tetris,"
        "most-allocated,least-allocated,rtcr,protean,lifetime,oversub,random",
    )
    ap.add_argument(
        "--service-only",
        action="store_true",
        help="Only measure the allocator service's decision latency.",
    )
    ap.add_argument(
        "--service-requests",
        type=int,
        default=60_000,
        help="Requests replayed through the allocator service (default 60,000).",
    )
    ap.add_argument(
        "--kernel-requests",
        type=int,
        default=200_000,
        help="Requests of the kernel-only steady-state run (default 200,000).",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="Kernel runs per figure (the fastest is kept)."
    )
    ap.add_argument(
        "--e2e-policies",
        default="best-fit,worst-fit",
        help="Policies timed end to end through simulate(), kernel vs Python path.",
    )
    ap.add_argument(
        "--e2e-only",
        action="store_true",
        help="Only the end-to-end simulate() timing and the first-compile cost.",
    )
    ap.add_argument("--no-traces", action="store_true", help="Skip the real-trace part.")
    ap.add_argument("--traces-only", action="store_true", help="Only the real-trace part.")
    args = ap.parse_args()
    spec = P.ClusterSpec(
        server_types=(
            P.ServerType(name="std", count=args.servers, capacity={"cores": 48, "memory_gb": 384}),
        )
    )
    cluster = P.build_cluster(spec)
    reqs = P.requests_from_vms(vm_stream(args.requests, args.servers), cluster)
    if args.service_only:
        print("allocator service latency:")
        service_latency(cluster, vm_stream(args.service_requests, args.servers))
        return
    if args.traces_only:
        real_traces()
        return
    if args.e2e_only:
        end_to_end(cluster, args.servers, args.kernel_requests, args.e2e_policies, args.repeat)
        compile_cost()
        return
    warm = reqs.take(np.arange(min(2000, reqs.size)))
    fleetlab_run(cluster, warm, P.make_policy("best-fit"))
    t0, c0 = time.perf_counter(), time.process_time()
    kernel_run(cluster, warm, P.make_policy("best-fit"))  # loads (or compiles) the kernel
    print(
        f"kernel first call (load from numba's cache, or compile): "
        f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} CPU-s"
    )
    print(f"cluster: {args.servers} servers (48 cores, 384 GiB); {reqs.size} requests")
    comp, t_comp, c_comp = kernel_run(cluster, reqs, P.make_policy("best-fit"), args.repeat)
    ours, t_ours, c_ours = fleetlab_run(cluster, reqs, P.make_policy("best-fit"))
    peer, t_peer, c_peer = naive_best_fit(cluster, reqs)
    same = bool((ours == peer).all() and (comp == ours).all())
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"best-fit  kernel {reqs.size / t_comp:>9,.0f} decisions/s wall "
        f"({reqs.size / c_comp:,.0f}/CPU-s)   Python path {reqs.size / t_ours:>9,.0f} wall "
        f"({reqs.size / c_ours:,.0f}/CPU-s)   peer (numpy full scan) "
        f"{reqs.size / t_peer:>9,.0f} wall ({reqs.size / c_peer:,.0f}/CPU-s)\n"
        f"          kernel/peer {c_peer / c_comp:.0f}x, kernel/Python {c_ours / c_comp:.1f}x, "
        f"Python/peer {c_peer / c_ours:.1f}x (CPU)   same decisions (all three): {same}"
    )
    print("\nallocator service latency:")
    service_latency(cluster, vm_stream(args.service_requests, args.servers))
    print(
        "\nper policy (decisions incl. releases, same stream; kernel where it has one, "
        f"fastest of {args.repeat}):"
    )
    for name in args.policies.split(","):
        pol = P.make_policy(name, seed=0)
        where, t, c = fleetlab_run(cluster, reqs, pol)
        line = (
            f"  {name:<16} Python {reqs.size / t:>9,.0f}/s wall {reqs.size / c:>9,.0f}/CPU-s"
            f"   failures {(where < 0).sum():>6}"
        )
        if name in KERNEL_POLICIES:
            k, tk, ck = kernel_run(cluster, reqs, pol, args.repeat)
            line += (
                f"   kernel {reqs.size / tk:>9,.0f}/s wall {reqs.size / ck:>9,.0f}/CPU-s"
                f"   same: {bool((k == where).all())}"
            )
        print(line)
    steady_state(cluster, args.servers, args.kernel_requests, args.repeat)
    end_to_end(cluster, args.servers, args.kernel_requests, args.e2e_policies, args.repeat)
    compile_cost()
    if not args.no_traces:
        real_traces()


def steady_state(cluster: P.Cluster, servers: int, n: int, repeat: int) -> None:
    """The kernel on a stream long enough to reach a loaded cluster (best of ``repeat``)."""
    reqs = P.requests_from_vms(vm_stream(n, servers), cluster)
    print(f"\nkernel on a longer stream ({n:,} requests, best of {repeat}; CPU-s and wall):")
    for name in KERNEL_POLICIES:
        pol = P.make_policy(name)
        node, wall, cpu = kernel_run(cluster, reqs, pol, repeat)
        end = reqs.arrival[-1]
        live = (node >= 0) & (reqs.departure > end)
        share = reqs.demand[live, 0].sum() / cluster.capacity[:, 0].sum()
        print(
            f"  {name:<16} {n / cpu:>9,.0f} decisions/CPU-s  {n / wall:>9,.0f}/s wall"
            f"   failures {(node < 0).sum():>6}   cores allocated at the end {share:.0%}"
        )


def _same(a: P.SimResult, b: P.SimResult) -> bool:
    """Identical timeline, placements and metrics (all but ``engine``)."""
    ma = {k: v for k, v in a.metrics.items() if k != "engine"}
    mb = {k: v for k, v in b.metrics.items() if k != "engine"}
    return a.timeline.equals(b.timeline) and a.placements.equals(b.placements) and ma == mb


def end_to_end(cluster: P.Cluster, servers: int, n: int, policies: str, repeat: int) -> None:
    """``simulate()`` as users call it: kernel vs Python path on the same long stream.

    The whole call is timed (request preparation, the replay, 200 timeline samples,
    the placements table and the metrics); the kernel run is the fastest of
    ``repeat``, the Python path runs once (it takes tens of seconds).
    """
    vms = vm_stream(n, servers)
    reqs = P.requests_from_vms(vms, cluster)
    print(
        f"\nsimulate() end to end ({n:,} requests, 200 samples; kernel fastest of {repeat}, "
        "Python path once; CPU-s and wall):"
    )
    for name in policies.split(","):
        pol = P.make_policy(name)
        fast: P.SimResult | None = None
        wall_k = cpu_k = math.inf
        for _ in range(max(repeat, 1)):
            t0, c0 = time.perf_counter(), time.process_time()
            fast = P.simulate(cluster, reqs, pol, engine="kernel")
            wall_k = min(wall_k, time.perf_counter() - t0)
            cpu_k = min(cpu_k, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = P.simulate(cluster, reqs, pol, engine="python")
        wall_p, cpu_p = time.perf_counter() - t0, time.process_time() - c0
        assert fast is not None
        print(
            f"  {name:<16} kernel {cpu_k:6.2f} CPU-s {wall_k:6.2f} s wall "
            f"({n / cpu_k:>9,.0f} req/CPU-s)   Python {cpu_p:6.2f} CPU-s {wall_p:6.2f} s wall "
            f"({n / cpu_p:>7,.0f} req/CPU-s)   python/kernel {cpu_p / cpu_k:.1f}x CPU, "
            f"{wall_p / wall_k:.1f}x wall   identical: {_same(fast, ref)}   "
            f"failures {fast.metrics['failures']}   engine (auto) "
            f"{P.simulate(cluster, reqs.take(np.arange(100)), pol).metrics['engine']}"
        )


_COMPILE_PROBE = """
import time
c0, t0 = time.process_time(), time.perf_counter()
from fleetlab import placement as P
spec = P.ClusterSpec(server_types=(P.ServerType(name="s", count=4, capacity={"cores": 8,
                                                                   "memory_gb": 8}),))
cl = P.build_cluster(spec)
import polars as pl
vms = pl.DataFrame({"vm_id": ["a", "b"], "created_s": [0.0, 1.0], "deleted_s": [2.0, 3.0],
                    "cores": [1.0, 2.0], "memory_gb": [1.0, 2.0]})
c1, t1 = time.process_time(), time.perf_counter()
P.simulate(cl, vms, "best-fit", samples=3, engine="kernel")
c2, t2 = time.process_time(), time.perf_counter()
P.simulate(cl, vms, "best-fit", samples=3, engine="kernel")
c3, t3 = time.process_time(), time.perf_counter()
print(f"{c2 - c1:.2f} {t2 - t1:.2f} {c3 - c2:.4f} {t3 - t2:.4f} {c1 - c0:.2f}")
"""


def compile_cost() -> None:
    """First call of the kernel in a fresh process: empty numba cache, then cached."""
    import subprocess
    import sys
    import tempfile

    print("\nkernel first-call cost (fresh processes, NUMBA_CACHE_DIR a new empty folder):")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile (empty cache)", "load (cache written by the first)"):
            done = subprocess.run(
                [sys.executable, "-c", _COMPILE_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            c1, w1, c2, w2, imp = done.stdout.split()
            print(
                f"  {label:<34} first simulate() {float(c1):5.2f} CPU-s {float(w1):5.2f} s "
                f"wall; second call {float(c2) * 1e3:.1f} ms CPU {float(w2) * 1e3:.1f} ms wall; "
                f"import {imp} CPU-s"
            )


def real_traces() -> None:
    """Gap to the lower bound on each real trace, then the FGD protocol on openb."""
    mirror = Path(os.environ.get("FLEETLAB_MIRROR", "/work/shared/data"))
    openb = mirror / "alibaba-gpu-2023-openb"
    if openb.exists():
        print("\ngap to the lower bound on real traces (peak servers used / bound - 1):")
        cl = P.load_cluster(openb / "openb_node_list_gpu_node.csv")
        vms = P.load_vms(openb / "openb_pod_list_default.csv")
        summary, _, metrics = P.compare(cl, vms, ["best-fit", "fgd", "worst-fit"], samples=50)
        b = metrics["bounds"]
        print(
            f"  openb ({cl.size} GPU nodes): fluid {b['fluid']['servers']:.0f}, "
            f"LP {b['lp'].get('servers')}"
        )
        for r in summary.iter_rows(named=True):
            print(
                f"    {r['policy']:<10} peak servers {r['peak_used_servers']:>5}  "
                f"gap {r['gap_to_bound']:.2f}  failures {r['failures']}"
            )
    others = [
        (
            "alibaba-gpu-2025-dlrm/disaggregated_DLRM_trace.csv",
            None,
            P.ServerType(name="gpu8", count=0, capacity={"cores": 192, "memory_gb": 2048}, gpus=8),
        ),
        (
            "alibaba-2018-batch-spar-sample/sample_instances.csv.gz",
            50_000,
            P.ServerType(name="cpu96", count=0, capacity={"cores": 96, "memory_gb": 512}),
        ),
    ]
    for rel, limit, server in others:
        path = mirror / rel
        if not path.exists():
            continue
        vms = P.load_vms(path)
        if limit:
            vms = vms.sort("created_s").head(limit)
        one = P.build_cluster(P.ClusterSpec(server_types=(server.model_copy(update={"count": 1}),)))
        reqs = P.requests_from_vms(vms, one, missing_created="start")
        fluid = P.fluid_bound(reqs, one.capacity[0])["servers"]
        n = int(fluid * 1.5) + 2
        cl = P.build_cluster(P.ClusterSpec(server_types=(server.model_copy(update={"count": n}),)))
        reqs = P.requests_from_vms(vms, cl, missing_created="start")
        summary, _, metrics = P.compare(
            cl, reqs, ["best-fit", "first-fit", "worst-fit", "dot-product"], samples=50
        )
        b = metrics["bounds"]
        print(
            f"  {rel.split('/')[0]} ({reqs.size} requests, {n} x {server.name}): "
            f"fluid {b['fluid']['servers']:.0f}, LP {b['lp'].get('servers')}"
        )
        for r in summary.iter_rows(named=True):
            print(
                f"    {r['policy']:<12} peak servers {r['peak_used_servers']:>5}  "
                f"gap {r['gap_to_bound']:.2f}  failures {r['failures']}"
            )
    if openb.exists():
        cl = P.load_cluster(openb / "openb_node_list_gpu_node.csv")
        vms = P.load_vms(openb / "openb_pod_list_default.csv")
        t0 = time.perf_counter()
        _curves, fsum, fm = P.fragmentation_experiment(
            cl,
            vms,
            ["random", "dot-product", "gpu-packing", "gpu-clustering", "best-fit", "fgd"],
            seeds=(0, 1, 2, 3, 4),
            step=0.05,
        )
        print(
            f"\nFGD protocol on openb ({cl.size} nodes, {int(cl.gpus.sum())} GPUs), 5 seeds "
            f"({time.perf_counter() - t0:.0f} s):"
        )
        for r in fsum.iter_rows(named=True):
            print(
                f"    {r['policy']:<12} unallocated {r['unallocated'] * 100:5.2f}% "
                f"(sd {r['unallocated_std'] * 100:.2f})  = {r['unallocated_gpus']:.0f} GPUs  "
                f"fragmented {r['fragmented'] * 100:5.2f}%"
            )
        for k, v in fm.items():
            if k.startswith("fgd_"):
                print(f"    {k}: {v:.3f}")


if __name__ == "__main__":
    main()
