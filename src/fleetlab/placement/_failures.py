"""Node failures (shared fault models) and oversubscription violations."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from fleetlab.placement._cluster import Cluster
from fleetlab.sim import FailureSpec, failure_timeline


def outages(
    cluster: Cluster, spec: FailureSpec, *, horizon_s: float, seed: int = 0
) -> pl.DataFrame:
    """Node outages over ``[0, horizon_s]`` from the shared crash/recover fault model.

    Independent node crashes and correlated rack failures (racks are the cluster's
    fault domains), drawn by :func:`fleetlab.sim.failure_timeline`.

    Returns
    -------
    polars.DataFrame
        ``node, down_s, up_s, cause``.
    """
    from fleetlab.sim import Streams

    return failure_timeline(
        spec,
        [str(n) for n in cluster.node_ids],
        cluster.domains(),
        horizon_s=horizon_s,
        rng=Streams(seed).get("placement.failures"),
    )


def headroom(cluster: Cluster, outage: pl.DataFrame) -> dict[str, Any]:
    """Capacity down at once: the headroom a cluster needs to ride out these outages.

    Returns
    -------
    dict
        ``peak_down_servers``, ``peak_down_share`` (of servers) and per dimension
        ``peak_down_<d>`` (share of capacity down at the worst moment).
    """
    if outage.height == 0:
        return {"peak_down_servers": 0, "peak_down_share": 0.0}
    idx = {str(n): i for i, n in enumerate(cluster.node_ids)}
    node = np.array([idx.get(str(n), -1) for n in outage["node"].to_list()])
    keep = node >= 0
    node = node[keep]
    down = outage["down_s"].to_numpy()[keep]
    up = outage["up_s"].to_numpy()[keep]
    t = np.concatenate([down, up])
    sign = np.concatenate([np.ones(node.size), -np.ones(node.size)])
    cap = cluster.capacity[np.concatenate([node, node])] * sign[:, None]
    order = np.lexsort((sign, t))  # ups before downs at equal times
    cum_n = np.cumsum(sign[order])
    cum_c = np.cumsum(cap[order], axis=0)
    total = cluster.capacity.sum(axis=0)
    out: dict[str, Any] = {
        "peak_down_servers": int(cum_n.max()),
        "peak_down_share": float(cum_n.max() / cluster.size),
    }
    for j, d in enumerate(cluster.dims):
        out[f"peak_down_{d}"] = float(cum_c[:, j].max() / total[j]) if total[j] > 0 else 0.0
    return out


def oversub_violations(
    placements: pl.DataFrame, vms: pl.DataFrame, usage: pl.DataFrame, cluster: Cluster
) -> dict[str, Any]:
    """Times a server's true CPU use exceeded its cores, from the ``usage`` series.

    Each usage sample of a placed VM (``cpu_max`` or else ``cpu_avg``, percent of the
    VM's cores) is charged to the server it ran on at that time; a (server, sample
    time) whose summed use exceeds the server's cores is a violation.

    Returns
    -------
    dict
        ``samples`` (server-time samples with any placed VM), ``violations`` and
        ``violation_rate``.
    """
    if "cores" not in cluster.dims or usage.height == 0:
        return {"samples": 0, "violations": 0, "violation_rate": 0.0}
    col = (
        "cpu_max"
        if "cpu_max" in usage.columns and usage["cpu_max"].null_count() < usage.height
        else "cpu_avg"
    )
    cap = pl.DataFrame(
        {
            "node": [str(n) for n in cluster.node_ids],
            "node_cores": cluster.capacity[:, cluster.dims.index("cores")],
        }
    )
    per = (
        usage.lazy()
        .select("vm_id", "ts_s", pl.col(col).alias("pct"))
        .join(placements.lazy().filter(pl.col("node").is_not_null()), on="vm_id")
        .filter((pl.col("ts_s") >= pl.col("start_s")) & (pl.col("ts_s") < pl.col("end_s")))
        .join(vms.lazy().select("vm_id", "cores"), on="vm_id")
        .group_by("node", "ts_s")
        .agg((pl.col("cores") * pl.col("pct") / 100.0).sum().alias("used"))
        .join(cap.lazy(), on="node")
        .select((pl.col("used") > pl.col("node_cores") + 1e-9).alias("over"))
        .collect()
    )
    n = per.height
    v = int(per["over"].sum()) if n else 0
    return {"samples": n, "violations": v, "violation_rate": v / n if n else 0.0}


def load_failure_spec(path: str) -> FailureSpec:
    """Load a :class:`fleetlab.sim.FailureSpec` (node / rack crash processes) from YAML.

    Raises
    ------
    DataNotFoundError, ConfigError
        Missing file, or invalid YAML / field (the message names the field).
    """
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    from fleetlab.errors import ConfigError, DataNotFoundError

    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    try:
        return FailureSpec.model_validate(yaml.safe_load(p.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"{p}: field {field!r}: {first['msg']} (found {first.get('input')!r})"
        ) from exc
