"""A bundled demo system: a gateway, five backends, a cache and a queue, with known flaws.

Every backend sits behind a fleetlab proxy named after it, so faults can be injected on
each dependency. The gateway's ``GET /checkout`` calls, in order:

1. ``auth`` (timeout 0.5 s; a hard dependency: failure -> 503; correct),
2. ``cache`` (timeout 0.1 s), falling back to ``catalog`` on a miss or failure (correct:
   either alone may fail, both together fail the request),
3. ``inventory`` -- **flaw: retry storm**: up to 5 attempts, immediately, no backoff,
4. ``recommendations`` -- **flaw: missing timeout**: errors are ignored (it is optional)
   but the call has no timeout, so a slow recommender makes every checkout slow,
5. ``queue`` (publish an analytics event) -- **flaw: non-optional dependency on the hot
   path**: the event is best-effort by design, yet a failed publish fails the checkout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetlab.chaos._control import control_handler
from fleetlab.chaos._http import BadRequest, HttpPool, HttpRequest, HttpResponse, serve_http
from fleetlab.chaos._proxy import ProxyServer
from fleetlab.chaos._runtime import LoopThread

if TYPE_CHECKING:
    from fleetlab.depgraph import DependencyGraph

BACKENDS = ("auth", "cache", "catalog", "inventory", "recommendations", "queue")

#: the documented flaws: (service, fault kind that reveals it, finding the explorer reports)
FLAWS: tuple[tuple[str, str, str], ...] = (
    ("recommendations", "slow", "missing timeout"),
    ("inventory", "error", "retry storm"),
    ("queue", "down", "hard dependency"),
)

#: calls per 1000 checkouts on each edge (what a trace of the healthy system shows)
_CALLS = {
    "auth": 1000,
    "cache": 1000,
    "catalog": 5,
    "inventory": 1000,
    "recommendations": 1000,
    "queue": 1000,
}


@dataclass
class DemoSystem:
    """A running demo system (from :func:`demo_system`).

    Attributes
    ----------
    entry_url
        The gateway's checkout URL (the entry point to load).
    api_url
        The control API of the proxies in front of every backend (Toxiproxy-compatible).
    graph
        Its dependency graph (gateway -> each backend; ``catalog`` rarely called).
    proxies
        Service -> proxy name (the same names).
    services
        Service -> its own URL (behind no proxy).
    flaws
        The documented flaws as ``(service, fault kind, finding)``.
    """

    entry_url: str
    api_url: str
    graph: DependencyGraph
    proxies: dict[str, str]
    services: dict[str, str]
    flaws: tuple[tuple[str, str, str], ...] = FLAWS
    health_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def demo_graph() -> DependencyGraph:
    """The demo system's dependency graph, as a trace of 1000 checkouts would show it."""
    import networkx as nx

    from fleetlab.depgraph import DependencyGraph

    g = nx.DiGraph()
    g.add_node("gateway", entry=True)
    for svc, calls in _CALLS.items():
        g.add_edge(
            "gateway",
            svc,
            calls=calls,
            rate_per_s=calls / 10.0,
            p50_ms=1.0,
            p99_ms=3.0,
            mean_ms=1.2,
            error_rate=0.0,
            kind="sync",
            confidence=1.0,
        )
    return DependencyGraph(
        g, ["gateway"], meta={"source": "demo", "window_s": 10.0, "entry_traces": {"gateway": 1000}}
    )


def _backend(name: str) -> Any:
    async def handle(req: HttpRequest) -> HttpResponse:
        if name == "queue" and req.method == "POST":
            return HttpResponse.of_json({"queued": True}, 202)
        return HttpResponse.of_json({"service": name, "path": req.path, "ok": True})

    return handle


def _gateway(urls: dict[str, str], client: HttpPool) -> Any:
    async def call(svc: str, path: str, *, timeout: float | None, method: str = "GET") -> bool:
        try:
            status, _ = await client.request(method, urls[svc] + path, timeout=timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, BadRequest, ValueError):
            return False
        return status < 400

    async def handle(req: HttpRequest) -> HttpResponse:
        if req.path == "/health":
            return HttpResponse.of_json({"ok": True})
        if req.path != "/checkout":
            return HttpResponse.of_json({"error": "not found"}, 404)
        if not await call("auth", "/verify", timeout=0.5):
            return HttpResponse.of_json({"error": "auth unavailable"}, 503)
        if not await call("cache", "/item", timeout=0.1) and not await call(
            "catalog", "/item", timeout=0.5
        ):
            return HttpResponse.of_json({"error": "no product data"}, 503)
        # FLAW (retry storm): five immediate attempts, no backoff, no jitter
        for _attempt in range(5):
            if await call("inventory", "/stock", timeout=0.5):
                break
        else:
            return HttpResponse.of_json({"error": "inventory unavailable"}, 503)
        # FLAW (missing timeout): optional, errors ignored, but awaited without a timeout
        await call("recommendations", "/recs", timeout=None)
        # FLAW (non-optional on the hot path): a best-effort event fails the checkout
        if not await call("queue", "/publish", timeout=0.5, method="POST"):
            return HttpResponse.of_json({"error": "event queue unavailable"}, 503)
        return HttpResponse.of_json({"ok": True, "order": "demo"})

    return handle


async def start_demo(*, host: str = "127.0.0.1") -> tuple[DemoSystem, list[Any], ProxyServer]:
    """Start the demo in the running loop; returns the system, its servers and proxy server."""
    servers: list[Any] = []
    direct: dict[str, str] = {}
    for name in BACKENDS:
        srv = await serve_http(_backend(name), host, 0)
        servers.append(srv)
        direct[name] = f"http://{host}:{srv.sockets[0].getsockname()[1]}"
    proxy = ProxyServer()
    api = await serve_http(control_handler(proxy), host, 0)
    servers.append(api)
    via: dict[str, str] = {}
    for name in BACKENDS:
        doc = await proxy.create_proxy(
            name, upstream=direct[name].removeprefix("http://"), listen=f"{host}:0", protocol="http"
        )
        via[name] = f"http://{doc['listen']}"
    client = HttpPool()
    gw = await serve_http(_gateway(via, client), host, 0)
    servers.append(gw)
    base = f"http://{host}:{gw.sockets[0].getsockname()[1]}"
    system = DemoSystem(
        entry_url=f"{base}/checkout",
        api_url=f"http://{host}:{api.sockets[0].getsockname()[1]}",
        graph=demo_graph(),
        proxies={n: n for n in BACKENDS},
        services={"gateway": base, **direct},
        health_url=f"{base}/health",
        extra={"client": client},
    )
    return system, servers, proxy


@contextlib.contextmanager
def demo_system() -> Iterator[DemoSystem]:
    """Run the demo system on loopback ports in a background thread.

    Yields
    ------
    DemoSystem
        URLs, graph and documented flaws; everything stops (and every fault goes) on exit.
    """
    thread = LoopThread("fleetlab-demo")
    try:
        system, servers, proxy = thread.call(start_demo())
        try:
            yield system
        finally:

            async def _stop() -> None:
                for srv in servers:
                    srv.close()
                await proxy.close()
                system.extra["client"].close()

            with contextlib.suppress(Exception):
                thread.call(_stop(), timeout_s=10.0)
    finally:
        thread.stop()
