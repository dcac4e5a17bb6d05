"""Loopback servers for the chaos tests; every one is stopped when its test ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fleetlab.chaos import ProxyClient, running_proxy
from fleetlab.chaos._http import HttpRequest, HttpResponse, serve_http
from fleetlab.chaos._runtime import LoopThread


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread("test-servers")
    yield thread
    thread.stop()


@pytest.fixture
def echo_port(loop_thread: LoopThread) -> int:
    """A TCP echo server on an ephemeral loopback port."""

    async def start() -> asyncio.base_events.Server:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(echo, "127.0.0.1", 0)

    server = loop_thread.call(start())
    return int(server.sockets[0].getsockname()[1])


@pytest.fixture
def http_port(loop_thread: LoopThread) -> int:
    """An HTTP server answering ``{"path": ..., "method": ...}`` (``/big``: 200 kB)."""

    async def handle(req: HttpRequest) -> HttpResponse:
        if req.path == "/big":
            return HttpResponse(200, b"x" * 200_000, "text/plain")
        return HttpResponse.of_json({"path": req.path, "method": req.method, "n": len(req.body)})

    server = loop_thread.call(serve_http(handle))
    return int(server.sockets[0].getsockname()[1])


@pytest.fixture
def proxy() -> Iterator[tuple[str, ProxyClient]]:
    """A running fleetlab proxy server: (api url, client)."""
    with running_proxy() as handle, ProxyClient(handle.api_url) as client:
        yield handle.api_url, client
