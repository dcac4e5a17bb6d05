"""fleetlab proxy vs a direct connection, a bare uvloop relay (and Toxiproxy when found).

One run on loopback, bounded counts, each measurement after a warm-up, the same client
code for every target: added latency (p50, p99) on a keep-alive connection and on new
connections (64 B echo), request rate with 16 concurrent keep-alive connections (a fixed
number of requests each), and bulk throughput in MiB/s. The client, the upstream
servers, the bare relay and the fleetlab proxy each run in their own process. The CPU
time the relay process spends (user + sys, from /proc) during the request-rate and
throughput runs gives its cost per request and the request rate one core sustains,
which does not depend on how busy the other cores are.

    python benchmarks/proxy.py [--requests 5000] [--rate-requests 1000] [--mib 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np

MSG = b"x" * 64


def _upstreams(conn) -> None:  # child process: an echo server and a bulk source
    import uvloop

    async def main() -> None:
        class Echo(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t

            def data_received(self, d):
                self.t.write(d)

        class Source(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t
                self.left = 0

            def data_received(self, d):  # "N\n": send N MiB then close
                self.left = int(d.strip()) << 20
                chunk = b"\0" * (1 << 20)
                while self.left > 0:
                    self.t.write(chunk)
                    self.left -= len(chunk)
                self.t.close()

        loop = asyncio.get_running_loop()
        echo = await loop.create_server(Echo, "127.0.0.1", 0)
        src = await loop.create_server(Source, "127.0.0.1", 0)
        conn.send((echo.sockets[0].getsockname()[1], src.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    uvloop.run(main())


def _bare_relay(conn, upstreams) -> None:  # child process: the reference uvloop relay
    """A bare asyncio.Protocol relay (no control API, no faults): the floor to compare with."""
    import uvloop

    class Side(asyncio.Protocol):
        def __init__(self, peer=None):
            self.peer, self.t, self.early = peer, None, []

        def connection_made(self, t):
            self.t = t
            if self.peer is None:  # client side: connect upstream
                asyncio.get_running_loop().create_task(self.connect())
            else:
                self.peer.peer = self
                self.peer.flush()

        async def connect(self):
            await asyncio.get_running_loop().create_connection(
                lambda: Side(self), "127.0.0.1", self.upstream
            )

        def flush(self):
            for d in self.early:
                self.peer.t.write(d) if d is not None else self.peer.t.write_eof()
            self.early = []

        def data_received(self, d):
            if self.peer is None or self.peer.t is None:
                self.early.append(d)
            else:
                self.peer.t.write(d)

        def eof_received(self):
            if self.peer is None or self.peer.t is None:
                self.early.append(None)
            else:
                self.peer.t.write_eof()
            return True

        def connection_lost(self, exc):
            if self.peer is not None and self.peer.t is not None:
                self.peer.t.close()

        def pause_writing(self):
            if self.peer is not None and self.peer.t is not None:
                self.peer.t.pause_reading()

        def resume_writing(self):
            if self.peer is not None and self.peer.t is not None:
                self.peer.t.resume_reading()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = []
        for up in upstreams:
            srv = await loop.create_server(lambda up=up: _with(Side(), up), "127.0.0.1", 0)
            ports.append(srv.sockets[0].getsockname()[1])
        conn.send(ports)
        await asyncio.Event().wait()

    def _with(side, up):
        side.upstream = up
        return side

    uvloop.run(main())


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (NaN when unknown)."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fleetlab_proxy(conn) -> None:  # child process: the fleetlab proxy server
    from fleetlab.chaos import serve_proxy

    serve_proxy(port=0, on_ready=conn.send)


def _create(api: str, name: str, upstream: int) -> int:
    body = json.dumps(
        {"name": name, "upstream": f"127.0.0.1:{upstream}", "listen": "127.0.0.1:0"}
    ).encode()
    req = urllib.request.Request(f"{api}/proxies", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return int(json.loads(resp.read())["listen"].rsplit(":", 1)[1])


def keepalive_rtt(port: int, n: int) -> np.ndarray:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = np.empty(n)
    for i in range(n + 200):
        t0 = time.perf_counter_ns()
        s.sendall(MSG)
        got = 0
        while got < len(MSG):
            got += len(s.recv(65536))
        if i >= 200:  # warm-up
            out[i - 200] = (time.perf_counter_ns() - t0) / 1e3
    s.close()
    return out


def new_conn_rtt(port: int, n: int, warmup: int = 50) -> np.ndarray:
    out = np.empty(n)
    for i in range(n + warmup):
        t0 = time.perf_counter_ns()
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(MSG)
        got = 0
        while got < len(MSG):
            got += len(s.recv(65536))
        s.close()
        if i >= warmup:
            out[i - warmup] = (time.perf_counter_ns() - t0) / 1e3
    return out


def throughput(port: int, mib: int) -> float:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    s.sendall(f"{mib}\n".encode())
    total = 0
    while n := s.recv_into(view):
        total += n
    dt = time.perf_counter() - t0
    s.close()
    assert total == mib << 20, total
    return mib / dt


def req_rate(port: int, per_conn: int, conns: int = 16, warmup: int = 50) -> tuple[float, int]:
    """Requests per second with ``conns`` keep-alive connections, ``per_conn`` requests each.

    Every connection first does ``warmup`` round trips; the clock starts when all have.
    Returns (rate, requests timed).
    """
    import uvloop

    async def main() -> float:
        ready = asyncio.Barrier(conns + 1)

        async def one() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(warmup):
                w.write(MSG)
                await r.readexactly(len(MSG))
            await ready.wait()
            for _ in range(per_conn):
                w.write(MSG)
                await r.readexactly(len(MSG))
            w.close()

        tasks = [asyncio.ensure_future(one()) for _ in range(conns)]
        await ready.wait()
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    dt = uvloop.run(main())
    return per_conn * conns / dt, per_conn * conns


def measure(
    label: str, ports: tuple[int, int], pid: int | None, args: argparse.Namespace
) -> dict[str, object]:
    eport, sport = ports
    ka = keepalive_rtt(eport, args.requests)
    n_new = max(200, args.requests // 5)
    cpu0 = _cpu_s(pid)
    nc = new_conn_rtt(eport, n_new)
    cpu_new = _cpu_s(pid) - cpu0
    cpu0 = _cpu_s(pid)
    rate, n = req_rate(eport, args.rate_requests)
    cpu_rate = _cpu_s(pid) - cpu0
    throughput(sport, 32)  # warm-up
    cpu0 = _cpu_s(pid)
    mib_s = throughput(sport, args.mib)
    cpu_bulk = _cpu_s(pid) - cpu0
    return {
        "label": label,
        "keepalive_p50_us": float(np.percentile(ka, 50)),
        "keepalive_p99_us": float(np.percentile(ka, 99)),
        "newconn_p50_us": float(np.percentile(nc, 50)),
        "newconn_p99_us": float(np.percentile(nc, 99)),
        "relay_cpu_us_per_conn": cpu_new / (n_new + 50) * 1e6,
        "req_per_s": rate,
        "relay_cpu_us_per_req": cpu_rate / n * 1e6,
        "req_per_s_per_core": n / cpu_rate if cpu_rate > 0 else float("nan"),
        "mib_per_s": mib_s,
        "mib_per_cpu_s": args.mib / cpu_bulk if cpu_bulk > 0 else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000, help="keep-alive round trips")
    ap.add_argument("--mib", type=int, default=512, help="MiB moved for throughput")
    ap.add_argument(
        "--rate-requests", type=int, default=1000, help="requests per connection (16) for req/s"
    )
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    ups = ctx.Process(target=_upstreams, args=(b,), daemon=True)
    ups.start()
    echo_port, src_port = a.recv()
    c, d = ctx.Pipe()
    prox = ctx.Process(target=_fleetlab_proxy, args=(d,), daemon=True)
    prox.start()
    api = c.recv()
    e, f = ctx.Pipe()
    bare = ctx.Process(target=_bare_relay, args=(f, (echo_port, src_port)), daemon=True)
    bare.start()
    targets: dict[str, tuple[tuple[int, int], int | None]] = {
        "direct": ((echo_port, src_port), None),
        "bare-relay": (tuple(e.recv()), bare.pid),
        "fleetlab": ((_create(api, "echo", echo_port), _create(api, "src", src_port)), prox.pid),
    }
    toxi = shutil.which("toxiproxy-server")
    toxi_proc = None
    if toxi:
        toxi_proc = subprocess.Popen(
            [toxi, "-port", "18474"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)
        tapi = "http://127.0.0.1:18474"
        targets["toxiproxy"] = (
            (_create(tapi, "echo", echo_port), _create(tapi, "src", src_port)),
            toxi_proc.pid,
        )
    rows = []
    try:
        for label, (ports, pid) in targets.items():
            rows.append(measure(label, ports, pid, args))
    finally:
        prox.terminate()
        bare.terminate()
        ups.terminate()
        if toxi_proc is not None:
            toxi_proc.terminate()
    base = rows[0]
    print(
        f"{'':10} {'ka p50 us':>10} {'ka p99 us':>10} {'new p50 us':>11} {'new p99 us':>11}"
        f" {'req/s':>9} {'req/s/core':>10} {'MiB/s':>8} {'MiB/cpu-s':>9}"
    )
    for r in rows:
        print(
            f"{r['label']:10} {r['keepalive_p50_us']:10.1f} {r['keepalive_p99_us']:10.1f} "
            f"{r['newconn_p50_us']:11.1f} {r['newconn_p99_us']:11.1f} {r['req_per_s']:9.0f} "
            f"{r['req_per_s_per_core']:10.0f} {r['mib_per_s']:8.0f} {r['mib_per_cpu_s']:9.0f}"
        )
    for r in rows[1:]:
        print(
            f"{r['label']}: added p50 keep-alive {r['keepalive_p50_us'] - base['keepalive_p50_us']:.1f} us, "
            f"new connection {r['newconn_p50_us'] - base['newconn_p50_us']:.1f} us; "
            f"throughput {r['mib_per_s']:.0f} MiB/s = {r['mib_per_s'] / base['mib_per_s']:.2f}x direct; "
            f"{r['req_per_s']:.0f} req/s = {r['req_per_s'] / base['req_per_s']:.2f}x direct; "
            f"relay CPU {r['relay_cpu_us_per_req']:.1f} us/req = {r['req_per_s_per_core']:.0f} req/s "
            f"on one core, {r['relay_cpu_us_per_conn']:.0f} us per new connection"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    if not toxi:
        print(
            "toxiproxy: toxiproxy-server not found on PATH; issue's reference on this kind "
            "of machine: +74 us p50 keep-alive, +257 us new connection, ~790 MiB/s"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
