"""The FGD paper's protocol (Weng et al., ATC'23): fill a GPU cluster, measure waste.

Tasks drawn from the trace (with replacement) keep arriving, with no departures, until
the GPUs they request reach the cluster's GPU capacity. Along the way the share of GPUs
left unallocated and the share fragmented (FGD's measure) are recorded against the
arrived load, for every policy on the same arrival sequence, and averaged over seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.placement._cluster import GPU_DIM, Cluster
from fleetlab.placement._fgd import FgdScore, task_types
from fleetlab.placement._kernel import StreamRun, kernel_ineligible
from fleetlab.placement._policies import Policy, decide, make_policy
from fleetlab.placement._requests import Requests, requests_from_vms
from fleetlab.placement._state import ClusterState, ask_of
from fleetlab.sim import Streams


def arrival_sequence(reqs: Requests, gpu_capacity: float, seed: int) -> Requests:
    """Tasks drawn with replacement until their GPU requests reach ``gpu_capacity``.

    Arrival times are 0, 1, 2, ... seconds; no task departs.
    """
    rng = Streams(seed).get("placement.fgd-arrivals")
    gpu = reqs.gpu_count * reqs.gpu_milli / 1000.0
    if gpu.sum() <= 0:
        raise ConfigError("trace: no task requests a GPU (expected a GPU trace such as openb)")
    picks: list[np.ndarray] = []
    total = 0.0
    while total < gpu_capacity:
        batch = rng.integers(0, reqs.size, size=max(256, reqs.size // 4))
        cum = total + np.cumsum(gpu[batch])
        stop = np.searchsorted(cum, gpu_capacity)
        if stop < batch.size:
            picks.append(batch[: stop + 1])
            break
        picks.append(batch)
        total = float(cum[-1])
    idx = np.concatenate(picks)
    sub = reqs.take(idx)
    n = idx.size
    return dataclasses.replace(
        sub,
        vm_id=np.array([f"{v}#{i}" for i, v in enumerate(sub.vm_id.tolist())], dtype=object),
        arrival=np.arange(n, dtype=np.float64),
        departure=np.full(n, np.inf),
        predicted_departure=np.full(n, np.inf),
    )


def _cluster_frag(state: ClusterState | StreamRun, score: FgdScore) -> float:
    gpus = np.flatnonzero(state.cluster.gpus > 0)
    keys = []
    for node in gpus.tolist():
        cpu, mem = score._cm(state, node)
        keys.append(score._key(cpu, mem, state.gpu_free[node]))
    return float(sum(score._frag_many(keys))) / 1000.0


def _fill_python(
    cluster: Cluster, seq: Requests, pol: Policy, marks: list[int]
) -> Iterator[tuple[ClusterState | StreamRun, int]]:
    """The state and failures so far after each arrival in ``marks`` (Python path)."""
    state = ClusterState(cluster)
    failed = 0
    todo = set(marks)
    for i in range(seq.size):
        ask = ask_of(seq, i)
        choice = decide(pol, state, ask)
        if choice is None:
            failed += 1
        else:
            state.place(ask, *choice)
        if i in todo:
            yield state, failed


def _fill_kernel(
    cluster: Cluster, seq: Requests, pol: Policy, marks: list[int]
) -> Iterator[tuple[ClusterState | StreamRun, int]]:
    """The same from the compiled kernel (arrivals at 0, 1, 2, ... s; no departures)."""
    run = StreamRun(cluster, seq, pol)
    for i in marks:
        run.advance(float(seq.arrival[i]) + 0.5)
        yield run, run.failures


def fragmentation_experiment(
    cluster: Cluster,
    vms: pl.DataFrame | Requests,
    policies: Sequence[str] = (
        "random",
        "dot-product",
        "gpu-packing",
        "gpu-clustering",
        "best-fit",
        "fgd",
    ),
    *,
    seeds: Sequence[int] = (0, 1, 2),
    step: float = 0.02,
    progress: Callable[[int], None] | None = None,
    engine: Literal["auto", "python"] = "auto",
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Run the FGD paper's fill-the-cluster protocol.

    Parameters
    ----------
    cluster
        A GPU cluster (e.g. the openb node list).
    vms
        The task trace (canonical ``vms``); its task shapes are also FGD's target
        workload.
    policies
        Policy names to compare.
    seeds
        One arrival sequence per seed, shared by every policy.
    step
        Record every ``step`` of arrived load (share of GPU capacity).
    progress
        Called with the number of (seed, policy) runs done after each.
    engine
        ``auto``: the compiled kernel for the policies that have one (``best-fit``,
        ``dot-product``, ...; identical curves), the Python path for the others;
        ``python``: the Python path for all.

    Returns
    -------
    curves, summary, metrics
        ``curves``: ``policy, seed, arrived, unallocated, fragmented, failed`` (shares
        of GPU capacity; ``failed`` counts tasks); ``summary``: per policy the mean over
        seeds at full arrived load (``unallocated``, ``fragmented``, ``unallocated_gpus``,
        ``failed``); ``metrics``: FGD's reduction of unallocated GPUs vs each baseline.

    Raises
    ------
    ConfigError
        The cluster has no GPUs, the trace requests none, or an unknown engine.
    """
    if engine not in ("auto", "python"):
        raise ConfigError(f"engine: expected auto or python, found {engine!r}")
    if GPU_DIM not in cluster.dims:
        raise ConfigError("cluster: the FGD protocol needs GPU servers, found none")
    reqs = vms if isinstance(vms, Requests) else requests_from_vms(vms, cluster)
    types = task_types(reqs, cluster.dims)
    capacity = float(cluster.gpus.sum())
    gcol = cluster.dims.index(GPU_DIM)
    rows: list[dict[str, Any]] = []
    tasks: list[int] = []
    done = 0
    for seed in seeds:
        seq = arrival_sequence(reqs, capacity, seed)
        tasks.append(seq.size)
        gpu_req = seq.gpu_count * seq.gpu_milli / 1000.0
        cum = np.cumsum(gpu_req) / capacity
        # the arrivals after which the curve is recorded (each ``step`` of arrived load)
        marks: list[int] = []
        mark = step
        for i in range(seq.size):
            if cum[i] + 1e-12 >= mark or i == seq.size - 1:
                marks.append(i)
                while mark <= cum[i] + 1e-12:
                    mark += step
        for name in policies:
            pol = make_policy(name, seed=seed, types=types)
            meter = FgdScore(types)
            if engine == "auto" and kernel_ineligible(pol) is None:
                states = _fill_kernel(cluster, seq, pol, marks)
            else:
                states = _fill_python(cluster, seq, pol, marks)
            for i, (state, failed) in zip(marks, states, strict=True):
                alloc = float(capacity - state.free[:, gcol].sum()) / capacity
                rows.append(
                    {
                        "policy": name,
                        "seed": seed,
                        "arrived": float(min(cum[i], 1.0)),
                        "unallocated": 1.0 - alloc,
                        "fragmented": _cluster_frag(state, meter) / capacity,
                        "failed": failed,
                    }
                )
            done += 1
            if progress is not None:
                progress(done)
    curves = pl.DataFrame(rows)
    final = curves.group_by("policy", "seed", maintain_order=True).agg(
        pl.all().sort_by("arrived").last()
    )
    summary = (
        # in curve order, so the means over seeds are summed in one fixed order
        final.group_by("policy", maintain_order=True)
        .agg(
            pl.col("unallocated").mean(),
            pl.col("unallocated").std().alias("unallocated_std"),
            pl.col("fragmented").mean(),
            pl.col("failed").mean(),
        )
        .with_columns((pl.col("unallocated") * capacity).alias("unallocated_gpus"))
        .sort("unallocated", maintain_order=True)  # ties keep the policies' order
    )
    metrics: dict[str, Any] = {
        "gpu_capacity": capacity,
        "seeds": list(seeds),
        "tasks_per_seed": float(np.mean(tasks)) if tasks else 0.0,
    }
    per = {r["policy"]: r for r in summary.to_dicts()}
    if "fgd" in per:
        f = per["fgd"]["unallocated"]
        for name, r in per.items():
            if name != "fgd" and r["unallocated"] > 0:
                metrics[f"fgd_reduction_vs_{name}"] = 1.0 - f / r["unallocated"]
                metrics[f"fgd_gpus_saved_vs_{name}"] = (r["unallocated"] - f) * capacity
    metrics["winner"] = summary["policy"][0] if summary.height else None
    return curves, summary, metrics
