"""The fault-injecting proxy: TCP relays with toxics, HTTP-aware faults, leases.

One :class:`ProxyServer` owns named proxies; each proxy listens on a loopback port and
relays to an upstream. With no toxic on a direction, bytes go straight from one socket's
``data_received`` to the other's ``write`` (the fast path: an ``asyncio.Protocol`` relay,
flow-controlled by ``pause_reading``/``resume_reading`` between the two transports, no
task or queue per chunk); with toxics, chunks queue through the toxic chain in order.
Adding a toxic to a live connection switches that direction to the queued path at once
and removing it switches back once the queue is drained, so no byte is lost or
reordered. The upstream is resolved once when the proxy is created (no DNS lookup per
connection); bytes a client sends before the upstream connection is up are held in a
list and written first. Every toxic and proxy may carry a lease: when the holder stops
renewing it, the proxy removes it by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fleetlab.chaos._http import (
    BadRequest,
    HttpResponse,
    encode_response,
    parse_headers,
    read_chunked,
    read_head,
)
from fleetlab.chaos._toxics import (
    HTTP_ACTIONS,
    TCP_TOXICS,
    HttpMatch,
    Timeout,
    ToxicError,
    http_match,
    validate_http,
)
from fleetlab.errors import SafetyError

Stream = Literal["upstream", "downstream"]
LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
_HIGH_WATER = 1 << 20  # bytes buffered for one direction before its source is paused
_now = time.monotonic
_HTTP_START = re.compile(rb"(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|TRACE|CONNECT) ")


def split_hostport(text: str, *, what: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) to ``(host, port)``; raises ``ValueError``."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what}: expected host:port, found {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def check_allowed(host: str, allow: Sequence[str], *, what: str) -> tuple[str, ...]:
    """Refuse ``host`` unless every address it resolves to is inside ``allow`` (CIDRs).

    Returns
    -------
    tuple of str
        The addresses ``host`` resolves to (numeric, in resolver order, no repeats), so
        callers can connect without resolving the name again.

    Raises
    ------
    SafetyError
        The host resolves outside the allowlist, or does not resolve.
    """
    nets = [ipaddress.ip_network(n, strict=False) for n in allow]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SafetyError(f"{what}: cannot resolve {host!r} ({exc})") from exc
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not any(addr in n for n in nets):
            raise SafetyError(
                f"{what}: {host!r} resolves to {addr}, outside the allowlist "
                f"({', '.join(allow)}); fleetlab only injects faults into allowed targets"
            )
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class ToxicState:
    """A toxic installed on a proxy (its JSON fields plus runtime state)."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any]
    behaviour: Any = None
    match: HttpMatch | None = None
    lease_holder: str | None = None
    lease_ttl_s: float = 0.0
    expires_at: float | None = None
    hits: int = 0

    def to_json(self) -> dict[str, Any]:
        """The Toxiproxy JSON of this toxic (plus ``lease`` when it has one)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": self.attributes,
        }
        if self.lease_holder:
            doc["lease"] = {"holder": self.lease_holder, "ttl_s": self.lease_ttl_s}
        return doc


class Link:
    """One direction of one proxied connection, with the toxics applying to it."""

    __slots__ = (
        "bytes",
        "conn",
        "direction",
        "dst",
        "early",
        "early_bytes",
        "fast_dst",
        "handles",
        "queue",
        "queued",
        "state",
        "toxics",
        "worker",
    )

    def __init__(self, conn: Conn, direction: Stream) -> None:
        self.conn = conn
        self.direction = direction
        self.dst: asyncio.Transport | None = None
        self.toxics: list[ToxicState] = []
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.worker: asyncio.Task[None] | None = None
        self.state: dict[int, Any] = {}
        self.handles: list[asyncio.TimerHandle] = []
        self.bytes = 0
        self.fast_dst: asyncio.Transport | None = None
        self.early: list[bytes | None] = []  # read before ``dst`` exists (upstream connecting)
        self.early_bytes = 0

    def refresh(self) -> None:
        """Recompute whether data may go straight to ``dst`` (no toxic, queue or framing)."""
        c = self.conn
        fast = self.worker is None and not self.toxics and c.http is None and not c.closed
        self.fast_dst = self.dst if fast else None

    def later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after ``delay_s`` unless the link closes first."""
        self.handles.append(asyncio.get_running_loop().call_later(delay_s, fn, *args))

    def feed(self, data: bytes | None) -> None:
        """Data (``None`` = EOF) read from this direction's source."""
        if self.worker is None and not self.toxics:
            dst = self.dst
            if dst is not None:
                if data is None:
                    self._eof()
                else:
                    self.bytes += len(data)
                    dst.write(data)
                return
            # the upstream is still connecting: hold the bytes, written first on connect
            self.early.append(data)
            if data:
                self.early_bytes += len(data)
                if self.early_bytes > _HIGH_WATER:
                    self.conn.pause_source(self.direction)
            return
        self.queue.append((time.monotonic(), data))
        if data:
            self.queued += len(data)
            if self.queued > _HIGH_WATER:
                self.conn.pause_source(self.direction)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
            self.fast_dst = None

    def _eof(self) -> None:
        self.conn.eof(self.direction)

    async def _emit(self, data: bytes | None) -> None:
        if data is None:
            self._eof()
        elif data and self.dst is not None and not self.dst.is_closing():
            self.bytes += len(data)
            self.dst.write(data)

    async def _work(self) -> None:
        try:
            await self.conn.connected.wait()
            while self.queue:
                arrival, chunk = self.queue.popleft()
                if chunk:
                    self.queued -= len(chunk)
                    if self.queued <= _HIGH_WATER // 2:
                        self.conn.resume_source(self.direction)
                await self._chain(list(self.toxics), chunk, arrival)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.worker = None
            self.refresh()

    async def _chain(self, toxics: list[ToxicState], chunk: bytes | None, arrival: float) -> None:
        if not toxics:
            await self._emit(chunk)
            return
        head, rest = toxics[0], toxics[1:]

        async def nxt(data: bytes | None) -> None:
            await self._chain(rest, data, arrival)

        await head.behaviour.pipe(self, chunk, arrival, nxt)

    def attach(self, toxic: ToxicState, rng: np.random.Generator) -> None:
        """Start applying ``toxic`` here (subject to its toxicity and ``first_n``)."""
        if toxic.toxicity < 1.0 and rng.random() >= toxic.toxicity:
            return
        first_n = int(toxic.attributes.get("first_n", 0) or 0)
        if first_n:
            if toxic.hits >= first_n:
                return
            toxic.hits += 1
        self.toxics.append(toxic)
        self.fast_dst = None
        toxic.behaviour.attach(self)

    def detach(self, name: str) -> None:
        """Stop applying the toxic called ``name``."""
        self.toxics = [t for t in self.toxics if t.name != name]
        self.refresh()

    def flush_early(self) -> None:
        """Write what was read before ``dst`` existed, in order (called once ``dst`` is set)."""
        early, self.early, self.early_bytes = self.early, [], 0
        for data in early:
            if data is None:
                self._eof()
            elif self.dst is not None and not self.dst.is_closing():
                self.bytes += len(data)
                self.dst.write(data)

    def close(self) -> None:
        """Cancel timers and the worker."""
        self.fast_dst = None
        for h in self.handles:
            h.cancel()
        self.handles.clear()
        if self.worker is not None:
            self.worker.cancel()


class _Side(asyncio.Protocol):
    """The protocol of one socket of a proxied connection (client or upstream side)."""

    __slots__ = ("conn", "is_client", "link")

    def __init__(self, conn: Conn, is_client: bool) -> None:
        self.conn = conn
        self.is_client = is_client
        self.link = conn.up if is_client else conn.down

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.is_client:
            self.conn.client_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        dst = self.link.fast_dst  # the fast path: no toxic, no framing, nothing queued
        if dst is not None:
            self.conn.last_active = _now()
            dst.write(data)
            return
        self.conn.received(self.is_client, data)

    def eof_received(self) -> bool:
        self.conn.received(self.is_client, None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.conn.received(self.is_client, None)  # a clean close is an end of stream
        else:
            self.conn.close()

    def pause_writing(self) -> None:
        self.conn.pause_source("downstream" if self.is_client else "upstream")

    def resume_writing(self) -> None:
        self.conn.resume_source("downstream" if self.is_client else "upstream")


class Conn:
    """One proxied connection: a client socket, an upstream socket and two links."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.up = Link(self, "upstream")
        self.down = Link(self, "downstream")
        self.connected = asyncio.Event()
        self.closed = False
        self.eofs: set[str] = set()
        self.sources_done: set[bool] = set()
        self.http: _HttpState | None = None
        self.last_active = time.monotonic()
        self.paused_client = False  # paused while too much is held before the upstream is up

    # -- lifecycle ---------------------------------------------------------------------------
    def client_made(self, transport: asyncio.Transport) -> None:
        self.client = transport
        self.down.dst = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.proxy.conns.add(self)
        self.proxy.stats["connections"] += 1
        if self.proxy.toxics:
            for toxic in list(self.proxy.toxics.values()):
                self.attach(toxic)
            if self.closed:
                return
        if self.proxy.is_http():
            self.http = _HttpState(self)
        self.down.refresh()
        asyncio.get_running_loop().create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        hosts, port = self.proxy.upstream_addr  # resolved once, when the proxy was set up
        for i, host in enumerate(hosts):
            try:
                transport, _ = await loop.create_connection(lambda: _Side(self, False), host, port)
                break
            except OSError:
                if i + 1 < len(hosts) and not self.closed:
                    continue  # e.g. "localhost" -> ::1 refused, 127.0.0.1 listening
                self.proxy.stats["upstream_errors"] += 1
                self.abort(True)
                return
        if self.closed:
            transport.close()
            return
        self.server = transport
        self.up.dst = self.server
        # TCP_NODELAY: uvloop and asyncio set it on every TCP transport, both sides
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.up.flush_early()  # before the toxic worker (it waits for ``connected``) runs
        self.up.refresh()
        self.connected.set()
        if self.client is not None and self.paused_client:
            self.paused_client = False
            self.client.resume_reading()

    def attach(self, toxic: ToxicState) -> None:
        if toxic.type in HTTP_ACTIONS:
            return
        link = self.up if toxic.stream == "upstream" else self.down
        link.attach(toxic, self.proxy.rng)

    def detach(self, name: str) -> None:
        self.up.detach(name)
        self.down.detach(name)

    def received(self, from_client: bool, data: bytes | None) -> None:
        if self.closed:
            return
        self.last_active = time.monotonic()
        if data is None:
            if from_client in self.sources_done:
                return
            self.sources_done.add(from_client)
        if self.http is not None and not self.http.seen and data:
            self.http.seen = True
            if not (from_client and _HTTP_START.match(data)):
                self._plain_tcp()  # not HTTP (or the server speaks first): relay bytes as TCP
        if from_client:
            if self.http is not None:
                self.http.feed_request(data)
            else:
                self.up.feed(data)
        elif self.http is not None:
            self.http.feed_response(data)
        else:
            self.down.feed(data)

    def _plain_tcp(self) -> None:
        """Drop HTTP framing for this connection (its first bytes are not an HTTP request)."""
        if self.http is not None:
            self.http.close()
            self.http = None
            self.up.refresh()
            self.down.refresh()

    def eof(self, direction: Stream) -> None:
        self.eofs.add(direction)
        dst = self.server if direction == "upstream" else self.client
        if len(self.eofs) == 2 or dst is None:
            self.close()
            return
        if dst.can_write_eof():
            try:
                dst.write_eof()
            except (OSError, RuntimeError):
                self.close()
        else:
            self.close()

    def pause_source(self, direction: Stream) -> None:
        src = self.client if direction == "upstream" else self.server
        if src is not None and not src.is_closing():
            src.pause_reading()
            if direction == "upstream" and not self.connected.is_set():
                self.paused_client = True

    def resume_source(self, direction: Stream) -> None:
        src = self.client if direction == "upstream" else self.server
        if src is not None and not src.is_closing() and self.connected.is_set():
            src.resume_reading()

    def abort(self, reset: bool) -> None:
        """Close both sockets; with ``reset`` the client gets a TCP RST (SO_LINGER 0)."""
        if reset and self.client is not None:
            sock = self.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.abort()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected.set()
        self.up.close()
        self.down.close()
        if self.http is not None:
            self.http.close()
        for t in (self.client, self.server):
            if t is not None and not t.is_closing():
                t.close()
        self.proxy.conns.discard(self)


class _HttpState:
    """HTTP/1.1 framing of one connection: per-request faults and response corruption."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.requests = asyncio.StreamReader(limit=1 << 16)
        self.responses = asyncio.StreamReader(limit=1 << 16)
        self.pending: deque[tuple[str, bool]] = deque()  # (method, corrupt) per forwarded request
        self.seen = False  # any byte yet? (the first bytes decide HTTP or plain TCP)
        self.responded = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._requests()), loop.create_task(self._responses())]

    def feed_request(self, data: bytes | None) -> None:
        if data is None:
            self.requests.feed_eof()
        else:
            self.requests.feed_data(data)

    def feed_response(self, data: bytes | None) -> None:
        if data is None:
            self.responses.feed_eof()
        else:
            self.responses.feed_data(data)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()

    async def _requests(self) -> None:
        conn, proxy = self.conn, self.conn.proxy
        try:
            while True:
                head = await read_head(self.requests)
                if head is None:
                    conn.up.feed(None)
                    return
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                headers = parse_headers(lines[1:])
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await read_chunked(self.requests, raw=True)
                else:
                    n = int(headers.get("content-length", "0") or 0)
                    body = await self.requests.readexactly(n) if n else b""
                proxy.stats["requests"] += 1
                path = target.split("?", 1)[0]
                corrupt = False
                action = None
                for toxic in list(proxy.toxics.values()):
                    if toxic.type not in HTTP_ACTIONS or toxic.match is None:
                        continue
                    if not toxic.match.matches(method.upper(), path, headers):
                        continue
                    first_n = int(toxic.attributes.get("first_n", 0) or 0)
                    if first_n and toxic.hits >= first_n:
                        continue
                    if toxic.toxicity < 1.0 and proxy.rng.random() >= toxic.toxicity:
                        continue
                    toxic.hits += 1
                    proxy.stats["faulted_requests"] += 1
                    if toxic.type == "http_delay":
                        await asyncio.sleep(float(toxic.attributes["latency"]) / 1000.0)
                    elif toxic.type == "http_corrupt":
                        corrupt = True
                    else:
                        action = toxic
                        break
                if action is not None and action.type == "http_reset":
                    conn.abort(True)
                    return
                if action is not None:  # http_abort: answer ourselves, after earlier responses
                    while self.pending:
                        self.responded.clear()
                        await self.responded.wait()
                    status = int(action.attributes.get("status", 503))
                    body_out = str(action.attributes.get("body", "")).encode() or (
                        b'{"error": "injected by fleetlab chaos", "status": %d}' % status
                    )
                    resp = HttpResponse(status, body_out, headers={"x-fleetlab-fault": action.name})
                    if conn.client is not None and not conn.client.is_closing():
                        conn.client.write(encode_response(resp))
                    continue
                self.pending.append((method.upper(), corrupt))
                conn.up.feed(head + body)
        except (BadRequest, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            conn.abort(False)
        except asyncio.CancelledError:
            pass

    async def _responses(self) -> None:
        conn = self.conn
        try:
            while True:
                head = await read_head(self.responses)
                if head is None:
                    conn.down.feed(None)
                    return
                lines = head[:-4].split(b"\r\n")
                status = int(lines[0].split(b" ", 2)[1])
                headers = parse_headers(lines[1:])
                method, corrupt = self.pending.popleft() if self.pending else ("GET", False)
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                stats = conn.proxy.stats
                stats["responses_5xx" if status >= 500 else "responses"] += 1
                if no_body:
                    body = b""
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await read_chunked(self.responses, raw=True)
                elif "content-length" in headers:
                    n = int(headers["content-length"])
                    body = await self.responses.readexactly(n) if n else b""
                else:
                    body = await self.responses.read()
                if corrupt and body:
                    body = bytes(b ^ 0x55 for b in body)
                conn.down.feed(head + body)
                if 100 <= status < 200 and status != 101:
                    self.pending.appendleft((method, corrupt))
                self.responded.set()
        except (
            BadRequest,
            ValueError,
            IndexError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            conn.abort(False)
        except asyncio.CancelledError:
            pass


@dataclass
class Proxy:
    """A named proxy: where it listens, its upstream, its toxics and open connections."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    protocol: Literal["tcp", "http"]
    rng: np.random.Generator
    upstream_addr: tuple[tuple[str, ...], int] = (("127.0.0.1",), 0)
    server: asyncio.base_events.Server | None = None
    toxics: dict[str, ToxicState] = field(default_factory=dict)
    conns: set[Conn] = field(default_factory=set)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "connections",
                "upstream_errors",
                "requests",
                "responses",
                "responses_5xx",
                "faulted_requests",
            ),
            0,
        )
    )
    lease_holder: str | None = None
    lease_ttl_s: float = 0.0
    expires_at: float | None = None

    def is_http(self) -> bool:
        return self.protocol == "http" or any(t.type in HTTP_ACTIONS for t in self.toxics.values())

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's proxy JSON (plus ``protocol``, ``stats`` and ``lease``)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
            "protocol": self.protocol,
            "stats": dict(self.stats),
        }
        if self.lease_holder:
            doc["lease"] = {"holder": self.lease_holder, "ttl_s": self.lease_ttl_s}
        return doc


class ApiError(Exception):
    """A control-API request failed: carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ProxyServer:
    """All proxies of one fleetlab proxy process, with their toxics and leases.

    Create it inside a running event loop; call :meth:`close` to stop every proxy.
    """

    def __init__(self, *, allow: Sequence[str] = LOOPBACK, seed: int = 0) -> None:
        self.allow = tuple(allow)
        self.proxies: dict[str, Proxy] = {}
        self.rng = np.random.default_rng(seed)
        self._reaper: asyncio.Task[None] | None = None

    # -- proxies -----------------------------------------------------------------------------
    async def create_proxy(
        self,
        name: str,
        *,
        upstream: str,
        listen: str = "127.0.0.1:0",
        enabled: bool = True,
        protocol: Literal["tcp", "http"] = "tcp",
        lease: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create and start a proxy; returns its JSON (``listen`` has the real port)."""
        if not name or not isinstance(name, str):
            raise ApiError(400, f"name: expected a non-empty string, found {name!r}")
        if name in self.proxies:
            raise ApiError(409, f"proxy already exists: {name}")
        if protocol not in ("tcp", "http"):
            raise ApiError(400, f"protocol: expected 'tcp' or 'http', found {protocol!r}")
        try:
            up_host, up_port = split_hostport(upstream, what="upstream")
            l_host, l_port = split_hostport(listen, what="listen")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        try:
            up_addrs = check_allowed(up_host, self.allow, what="upstream")  # resolved once
            check_allowed(l_host, self.allow, what="listen")
        except SafetyError as exc:
            raise ApiError(403, str(exc)) from exc
        proxy = Proxy(
            name,
            f"{l_host}:{l_port}",
            upstream,
            enabled,
            protocol,
            np.random.default_rng(self.rng.integers(2**63)),
            (up_addrs, up_port),
        )
        self._set_lease(proxy, lease)
        if enabled:
            await self._listen(proxy)
        self.proxies[name] = proxy
        self._ensure_reaper()
        return proxy.to_json()

    async def _listen(self, proxy: Proxy) -> None:
        host, port = split_hostport(proxy.listen, what="listen")
        loop = asyncio.get_running_loop()
        try:
            proxy.server = await loop.create_server(
                lambda: _Side(_new_conn(proxy), True), host, port, reuse_address=True
            )
        except OSError as exc:
            raise ApiError(500, f"listen {proxy.listen}: {exc.strerror or exc}") from exc
        sockname = proxy.server.sockets[0].getsockname()
        proxy.listen = f"{host}:{sockname[1]}"

    async def update_proxy(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Enable/disable a proxy or change its upstream (Toxiproxy's ``POST /proxies/{name}``)."""
        proxy = self.get(name)
        if "upstream" in changes and changes["upstream"] != proxy.upstream:
            try:
                host, port = split_hostport(changes["upstream"], what="upstream")
                addrs = check_allowed(host, self.allow, what="upstream")
            except ValueError as exc:
                raise ApiError(400, str(exc)) from exc
            except SafetyError as exc:
                raise ApiError(403, str(exc)) from exc
            proxy.upstream, proxy.upstream_addr = str(changes["upstream"]), (addrs, port)
        if "enabled" in changes:
            enabled = bool(changes["enabled"])
            if enabled and not proxy.enabled:
                await self._listen(proxy)
            elif not enabled and proxy.enabled:
                await self._stop_listening(proxy)
            proxy.enabled = enabled
        return proxy.to_json()

    async def _stop_listening(self, proxy: Proxy) -> None:
        if proxy.server is not None:
            proxy.server.close()
            proxy.server = None
        for conn in list(proxy.conns):
            conn.abort(False)

    async def delete_proxy(self, name: str) -> None:
        """Stop a proxy, close its connections and forget it."""
        proxy = self.get(name)
        for toxic in list(proxy.toxics):
            self._remove_toxic(proxy, toxic)
        await self._stop_listening(proxy)
        del self.proxies[name]

    def get(self, name: str) -> Proxy:
        """The proxy called ``name`` (404 when absent)."""
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError(404, f"proxy not found: {name}") from None

    # -- toxics ------------------------------------------------------------------------------
    def add_toxic(self, name: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Add a toxic to proxy ``name`` from Toxiproxy JSON (plus optional ``lease``)."""
        proxy = self.get(name)
        toxic = self._build_toxic(doc)
        if toxic.name in proxy.toxics:
            raise ApiError(409, f"toxic already exists: {toxic.name}")
        proxy.toxics[toxic.name] = toxic
        if toxic.type in HTTP_ACTIONS and proxy.protocol == "tcp":
            # keep-alive connections opened in TCP mode cannot be framed mid-stream: switch the
            # proxy to HTTP mode and close the idle ones, so clients reconnect through framing
            proxy.protocol = "http"
            now = time.monotonic()
            for conn in list(proxy.conns):
                if conn.http is None and now - conn.last_active > 0.02:
                    conn.abort(False)
        for conn in list(proxy.conns):
            conn.attach(toxic)
        self._ensure_reaper()
        return toxic.to_json()

    def update_toxic(self, name: str, toxic_name: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Change a toxic's attributes/toxicity (it is re-applied to open connections)."""
        proxy = self.get(name)
        old = self._toxic(proxy, toxic_name)
        merged = {**old.to_json(), **{k: v for k, v in doc.items() if k != "attributes"}}
        merged["attributes"] = {**old.attributes, **(doc.get("attributes") or {})}
        merged["name"] = toxic_name
        new = self._build_toxic(merged)
        new.hits = old.hits
        self._remove_toxic(proxy, toxic_name)
        proxy.toxics[toxic_name] = new
        for conn in list(proxy.conns):
            conn.attach(new)
        return new.to_json()

    def remove_toxic(self, name: str, toxic_name: str) -> None:
        """Remove a toxic; open connections stop suffering it at once."""
        proxy = self.get(name)
        self._toxic(proxy, toxic_name)
        self._remove_toxic(proxy, toxic_name)

    def _toxic(self, proxy: Proxy, toxic_name: str) -> ToxicState:
        try:
            return proxy.toxics[toxic_name]
        except KeyError:
            raise ApiError(404, f"toxic not found: {toxic_name}") from None

    def _remove_toxic(self, proxy: Proxy, toxic_name: str) -> None:
        toxic = proxy.toxics.pop(toxic_name)
        if isinstance(toxic.behaviour, Timeout):
            toxic.behaviour.removed.set()
        for conn in list(proxy.conns):
            conn.detach(toxic_name)

    def _build_toxic(self, doc: Mapping[str, Any]) -> ToxicState:
        if not isinstance(doc, Mapping):
            raise ApiError(400, f"toxic: expected a JSON object, found {type(doc).__name__}")
        kind = doc.get("type")
        if kind not in TCP_TOXICS and kind not in HTTP_ACTIONS:
            known = ", ".join([*TCP_TOXICS, *HTTP_ACTIONS])
            raise ApiError(400, f"type: unknown toxic type {kind!r} (expected one of {known})")
        found = doc.get("stream") or "downstream"
        if found not in ("upstream", "downstream"):
            raise ApiError(400, f"stream: expected 'upstream' or 'downstream', found {found!r}")
        stream: Stream = "upstream" if found == "upstream" else "downstream"
        toxicity = doc.get("toxicity", 1.0)
        if (
            isinstance(toxicity, bool)
            or not isinstance(toxicity, (int, float))
            or not (0.0 <= toxicity <= 1.0)
        ):
            raise ApiError(400, f"toxicity: expected a number in [0, 1], found {toxicity!r}")
        attrs = dict(doc.get("attributes") or {})
        name = str(doc.get("name") or f"{kind}_{stream}")
        toxic = ToxicState(name, str(kind), stream, float(toxicity), attrs)
        try:
            if kind in HTTP_ACTIONS:
                validate_http(str(kind), attrs)
                toxic.match = http_match(attrs)
            else:
                toxic.behaviour = TCP_TOXICS[str(kind)](attrs, self.rng)
        except ToxicError as exc:
            raise ApiError(400, str(exc)) from exc
        self._set_lease(toxic, doc.get("lease"))
        return toxic

    # -- leases and reset --------------------------------------------------------------------
    def _set_lease(self, item: ToxicState | Proxy, lease: Any) -> None:
        if not lease:
            return
        if not isinstance(lease, Mapping) or not lease.get("holder"):
            raise ApiError(400, f"lease: expected {{holder, ttl_s}}, found {lease!r}")
        ttl = lease.get("ttl_s", 5.0)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= 3600:
            raise ApiError(400, f"lease.ttl_s: expected seconds in (0, 3600], found {ttl!r}")
        item.lease_holder = str(lease["holder"])
        item.lease_ttl_s = float(ttl)
        item.expires_at = time.monotonic() + float(ttl)

    def renew(self, holder: str) -> int:
        """Extend every lease of ``holder`` by its TTL; returns how many items it holds."""
        now, count = time.monotonic(), 0
        for proxy in self.proxies.values():
            if proxy.lease_holder == holder:
                proxy.expires_at, count = now + proxy.lease_ttl_s, count + 1
            for toxic in proxy.toxics.values():
                if toxic.lease_holder == holder:
                    toxic.expires_at, count = now + toxic.lease_ttl_s, count + 1
        return count

    async def release(self, holder: str | None = None, *, expired_only: bool = False) -> int:
        """Remove what ``holder`` holds (``None``: every leased item); returns the count."""
        now, count = time.monotonic(), 0
        for proxy in list(self.proxies.values()):
            for toxic in list(proxy.toxics.values()):
                if (
                    toxic.lease_holder
                    and (holder is None or toxic.lease_holder == holder)
                    and (not expired_only or (toxic.expires_at or 0) < now)
                ):
                    self._remove_toxic(proxy, toxic.name)
                    count += 1
            if (
                proxy.lease_holder
                and (holder is None or proxy.lease_holder == holder)
                and (not expired_only or (proxy.expires_at or 0) < now)
            ):
                await self.delete_proxy(proxy.name)
                count += 1
        return count

    async def reset(self) -> int:
        """The kill switch: remove every toxic and re-enable every proxy; returns toxics removed."""
        count = 0
        for proxy in self.proxies.values():
            for toxic in list(proxy.toxics):
                self._remove_toxic(proxy, toxic)
                count += 1
            if not proxy.enabled:
                await self._listen(proxy)
                proxy.enabled = True
        return count

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            await self.release(None, expired_only=True)

    async def close(self) -> None:
        """Stop every proxy and the lease reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
        for name in list(self.proxies):
            await self.delete_proxy(name)


def _new_conn(proxy: Proxy) -> Conn:
    return Conn(proxy)
