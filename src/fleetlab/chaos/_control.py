"""The proxy's REST control API, compatible with Toxiproxy's (same paths, same JSON).

Toxiproxy endpoints: ``GET/POST /proxies``, ``POST /populate``, ``GET/POST/DELETE
/proxies/{name}``, ``GET/POST /proxies/{name}/toxics``, ``GET/POST/DELETE
/proxies/{name}/toxics/{toxic}``, ``POST /reset``, ``GET /version``. fleetlab adds
``POST/DELETE /fleetlab/leases/{holder}`` (renew / release a runner's faults) and
``POST /fleetlab/stop-all`` (same as ``/reset``, returns the count removed).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from fleetlab._version import __version__
from fleetlab.chaos._http import HttpRequest, HttpResponse
from fleetlab.chaos._proxy import ApiError, ProxyServer


def _err(status: int, message: str) -> HttpResponse:
    return HttpResponse.of_json({"error": message, "status": status}, status)


def control_handler(server: ProxyServer, *, token: str | None = None) -> Any:
    """The request handler of the control API over ``server``.

    With ``token`` set every request must carry ``Authorization: Bearer <token>`` (or
    ``X-Fleetlab-Token``); otherwise it is answered 401.
    """

    async def handle(req: HttpRequest) -> HttpResponse:
        if token is not None:
            given = (
                req.headers.get("x-fleetlab-token")
                or req.headers.get("authorization", "").removeprefix("Bearer ").strip()
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _err(401, "missing or wrong token")
        try:
            return await _route(server, req)
        except ApiError as exc:
            return _err(exc.status, str(exc))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _err(400, f"body: not valid JSON ({exc})")

    return handle


async def _route(server: ProxyServer, req: HttpRequest) -> HttpResponse:
    parts = [p for p in req.path.split("/") if p]
    m = req.method
    if parts == ["version"] and m == "GET":
        return HttpResponse(200, f"fleetlab-{__version__}".encode(), "text/plain")
    if parts == ["reset"] and m == "POST":
        await server.reset()
        return HttpResponse(204)
    if parts == ["fleetlab", "stop-all"] and m == "POST":
        removed = await server.reset()
        return HttpResponse.of_json({"removed_toxics": removed})
    if len(parts) == 3 and parts[:2] == ["fleetlab", "leases"]:
        if m == "POST":
            return HttpResponse.of_json({"holder": parts[2], "held": server.renew(parts[2])})
        if m == "DELETE":
            return HttpResponse.of_json(
                {"holder": parts[2], "released": await server.release(parts[2])}
            )
    if parts == ["proxies"]:
        if m == "GET":
            return HttpResponse.of_json({n: p.to_json() for n, p in server.proxies.items()})
        if m == "POST":
            return HttpResponse.of_json(await _create(server, req.json()), 201)
    if parts == ["populate"] and m == "POST":
        body = req.json()
        items = body.get("proxies", body) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise ApiError(400, "body: expected a list of proxies")
        out = []
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if name in server.proxies:
                await server.delete_proxy(name)
            out.append(await _create(server, item))
        return HttpResponse.of_json({"proxies": out}, 201)
    if len(parts) >= 2 and parts[0] == "proxies":
        name = parts[1]
        if len(parts) == 2:
            if m == "GET":
                return HttpResponse.of_json(server.get(name).to_json())
            if m in ("POST", "PATCH"):
                return HttpResponse.of_json(await server.update_proxy(name, req.json() or {}))
            if m == "DELETE":
                await server.delete_proxy(name)
                return HttpResponse(204)
        if len(parts) == 3 and parts[2] == "toxics":
            if m == "GET":
                return HttpResponse.of_json([t.to_json() for t in server.get(name).toxics.values()])
            if m == "POST":
                doc = server.add_toxic(name, req.json() or {})
                await asyncio.sleep(0.005)  # let closes/resets it caused reach the peers first
                return HttpResponse.of_json(doc)
        if len(parts) == 4 and parts[2] == "toxics":
            if m == "GET":
                return HttpResponse.of_json(server._toxic(server.get(name), parts[3]).to_json())
            if m in ("POST", "PATCH"):
                return HttpResponse.of_json(server.update_toxic(name, parts[3], req.json() or {}))
            if m == "DELETE":
                server.remove_toxic(name, parts[3])
                return HttpResponse(204)
    raise ApiError(404, f"no route {m} {req.path}")


async def _create(server: ProxyServer, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ApiError(400, "body: expected a JSON object with name, upstream, listen")
    if not doc.get("upstream"):
        raise ApiError(400, "upstream: required (host:port)")
    return await server.create_proxy(
        str(doc.get("name") or ""),
        upstream=str(doc["upstream"]),
        listen=str(doc.get("listen") or "127.0.0.1:0"),
        enabled=bool(doc.get("enabled", True)),
        protocol=doc.get("protocol", "tcp"),
        lease=doc.get("lease"),
    )
