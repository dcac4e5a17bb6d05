"""fleetlab proxy vs a direct connection (and vs Toxiproxy when its binary is found).

One run on loopback, bounded counts: added latency (p50, p99) on a keep-alive connection
and on new connections, request rate through one proxy with concurrent keep-alive
clients, and throughput in MiB/s. The proxy and the upstream servers run in their own
processes so the client does not share a GIL with them.

    python benchmarks/proxy.py [--requests 5000] [--mib 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
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


def new_conn_rtt(port: int, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(MSG)
        got = 0
        while got < len(MSG):
            got += len(s.recv(65536))
        s.close()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
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


def req_rate(port: int, seconds: float, conns: int = 16) -> float:
    import uvloop

    async def main() -> int:
        done = 0
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal done
            r, w = await asyncio.open_connection("127.0.0.1", port)
            while time.perf_counter() < stop:
                w.write(MSG)
                await r.readexactly(len(MSG))
                done += 1
            w.close()

        await asyncio.gather(*(one() for _ in range(conns)))
        return done

    return uvloop.run(main()) / seconds


def measure(label: str, port: int, args: argparse.Namespace) -> dict[str, object]:
    ka = keepalive_rtt(port, args.requests)
    nc = new_conn_rtt(port, max(200, args.requests // 5))
    return {
        "label": label,
        "keepalive_p50_us": float(np.percentile(ka, 50)),
        "keepalive_p99_us": float(np.percentile(ka, 99)),
        "newconn_p50_us": float(np.percentile(nc, 50)),
        "newconn_p99_us": float(np.percentile(nc, 99)),
        "req_per_s": req_rate(port, args.seconds),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000, help="keep-alive round trips")
    ap.add_argument("--mib", type=int, default=512, help="MiB moved for throughput")
    ap.add_argument("--seconds", type=float, default=2.0, help="request-rate window")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    ups = ctx.Process(target=_upstreams, args=(b,), daemon=True)
    ups.start()
    echo_port, src_port = a.recv()
    c, d = ctx.Pipe()
    prox = ctx.Process(target=_fleetlab_proxy, args=(d,), daemon=True)
    prox.start()
    api = c.recv()
    targets = {
        "direct": (echo_port, src_port),
        "fleetlab": (_create(api, "echo", echo_port), _create(api, "src", src_port)),
    }
    toxi = shutil.which("toxiproxy-server")
    toxi_proc = None
    if toxi:
        toxi_proc = subprocess.Popen(
            [toxi, "-port", "18474"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(1.0)
        tapi = "http://127.0.0.1:18474"
        targets["toxiproxy"] = (_create(tapi, "echo", echo_port), _create(tapi, "src", src_port))
    rows = []
    try:
        for label, (eport, sport) in targets.items():
            row = measure(label, eport, args)
            row["mib_per_s"] = throughput(sport, args.mib)
            rows.append(row)
    finally:
        prox.terminate()
        ups.terminate()
        if toxi_proc is not None:
            toxi_proc.terminate()
    base = rows[0]
    print(
        f"{'':10} {'ka p50 us':>10} {'ka p99 us':>10} {'new p50 us':>11} {'new p99 us':>11}"
        f" {'req/s':>9} {'MiB/s':>8}"
    )
    for r in rows:
        print(
            f"{r['label']:10} {r['keepalive_p50_us']:10.1f} {r['keepalive_p99_us']:10.1f} "
            f"{r['newconn_p50_us']:11.1f} {r['newconn_p99_us']:11.1f} {r['req_per_s']:9.0f} "
            f"{r['mib_per_s']:8.0f}"
        )
    for r in rows[1:]:
        print(
            f"{r['label']}: added p50 keep-alive {r['keepalive_p50_us'] - base['keepalive_p50_us']:.1f} us, "
            f"new connection {r['newconn_p50_us'] - base['newconn_p50_us']:.1f} us; "
            f"throughput {r['mib_per_s']:.0f} MiB/s = {r['mib_per_s'] / base['mib_per_s']:.2f}x direct; "
            f"{r['req_per_s']:.0f} req/s = {r['req_per_s'] / base['req_per_s']:.2f}x direct"
        )
    if not toxi:
        print(
            "toxiproxy: toxiproxy-server not found on PATH; issue's reference on this kind "
            "of machine: +74 us p50 keep-alive, +257 us new connection, ~790 MiB/s"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
