"""The capacity question: how many servers of one type does a trace need?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.placement._bounds import fluid_bound, lp_bound, peak_times
from fleetlab.placement._cluster import ClusterSpec, ServerType, build_cluster
from fleetlab.placement._failures import outages
from fleetlab.placement._fgd import task_types
from fleetlab.placement._policies import make_policy
from fleetlab.placement._requests import requests_from_vms
from fleetlab.placement._simulate import Engine, simulate
from fleetlab.sim import FailureSpec


def size_cluster(
    vms: pl.DataFrame,
    server: ServerType,
    policy: str,
    *,
    max_failure_rate: float = 0.0,
    servers_per_rack: int = 40,
    seed: int = 0,
    max_servers: int = 200_000,
    failures: FailureSpec | None = None,
    progress: Callable[[int], None] | None = None,
    migrate: bool = False,
    engine: Engine = "auto",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Find the fewest servers of type ``server`` on which ``policy`` fails at most ``f``.

    Binary search between the fluid lower bound and a doubling upper bound; every
    probe is a full simulation. The failure rate is not strictly monotone in the
    server count for every heuristic, so the answer is the smallest probed count
    meeting the target with every larger probe meeting it too.

    Parameters
    ----------
    vms
        Canonical ``vms`` table.
    server
        The server type to size (its ``count`` is ignored).
    policy
        Policy name (see :data:`POLICY_NAMES`).
    max_failure_rate
        Allowed share of requests that fail (0..1).
    servers_per_rack
        Rack size of the sized cluster.
    seed
        Seed for drawing policies.
    max_servers
        Give up above this many servers.
    failures
        Node/rack crash processes (shared fault model). Each probe then draws outages
        for its servers (seeded) over the trace's span, and VMs lost to evictions count
        as failures too: the answer includes the headroom the failures need.
    progress
        Called with the number of probes done after each probe.
    migrate
        Let the policy move one resident VM to make room (see :func:`make_policy`).
    engine
        As :func:`simulate`: ``auto`` runs each probe in the compiled kernel when the
        policy and failures allow it; ``result["engine"]`` says which ran.

    Returns
    -------
    probes, result
        ``probes``: one row per simulation (``servers``, ``failure_rate``, ``ok``,
        ``engine``);
        ``result``: ``servers`` (the answer), ``fluid_bound``, ``lp_bound``, ``gap``
        (answer / LP bound - 1), ``policy``, ``max_failure_rate``, ``engine``.

    Raises
    ------
    ConfigError
        ``max_failure_rate`` outside [0, 1], or no count up to ``max_servers`` works.
    """
    if not 0 <= max_failure_rate <= 1:
        raise ConfigError(f"max_failure_rate: expected 0..1, found {max_failure_rate}")
    one = build_cluster(ClusterSpec(server_types=(server.model_copy(update={"count": 1}),)))
    reqs = requests_from_vms(vms, one)
    fluid = fluid_bound(reqs, one.capacity[0])
    lo = max(int(fluid["servers"]), 1)
    horizon = reqs.horizon_s
    probes: list[dict[str, Any]] = []
    cache: dict[int, float] = {}
    engines: set[str] = set()

    def rate(n: int) -> float:
        if n not in cache:
            spec = ClusterSpec(
                server_types=(server.model_copy(update={"count": n}),),
                servers_per_rack=servers_per_rack,
            )
            cl = build_cluster(spec)
            r = requests_from_vms(vms, cl)
            types = task_types(r, cl.dims) if "gpus" in cl.dims else None
            out = None
            if failures is not None:
                out = outages(cl, failures, horizon_s=horizon, seed=seed)
            res = simulate(
                cl,
                r,
                make_policy(policy, seed=seed, types=types, migrate=migrate),
                samples=2,
                types=types,
                outages=out,
                engine=engine,
            )
            engines.add(res.metrics["engine"])
            too_big = res.metrics["too_large"]
            failed = res.metrics["failures"] - too_big + res.metrics["lost"]
            cache[n] = failed / max(r.size, 1)
            probes.append(
                {
                    "servers": n,
                    "failure_rate": cache[n],
                    "ok": cache[n] <= max_failure_rate,
                    "engine": res.metrics["engine"],
                }
            )
            if progress is not None:
                progress(len(probes))
        return cache[n]

    hi = lo
    while rate(hi) > max_failure_rate:
        lo = hi + 1
        hi *= 2
        if hi > max_servers:
            raise ConfigError(
                f"max_servers: no cluster up to {max_servers} servers meets failure rate "
                f"<= {max_failure_rate}"
            )
    while lo < hi:
        mid = (lo + hi) // 2
        if rate(mid) <= max_failure_rate:
            hi = mid
        else:
            lo = mid + 1
    lp = 0
    for t in peak_times(reqs, one.capacity[0], k=2):
        res = lp_bound(reqs, one, at_s=float(t), available=False)
        lp = max(lp, res["servers"] or 0)
    bound = max(lp, int(fluid["servers"]))
    result = {
        "policy": policy,
        "server_type": server.name,
        "max_failure_rate": max_failure_rate,
        "with_failures": failures is not None,
        "servers": hi,
        "fluid_bound": int(fluid["servers"]),
        "lp_bound": int(lp),
        "gap": float(hi / bound - 1.0) if bound else float("nan"),
        "too_large": int(np.sum(~(reqs.demand <= one.capacity[0] + 1e-9).all(axis=1))),
        "migrate": migrate,
        # probes without outages may use the kernel where probes with some cannot
        "engine": "+".join(sorted(engines)),
    }
    return pl.DataFrame(probes).sort("servers"), result
