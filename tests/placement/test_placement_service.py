"""The allocator service on loopback: allocate, release, state, errors."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import httpx
import pytest

from fleetlab.placement import (
    Allocator,
    ClusterSpec,
    ServerType,
    build_cluster,
    make_policy,
    start_server,
)


@pytest.fixture
def server():
    cl = build_cluster(
        ClusterSpec(
            server_types=(
                ServerType(name="s", count=2, capacity={"cores": 8, "memory_gb": 16}, gpus=2),
            )
        )
    )
    alloc = Allocator(cl, make_policy("best-fit"))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}

    async def main():
        srv = await start_server(alloc, host="127.0.0.1", port=0)
        box["port"] = srv.sockets[0].getsockname()[1]
        box["srv"] = srv
        ready.set()
        async with srv:
            with contextlib.suppress(asyncio.CancelledError):
                await srv.serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{box['port']}"
    loop.call_soon_threadsafe(box["srv"].close)
    thread.join(5)


def test_allocate_release_state_over_http(server):
    with httpx.Client(base_url=server) as c:
        assert c.get("/health").json() == {"ok": True}
        r = c.post("/allocate", json={"vm_id": "a", "cores": 6, "memory_gb": 4, "gpus": 0.5})
        assert r.status_code == 200
        assert r.json() == {"vm_id": "a", "node": "s-00000", "gpus": [0]}
        # best fit: the half-used GPU 0 on s-00000 takes the next share, but not the cores
        r = c.post("/allocate", json={"vm_id": "b", "cores": 1, "memory_gb": 1, "gpus": 0.5})
        assert r.json()["node"] == "s-00000" and r.json()["gpus"] == [0]
        r = c.post("/allocate", json={"vm_id": "c", "cores": 4, "memory_gb": 1})
        assert r.json()["node"] == "s-00001"
        assert c.post("/allocate", json={"vm_id": "d", "cores": 9}).status_code == 409
        st = c.get("/state").json()
        assert st["vms"] == 3 and st["used_servers"] == 2 and st["failures"] == 1
        assert st["allocated"]["cores"] == pytest.approx(11 / 16)
        assert c.post("/release", json={"vm_id": "a"}).json() == {"vm_id": "a", "node": "s-00000"}
        assert c.post("/release", json={"vm_id": "a"}).status_code == 404
        assert c.get("/state").json()["allocated"]["gpus"] == pytest.approx(0.5 / 4)


def test_bad_requests_get_clear_400s(server):
    with httpx.Client(base_url=server) as c:
        r = c.post("/allocate", json={"vm_id": "x", "cores": 1, "fpga": 1})
        assert r.status_code == 400 and "fpga" in r.json()["error"]
        r = c.post("/allocate", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = c.post("/allocate", json={"vm_id": "y", "cores": -2})
        assert r.status_code == 400 and "cores" in r.json()["error"]
        c.post("/allocate", json={"vm_id": "z", "cores": 1})
        assert c.post("/allocate", json={"vm_id": "z", "cores": 1}).status_code == 400
        assert c.get("/nope").status_code == 404
