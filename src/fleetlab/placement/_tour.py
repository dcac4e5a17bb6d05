"""The placement stop of ``fleetlab tour``: policies side by side on a GPU trace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fleetlab import traces
from fleetlab.placement._cluster import (
    ClusterSpec,
    ServerType,
    build_cluster,
    cluster_from_nodes,
    read_node_list,
)
from fleetlab.placement._fgd_protocol import fragmentation_experiment
from fleetlab.placement._inputs import load_vms
from fleetlab.placement._report import fragmentation_report
from fleetlab.report import Report
from fleetlab.sim import Streams

OPENB = "alibaba-gpu-2023-openb"

#: a GPU-sharing task mix written here so the tour runs with no data: (share, cores,
#: memory GiB, GPUs, milli-GPUs per GPU). Shares are close to the openb trace's: 13%
#: CPU-only, most tasks one whole or a fraction of a GPU, a few multi-GPU tasks.
DEMO_MIX: tuple[tuple[float, float, float, int, int], ...] = (
    (0.13, 8.0, 32.0, 0, 0),
    (0.30, 12.0, 48.0, 1, 1000),
    (0.12, 6.0, 12.0, 1, 500),
    (0.10, 4.0, 15.0, 1, 250),
    (0.10, 4.0, 12.0, 1, 460),
    (0.08, 8.0, 24.0, 1, 750),
    (0.07, 2.0, 8.0, 1, 100),
    (0.05, 16.0, 64.0, 2, 1000),
    (0.03, 32.0, 128.0, 4, 1000),
    (0.02, 64.0, 256.0, 8, 1000),
)
#: the demo cluster: 8-GPU and 2-GPU servers like openb's most common node types
DEMO_CLUSTER = ClusterSpec(
    name="demo-gpu",
    server_types=(
        ServerType(name="g8", count=60, capacity={"cores": 96, "memory_gb": 384}, gpus=8),
        ServerType(name="t2", count=40, capacity={"cores": 104, "memory_gb": 512}, gpus=2),
    ),
)


def demo_tasks(seed: int, n: int = 2000) -> pl.DataFrame:
    """A canonical ``vms`` table of ``n`` GPU tasks drawn from :data:`DEMO_MIX`."""
    rng = Streams(seed).get("placement.demo")
    mix = np.array([m[1:] for m in DEMO_MIX])
    p = np.array([m[0] for m in DEMO_MIX])
    pick = rng.choice(len(DEMO_MIX), size=n, p=p / p.sum())
    rows = mix[pick]
    frame = pl.LazyFrame(
        {
            "vm_id": [f"task-{i}" for i in range(n)],
            "created_s": np.arange(n, dtype=np.float64),
            "deleted_s": np.full(n, None),
            "cores": rows[:, 0],
            "memory_gb": rows[:, 1],
            "gpus": rows[:, 2],
            "gpu_milli": rows[:, 3].astype(np.int64),
        }
    )
    return traces.canonical(frame, "vms").collect()


def _mirror_openb() -> tuple[Path, Path] | None:
    root = os.environ.get("FLEETLAB_MIRROR")
    if not root:
        return None
    base = Path(root) / OPENB
    pods, nodes = base / "openb_pod_list_default.csv", base / "openb_node_list_gpu_node.csv"
    return (pods, nodes) if pods.exists() and nodes.exists() else None


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Compare placement policies with the FGD paper's protocol on a GPU trace.

    Uses the openb trace (Alibaba GPU 2023) from ``$FLEETLAB_MIRROR`` on a quarter of
    its GPU nodes when present, else tasks synthesized from :data:`DEMO_MIX` on
    :data:`DEMO_CLUSTER`. One arrival sequence (``seed``), four policies.

    Returns
    -------
    report, summary
        The report sections and headline numbers (unallocated GPU share per policy,
        FGD's reduction against best fit, which data was used).
    """
    found = _mirror_openb()
    if found is not None:
        pods, nodes_path = found
        nodes = read_node_list(nodes_path)
        cluster = cluster_from_nodes(nodes.gather_every(4))
        vms = load_vms(pods)
        source = f"openb trace from the mirror ({pods.name}; every 4th GPU node: "
        source += f"{cluster.size} nodes, {int(cluster.gpus.sum())} GPUs)"
    else:
        cluster = build_cluster(DEMO_CLUSTER)
        vms = demo_tasks(seed)
        source = (
            f"tasks synthesized from DEMO_MIX (no mirror) on {cluster.size} servers, "
            f"{int(cluster.gpus.sum())} GPUs"
        )
    policies = ("random", "dot-product", "best-fit", "fgd")
    curves, summary, metrics = fragmentation_experiment(
        cluster, vms, policies, seeds=(seed,), step=0.05
    )
    curves.write_parquet(workdir / "placement_fgd_curves.parquet")
    report = fragmentation_report(
        curves,
        summary,
        metrics,
        note=(
            f"Data: {source}. Tasks keep arriving with no departures until their GPU "
            "requests reach the cluster's GPU capacity; each policy sees the same "
            "sequence. Lower is better."
        ),
    )
    per = {r["policy"]: round(float(r["unallocated"]), 4) for r in summary.to_dicts()}
    return report, {
        "data": "openb (mirror)" if found else "synthesized (DEMO_MIX)",
        "unallocated_share": per,
        "winner": metrics.get("winner"),
        "fgd_reduction_vs_best_fit": metrics.get("fgd_reduction_vs_best-fit"),
    }
