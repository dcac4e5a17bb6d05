"""A minimal asyncio HTTP/1.1 server for the control API and the demo services.

Keep-alive, Content-Length and chunked request bodies; one handler coroutine per request.
Small on purpose: it starts in milliseconds, which keeps tests and the tour fast.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class HttpRequest:
    """One parsed HTTP request (header names lower-case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (``None`` for an empty body)."""
        return json.loads(self.body) if self.body.strip() else None


@dataclass
class HttpResponse:
    """A response to write: status, body and extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, value: Any, status: int = 200) -> HttpResponse:
        """A JSON response."""
        return cls(status, json.dumps(value).encode())


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` (``Unknown`` when not standard)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode_response(resp: HttpResponse, *, keep_alive: bool = True) -> bytes:
    """Serialise a response (status line, headers, body)."""
    head = [
        f"HTTP/1.1 {resp.status} {reason(resp.status)}",
        f"content-length: {len(resp.body)}",
        f"content-type: {resp.content_type}",
    ]
    head += [f"{k}: {v}" for k, v in resp.headers.items()]
    if not keep_alive:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.1 request this server accepts."""


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Read one message head up to and including the blank line; ``None`` at clean EOF."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest("truncated head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("head too large") from exc


def parse_headers(lines: list[bytes]) -> dict[str, str]:
    """Header lines to a lower-case dict (repeated names are joined with ``, ``)."""
    headers: dict[str, str] = {}
    for raw in lines:
        if not raw:
            continue
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"bad header line {raw[:40]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def read_chunked(reader: asyncio.StreamReader, *, raw: bool = False) -> bytes:
    """Read a chunked body; returns the payload (or the raw framed bytes when ``raw``)."""
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if raw:
            out += line
        if size == 0:
            while True:  # trailers up to the blank line
                trailer = await reader.readuntil(b"\r\n")
                if raw:
                    out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        data = await reader.readexactly(size + 2)
        out += data if raw else data[:-2]
        if len(out) > MAX_BODY:
            raise BadRequest("body too large")


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read one request from ``reader``; ``None`` at clean EOF."""
    head = await read_head(reader)
    if head is None:
        return None
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    except ValueError as exc:
        raise BadRequest(f"bad request line {lines[0][:60]!r}") from exc
    headers = parse_headers(lines[1:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise BadRequest("body too large")
        body = await reader.readexactly(length) if length else b""
    parts = urlsplit(target)
    return HttpRequest(
        method.upper(), unquote(parts.path) or "/", dict(parse_qsl(parts.query)), headers, body
    )


async def serve_http(
    handler: Handler, host: str = "127.0.0.1", port: int = 0
) -> asyncio.base_events.Server:
    """Start serving ``handler`` on ``host:port`` (0 picks a free port); returns the server."""

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    req = await read_request(reader)
                except (BadRequest, ValueError) as exc:
                    writer.write(
                        encode_response(
                            HttpResponse.of_json({"error": str(exc)}, 400), keep_alive=False
                        )
                    )
                    break
                if req is None:
                    break
                try:
                    resp = await handler(req)
                except Exception as exc:  # a handler bug must not kill the connection loop
                    resp = HttpResponse.of_json({"error": f"{type(exc).__name__}: {exc}"}, 500)
                keep = req.headers.get("connection", "").lower() != "close"
                writer.write(encode_response(resp, keep_alive=keep))
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # shutdown: end quietly (streams' callback re-raises)
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_conn, host, port, limit=MAX_HEAD)


class HttpPool:
    """A small keep-alive HTTP/1.1 client (much lighter than httpx on the hot path).

    Used by the load generator and the demo services; raises ``TimeoutError`` on a
    timeout and ``OSError`` / ``asyncio.IncompleteReadError`` / :class:`BadRequest` when the
    connection or the response is broken.
    """

    def __init__(self, *, max_idle: int = 256) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
        self._idle = {}
        self._max_idle = max_idle

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; returns ``(status, body)``."""
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        payload = body or b""
        if payload or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(payload)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        coro = self._send(key, raw, method)
        if timeout is None:
            return await coro
        return await asyncio.wait_for(coro, timeout)

    async def _send(self, key: tuple[str, int], raw: bytes, method: str) -> tuple[int, bytes]:
        idle = self._idle.setdefault(key, [])
        for attempt in (0, 1):
            reused = bool(idle) and attempt == 0
            if reused:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(*key, limit=MAX_HEAD)
            try:
                writer.write(raw)
                head = await read_head(reader)
                if head is None:
                    raise ConnectionResetError("connection closed before a response")
                lines = head[:-4].split(b"\r\n")
                status = int(lines[0].split(b" ", 2)[1])
                hdrs = parse_headers(lines[1:])
                if method == "HEAD" or status in (204, 304) or status < 200:
                    data = b""
                elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                    data = await read_chunked(reader)
                elif "content-length" in hdrs:
                    n = int(hdrs["content-length"])
                    data = await reader.readexactly(n) if n else b""
                else:
                    data = await reader.read()
                    hdrs["connection"] = "close"
            except (ConnectionError, RuntimeError, asyncio.IncompleteReadError) as exc:
                writer.close()
                partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                if reused and not partial:
                    continue  # a stale keep-alive connection: try once on a fresh one
                if isinstance(exc, RuntimeError):  # uvloop: write on a closed transport
                    raise ConnectionResetError(str(exc)) from exc
                raise
            except BaseException:
                writer.close()
                raise
            if hdrs.get("connection", "").lower() == "close" or len(idle) >= self._max_idle:
                writer.close()
            else:
                idle.append((reader, writer))
            return status, data
        raise ConnectionResetError("connection closed before a response")  # pragma: no cover

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()
