"""The allocator service: the simulator's policy code behind a tiny HTTP/1.1 server.

Endpoints (JSON): ``POST /allocate`` with ``vm_id`` and demands (``cores``,
``memory_gb``, ``ssd_gb``, ``nic_gbps``, ``gpus``, ``gpu_milli``, ``gpu_model``,
``tenant``, ``p95_cpu``, ``lifetime_s``) answers ``{"vm_id", "node", "gpus"}`` or 409
when nothing fits; ``POST /release`` with ``vm_id``; ``GET /state``; ``GET /health``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import numpy as np

from fleetlab.placement._cluster import GPU_DIM, KNOWN_DIMS, Cluster
from fleetlab.placement._policies import Policy, decide
from fleetlab.placement._state import Ask, ClusterState

_FIELDS = {
    *KNOWN_DIMS,
    "vm_id",
    "gpus",
    "gpu_milli",
    "gpu_model",
    "tenant",
    "p95_cpu",
    "lifetime_s",
}


class AllocationError(ValueError):
    """A request the allocator cannot parse (HTTP 400)."""


class Allocator:
    """Live allocation state for one cluster and policy (what the service wraps)."""

    def __init__(self, cluster: Cluster, policy: Policy) -> None:
        self.cluster = cluster
        self.policy = policy
        self.state = ClusterState(cluster)
        self.ids: dict[str, tuple[int, int]] = {}
        self.tenants: dict[str, int] = {}
        self.next = 0
        self.decisions = 0
        self.failures = 0

    def _ask(self, body: dict[str, Any]) -> Ask:
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise AllocationError(f"unknown field(s) {unknown} (expected any of {sorted(_FIELDS)})")
        vm = body.get("vm_id")
        if not isinstance(vm, str) or not vm:
            raise AllocationError("field 'vm_id': expected a non-empty string")
        if vm in self.ids:
            raise AllocationError(f"field 'vm_id': {vm!r} is already allocated")
        try:
            gpus = float(body.get("gpus", 0) or 0)
            milli_raw = body.get("gpu_milli")
            dem = []
            for d in self.cluster.dims:
                if d == GPU_DIM:
                    continue
                v = float(body.get(d, 0) or 0)
                if not v >= 0 or math.isinf(v):
                    raise AllocationError(f"field {d!r}: expected a number >= 0, found {v}")
                dem.append(v)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, AllocationError):
                raise
            raise AllocationError(f"demand: expected numbers, found {body!r}") from exc
        if gpus < 0:
            raise AllocationError(f"field 'gpus': expected >= 0, found {gpus}")
        count = 1 if 0 < gpus < 1 else int(gpus)
        milli = round(gpus * 1000) if 0 < gpus < 1 else 1000
        if milli_raw is not None and count == 1:
            milli = int(milli_raw)
        if count == 0:
            milli = 0
        if not 0 <= milli <= 1000:
            raise AllocationError(f"field 'gpu_milli': expected 1..1000, found {milli}")
        demand = np.array(dem + ([count * milli / 1000.0] if GPU_DIM in self.cluster.dims else []))
        # keep dims order: GPU is always the last cluster dimension
        tenant = body.get("tenant")
        code = -1
        if tenant is not None:
            code = self.tenants.setdefault(str(tenant), len(self.tenants))
        cores = float(body.get("cores", 0) or 0)
        p95 = body.get("p95_cpu")
        life = body.get("lifetime_s")
        now = time.time()
        idx = self.next
        self.next += 1
        return Ask(
            index=idx,
            demand=demand,
            gpu_count=count,
            gpu_milli=milli,
            gpu_model=str(body.get("gpu_model") or ""),
            tenant=code,
            arrival=now,
            predicted_departure=now + float(life) if life is not None else math.inf,
            p95_demand=cores * float(p95) / 100.0 if p95 is not None else cores,
        )

    def allocate(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Place one VM; returns ``{"vm_id", "node", "gpus"}`` or None when nothing fits.

        Raises
        ------
        AllocationError
            Unknown field, bad number, or a ``vm_id`` already allocated.
        """
        ask = self._ask(body)
        self.decisions += 1
        choice = decide(self.policy, self.state, ask)
        if choice is None:
            self.failures += 1
            return None
        node, gpus = choice
        self.state.place(ask, node, gpus)
        self.ids[body["vm_id"]] = (ask.index, ask.tenant)
        return {
            "vm_id": body["vm_id"],
            "node": str(self.cluster.node_ids[node]),
            "gpus": list(gpus),
        }

    def release(self, vm_id: str) -> dict[str, Any] | None:
        """Free one VM; returns ``{"vm_id", "node"}`` or None if unknown."""
        entry = self.ids.pop(vm_id, None)
        if entry is None:
            return None
        node = self.state.release(*entry)
        return {"vm_id": vm_id, "node": str(self.cluster.node_ids[node])}

    def snapshot(self) -> dict[str, Any]:
        """Servers, VMs placed, allocated share per dimension, decisions and failures."""
        cap = self.cluster.capacity.sum(axis=0)
        used = cap - self.state.free.sum(axis=0)
        return {
            "policy": self.policy.name,
            "servers": self.cluster.size,
            "used_servers": int((self.state.count > 0).sum()),
            "vms": len(self.ids),
            "decisions": self.decisions,
            "failures": self.failures,
            "allocated": {
                d: float(used[j] / cap[j]) if cap[j] else 0.0
                for j, d in enumerate(self.cluster.dims)
            },
        }


def _response(status: int, body: dict[str, Any]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}.get(status, "OK")
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def handle(allocator: Allocator, method: str, path: str, payload: bytes) -> bytes:
    """Answer one HTTP request (method, path, body) with a full HTTP response."""
    try:
        if method == "GET" and path == "/health":
            return _response(200, {"ok": True})
        if method == "GET" and path == "/state":
            return _response(200, allocator.snapshot())
        if method == "POST" and path in ("/allocate", "/release"):
            try:
                body = json.loads(payload or b"{}")
            except json.JSONDecodeError as exc:
                return _response(400, {"error": f"body: expected JSON, found {exc.msg}"})
            if not isinstance(body, dict):
                return _response(400, {"error": "body: expected a JSON object"})
            if path == "/allocate":
                res = allocator.allocate(body)
                if res is None:
                    return _response(
                        409,
                        {"error": "no server can host this request", "vm_id": body.get("vm_id")},
                    )
                return _response(200, res)
            res = allocator.release(str(body.get("vm_id")))
            if res is None:
                return _response(404, {"error": f"unknown vm_id {body.get('vm_id')!r}"})
            return _response(200, res)
        return _response(404, {"error": f"no route {method} {path}"})
    except AllocationError as exc:
        return _response(400, {"error": str(exc)})


async def _serve_conn(
    allocator: Allocator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 2:
                writer.write(_response(400, {"error": "malformed request line"}))
                break
            method, path = parts[0], parts[1]
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                if key == "content-length":
                    length = int(value.strip() or 0)
                elif key == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await reader.readexactly(length) if length else b""
            writer.write(handle(allocator, method, path, payload))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def start_server(
    allocator: Allocator, *, host: str = "127.0.0.1", port: int = 8089
) -> asyncio.Server:
    """Start serving ``allocator`` on ``host:port`` (port 0: any free port)."""
    return await asyncio.start_server(
        lambda r, w: _serve_conn(allocator, r, w), host=host, port=port
    )


def serve(
    allocator: Allocator, *, host: str = "127.0.0.1", port: int = 8089, ready: Any = None
) -> None:
    """Serve ``allocator`` until interrupted (uses uvloop when installed).

    ``ready`` is called with the bound ``(host, port)`` once listening.
    """

    async def main() -> None:
        server = await start_server(allocator, host=host, port=port)
        if ready is not None:
            ready(server.sockets[0].getsockname()[:2])
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
