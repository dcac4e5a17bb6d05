"""Helpers for the dashboard tests: a store filled by real fleetlab runs, a server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import uvicorn

from fleetlab import placement
from fleetlab.errors import DataNotFoundError
from fleetlab.store import RunStore
from fleetlab.web import create_app


@dataclass(frozen=True)
class Filled:
    """The store and the ids of the runs put into it."""

    store: RunStore
    small: str
    large: str
    failed: str


def _vms(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "vm_id": [f"v{i}" for i in range(n)],
            "created_s": [float(i) for i in range(n)],
            "deleted_s": [float(i + 20) for i in range(n)],
            "cores": [float(1 + i % 5) for i in range(n)],
            "memory_gb": [float(2 + i % 3) for i in range(n)],
        }
    )


POLICIES = ["best-fit", "worst-fit"]


def record_simulation(store: RunStore, workdir: Path, *, cores: int) -> str:
    """Record one ``placement simulate`` run as the CLI does: metrics, tables and report.

    40 VMs of 1-5 cores on 14 servers of ``cores`` cores, best-fit against worst-fit.
    """
    cluster_yaml = workdir / f"cluster-{cores}.yaml"
    cluster_yaml.write_text(
        f"server_types:\n  - {{name: s, count: 14, capacity: {{cores: {cores}, memory_gb: 16}}}}\n"
    )
    config = {"cluster": str(cluster_yaml), "policies": POLICIES, "seed": 0, "cores": cores}
    with store.run("placement simulate", config=config, inputs=[cluster_yaml]) as run:
        cluster = placement.load_cluster(cluster_yaml)
        summary, timeline, metrics = placement.compare(
            cluster, _vms(40), POLICIES, seed=0, samples=50
        )
        run.log_metrics(
            {
                f"{p}.{k}": v
                for p, m in metrics["policies"].items()
                for k, v in m.items()
                if isinstance(v, (int, float))
            }
            | {"bound_servers": metrics["bounds"]["servers"]}
        )
        run.write_parquet("summary.parquet", summary)
        run.write_json("result.json", {"summary": summary.to_dicts()})
        report = placement.simulation_report(summary, timeline, bound=metrics["bounds"])
        report.write(workdir / f"report-{cores}.html")
        run.add_artifact("report.html", workdir / f"report-{cores}.html")
    return run.id


def fill_store(root: Path, workdir: Path) -> Filled:
    """Two placement simulations (8- and 16-core servers) and one that failed on a missing file."""
    store = RunStore(root)
    small = record_simulation(store, workdir, cores=8)
    large = record_simulation(store, workdir, cores=16)
    with (
        pytest.raises(DataNotFoundError),
        store.run("placement simulate", config={"cluster": "missing.yaml"}) as run,
    ):
        placement.load_cluster(workdir / "missing.yaml")
    return Filled(store=store, small=small, large=large, failed=run.id)


@dataclass(frozen=True)
class Server:
    """A dashboard served by uvicorn in a thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread


def start_server(store_path: Path, *, poll_s: float = 0.3) -> Server:
    """Serve the dashboard over ``store_path`` on a free loopback port; wait until it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(store_path, poll_s=poll_s), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard server did not start within 10 s")
        time.sleep(0.02)
    return Server(url=f"http://127.0.0.1:{port}", server=server, thread=thread)
