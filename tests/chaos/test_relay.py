"""The proxy's relay: byte-exact in both directions, across toxic switches and half-closes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetlab.chaos import ProxyClient, running_proxy
from fleetlab.chaos._runtime import LoopThread


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def _payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i, k = i + n, k + 1
    return out


class _Sink:
    """An upstream that reads until EOF, then answers with the planned reply and closes.

    Each connection takes the next plan from :meth:`expect` and resolves its future with
    every byte it read, so the test sees exactly what came through the proxy.
    """

    def __init__(self, thread: LoopThread) -> None:
        self.plans: list[tuple[list[bytes], Future[bytes]]] = []
        self.port = int(thread.call(self._start()).sockets[0].getsockname()[1])

    async def _start(self) -> asyncio.base_events.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def expect(self, reply: list[bytes]) -> Future[bytes]:
        fut: Future[bytes] = Future()
        self.plans.append((reply, fut))
        return fut

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply, fut = self.plans.pop(0)
        got = bytearray()
        while data := await reader.read(1 << 16):  # ends at the EOF the proxy passes on
            got += data
        fut.set_result(bytes(got))
        for piece in reply:  # written only after EOF: the half-closed client still reads
            writer.write(piece)
            await writer.drain()
        writer.close()


def _exchange(port: int, sent: list[bytes]) -> bytes:
    """Send ``sent`` (chunk by chunk, from the first instant), half-close, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
        for piece in sent:
            s.sendall(piece)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while data := s.recv(1 << 16):
            got += data
    return bytes(got)


def test_relay_is_byte_exact_in_both_directions(loop_thread: LoopThread) -> None:
    """Any sizes and chunkings, both ways, through the fast path and through a toxic."""
    sink = _Sink(loop_thread)
    with running_proxy() as handle, ProxyClient(handle.api_url) as client:
        fast = _port(client.create_proxy("fast", upstream=f"127.0.0.1:{sink.port}")["listen"])
        slow = _port(client.create_proxy("sliced", upstream=f"127.0.0.1:{sink.port}")["listen"])
        client.add_toxic("sliced", "slicer", stream="upstream", attributes={"average_size": 700})
        client.add_toxic("sliced", "slicer", stream="downstream", attributes={"average_size": 900})

        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            seed=st.integers(0, 2**32 - 1),
            up_size=st.integers(0, 300_000),
            down_size=st.integers(0, 300_000),
            up_chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
            down_chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
            sliced=st.booleans(),
        )
        def one(
            seed: int,
            up_size: int,
            down_size: int,
            up_chunks: list[int],
            down_chunks: list[int],
            sliced: bool,
        ) -> None:
            examples.append(sliced)
            up = _payload(seed, up_size)
            down = _payload(seed + 1, down_size)
            fut = sink.expect(_chunks(down, down_chunks))
            got = _exchange(slow if sliced else fast, _chunks(up, up_chunks))
            assert fut.result(10.0) == up
            assert got == down

        examples: list[bool] = []
        one()
        stats = {n: p["stats"]["connections"] for n, p in client.proxies().items()}
    # every example went through the proxy it picked, one connection each
    assert len(examples) >= 20
    assert stats == {"fast": examples.count(False), "sliced": examples.count(True)}


def test_toxics_added_and_removed_mid_stream_keep_the_bytes_intact(
    proxy: tuple[str, ProxyClient], echo_port: int
) -> None:
    """One live connection streams 4 MB through the echo while toxics come and go."""
    _, client = proxy
    port = _port(client.create_proxy("live", upstream=f"127.0.0.1:{echo_port}")["listen"])
    data = _payload(7, 4 << 20)
    pieces = _chunks(data, [16_384, 1, 40_000, 777])
    got = bytearray()
    sent_until: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:

        def send() -> None:
            for piece in pieces:  # ~290 chunks, paced: the stream lasts > 0.58 s
                s.sendall(piece)
                time.sleep(0.002)
            sent_until.append(time.perf_counter())
            s.shutdown(socket.SHUT_WR)

        def receive() -> None:
            while chunk := s.recv(1 << 16):
                got.extend(chunk)

        threads = [threading.Thread(target=send), threading.Thread(target=receive)]
        for t in threads:
            t.start()
        switches: list[Any] = [
            ("add", "latency", "downstream", {"latency": 50}),
            ("remove", "latency_downstream"),  # ~50 ms of echoed bytes still queued here
            ("add", "slicer", "upstream", {"average_size": 500, "delay": 0}),
            ("add", "bandwidth", "upstream", {"rate": 20_000}),
            ("remove", "slicer_upstream"),
            ("remove", "bandwidth_upstream"),
        ]
        for step in switches:
            time.sleep(0.02)
            if step[0] == "add":
                client.add_toxic("live", step[1], stream=step[2], attributes=step[3])
            else:
                client.remove_toxic("live", step[1])
        last_switch = time.perf_counter()
        for t in threads:
            t.join(30.0)
    assert sent_until and sent_until[0] > last_switch  # every switch happened mid-stream
    assert len(got) == len(data)
    assert bytes(got) == data
    assert client.proxies()["live"]["stats"]["connections"] == 1


def test_a_toxic_on_a_live_connection_applies_at_once_and_lifts_at_once(
    proxy: tuple[str, ProxyClient], echo_port: int
) -> None:
    _, client = proxy
    port = _port(client.create_proxy("ka", upstream=f"127.0.0.1:{echo_port}")["listen"])

    def rtt(s: socket.socket, n: int) -> float:
        t0 = time.perf_counter()
        s.sendall(b"p" * n)
        left = n
        while left:
            left -= len(s.recv(n))
        return time.perf_counter() - t0

    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtt(s, 10)
        client.add_toxic("ka", "latency", stream="upstream", attributes={"latency": 300})
        assert rtt(s, 11) >= 0.29  # the open connection suffers the new toxic
        client.remove_toxic("ka", "latency_upstream")
        assert rtt(s, 12) < 0.25  # and is back on the fast path once it is removed


def test_half_close_from_the_server_side_propagates(loop_thread: LoopThread) -> None:
    """The upstream ends its side first; the client reads EOF and can still send."""
    result: Future[bytes] = Future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"greeting")
        writer.write_eof()  # half-close: no more from the server, but it keeps reading
        got = bytearray()
        while data := await reader.read(1 << 16):
            got += data
        result.set_result(bytes(got))
        writer.close()

    async def start() -> asyncio.base_events.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    upstream = int(loop_thread.call(start()).sockets[0].getsockname()[1])
    with running_proxy() as h, ProxyClient(h.api_url) as client:
        port = _port(client.create_proxy("hc", upstream=f"127.0.0.1:{upstream}")["listen"])
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
            got = bytearray()
            while data := s.recv(1 << 16):  # EOF arrives while our side is still open
                got += data
            assert bytes(got) == b"greeting"
            late = _payload(3, 200_000)
            s.sendall(late)
            s.shutdown(socket.SHUT_WR)
            assert result.result(10.0) == late
            assert s.recv(10) == b""


def test_a_named_upstream_is_resolved_once_and_every_address_tried(echo_port: int) -> None:
    """A name resolving to several addresses: the first refuses, the next one is used."""
    with running_proxy() as handle, ProxyClient(handle.api_url) as client:
        port = _port(client.create_proxy("named", upstream=f"localhost:{echo_port}")["listen"])
        proxy = handle.server.proxies["named"]
        assert proxy.upstream_addr[0][0] in ("127.0.0.1", "::1")  # numeric: resolved once
        # as if the name resolved to 127.0.0.2 first (nothing listens there) then 127.0.0.1
        proxy.upstream_addr = (("127.0.0.2", "127.0.0.1"), echo_port)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
                s.sendall(b"ping")
                s.shutdown(socket.SHUT_WR)
                assert s.recv(10) == b"ping"
        assert client.proxies()["named"]["stats"]["upstream_errors"] == 0
        proxy.upstream_addr = (("127.0.0.2",), echo_port)  # no address answers: counted
        # the client is reset (SO_LINGER 0), whether at connect, send or receive
        with (
            pytest.raises(ConnectionResetError),
            socket.create_connection(("127.0.0.1", port), timeout=5.0) as s,
        ):
            s.sendall(b"ping")
            s.recv(10)
        assert client.proxies()["named"]["stats"]["upstream_errors"] == 1
