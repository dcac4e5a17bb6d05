"""Running asyncio servers from synchronous code: a private event loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from fleetlab.chaos._control import control_handler
from fleetlab.chaos._http import serve_http
from fleetlab.chaos._proxy import LOOPBACK, ProxyServer
from fleetlab.errors import SafetyError

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An event loop running in a daemon thread; submit coroutines with :meth:`call`."""

    def __init__(self, name: str = "fleetlab-loop") -> None:
        self.loop = new_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout_s)

    def stop(self) -> None:
        """Cancel what still runs, stop the loop and join the thread."""
        if not self.loop.is_running():
            return

        async def _cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(_cancel_all(), timeout_s=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class ProxyHandle:
    """A proxy server running in a background thread (from :func:`running_proxy`)."""

    api_url: str
    server: ProxyServer
    thread: LoopThread
    token: str | None = None

    def call(self, fn: Callable[[ProxyServer], Awaitable[T]]) -> T:
        """Run ``fn(server)`` on the proxy's loop (for direct, in-process control)."""

        async def _do() -> T:
            return await fn(self.server)

        return self.thread.call(_do())


def _require_token(host: str, token: str | None) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise SafetyError(
            f"api host: binding the control API to {host!r} (not loopback) requires a token "
            "(--token or FLEETLAB_CHAOS_TOKEN)"
        )


async def start_proxy_server(
    *,
    host: str = "127.0.0.1",
    port: int = 8474,
    token: str | None = None,
    allow: tuple[str, ...] = LOOPBACK,
    seed: int = 0,
) -> tuple[ProxyServer, asyncio.base_events.Server]:
    """Start a proxy server and its control API in the running loop.

    Returns
    -------
    (ProxyServer, asyncio Server)
        The proxies' owner and the API's listening server (``port=0`` picks a port).

    Raises
    ------
    SafetyError
        ``host`` is not loopback and no ``token`` was given.
    """
    _require_token(host, token)
    server = ProxyServer(allow=allow, seed=seed)
    api = await serve_http(control_handler(server, token=token), host, port)
    return server, api


@contextlib.contextmanager
def running_proxy(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow: tuple[str, ...] = LOOPBACK,
    seed: int = 0,
) -> Iterator[ProxyHandle]:
    """Run a fleetlab proxy server (control API + proxies) in a background thread.

    Parameters
    ----------
    host, port
        Where the control API listens (``port=0``: a free port; Toxiproxy's is 8474).
    token
        Required on every API call when set; mandatory when ``host`` is not loopback.
    allow
        CIDR networks proxies may listen on and relay to (default: loopback only).
    seed
        Seed of the toxicity and jitter draws.

    Yields
    ------
    ProxyHandle
        ``api_url`` for :class:`ProxyClient` or any Toxiproxy client. On exit every proxy
        and fault is removed and the thread stops.

    Raises
    ------
    SafetyError
        A non-loopback ``host`` without a token.
    """
    _require_token(host, token)
    thread = LoopThread("fleetlab-proxy")
    try:
        server, api = thread.call(
            start_proxy_server(host=host, port=port, token=token, allow=allow, seed=seed)
        )
        sock = api.sockets[0].getsockname()
        shown = f"[{host}]" if ":" in host else host
        handle = ProxyHandle(f"http://{shown}:{sock[1]}", server, thread, token)
        try:
            yield handle
        finally:

            async def _shutdown() -> None:
                api.close()
                await server.close()

            with contextlib.suppress(Exception):
                thread.call(_shutdown(), timeout_s=10.0)
    finally:
        thread.stop()


def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8474,
    token: str | None = None,
    allow: tuple[str, ...] = LOOPBACK,
    seed: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the proxy server in the foreground until SIGINT/SIGTERM (for the CLI).

    ``on_ready(api_url)`` is called once the API listens. Every fault is removed on exit.

    Raises
    ------
    SafetyError
        A non-loopback ``host`` without a token.
    """

    async def main() -> None:
        server, api = await start_proxy_server(
            host=host, port=port, token=token, allow=allow, seed=seed
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if on_ready:
            on_ready(f"http://{host}:{api.sockets[0].getsockname()[1]}")
        try:
            await stop.wait()
        finally:
            api.close()
            await server.close()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
