"""``simulate``: a requests table and a cluster spec in, result tables and metrics out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError, InputFormatError
from fleetlab.inference._config import ClusterSpec, Frontend, ReplicaSpec
from fleetlab.inference._engine import PoolConfig, Router, make_router, run_engine
from fleetlab.inference._memory import MemoryPlan, memory_plan
from fleetlab.inference._perf import IterationModel, compile_model
from fleetlab.inference._specs import Efficiency, gpu_spec, model_spec
from fleetlab.sim import availability as node_availability

__all__ = ["SimResult", "simulate"]

_PREFIX_BLOCK_TOKENS = 512  # Mooncake hash_ids cover 512-token blocks


@dataclass(frozen=True)
class SimResult:
    """What one simulation returns.

    Attributes
    ----------
    requests : pl.DataFrame
        One row per request: request_id, arrival_s, prompt_tokens, output_tokens, replica,
        prefill_replica, queueing_s, ttft_s, tpot_s (mean time between tokens), tbt_max_s
        (longest gap between two of its tokens), e2e_s, preemptions, cached_tokens,
        meets_slo (times in seconds); with ``faults`` also retries, failed and
        reprefill_tokens.
    replicas : pl.DataFrame
        One row per replica: pool, gpus, busy_s, utilization, iterations, tokens,
        mean_batch_seqs (sequences per iteration), mean_batch_tokens (tokens per
        iteration), energy_j.
    timeseries : pl.DataFrame
        Samples per replica: t_s, replica, running, waiting, kv_used (fraction), busy.
    metrics : dict
        Headline numbers (percentiles in seconds, tokens/s, goodput, energy, cost); with
        ``faults`` also availability, min_availability, failed_requests,
        retried_requests, retries and reprefill_tokens.
    """

    requests: pl.DataFrame
    replicas: pl.DataFrame
    timeseries: pl.DataFrame
    metrics: dict[str, Any]


def _pool(spec: ReplicaSpec, role: str, eff: Efficiency | None) -> tuple[PoolConfig, MemoryPlan]:
    model = model_spec(spec.model)
    gpu = gpu_spec(spec.gpu)
    cap = spec.power_cap_w
    if cap is not None and not gpu.idle_w < cap <= gpu.tdp_w:
        raise ConfigError(
            f"power_cap_w: expected watts per GPU above {gpu.name}'s idle power "
            f"({gpu.idle_w:g} W) and at most its TDP ({gpu.tdp_w:g} W), found {cap:g}"
        )
    if spec.dtype == "fp8" and gpu.fp8_flops is None:
        raise ConfigError(f"GPU {gpu.name!r} has no fp8 support (field dtype; expected bf16)")
    plan = memory_plan(spec)
    max_tokens = max(spec.max_batched_tokens, spec.chunk_size) + spec.max_num_seqs
    limited = spec.gpu_clock < 1.0 or cap is not None

    def compiled(pp: int, at_limits: bool) -> IterationModel:
        return compile_model(
            model,
            gpu,
            tp=spec.tp,
            pp=pp,
            max_tokens=max_tokens,
            max_seqs=spec.max_num_seqs,
            dtype=spec.dtype,
            kv_dtype=spec.kv_dtype,
            efficiency=eff,
            cuda_graph_tokens=spec.cuda_graph_tokens,
            ep=spec.ep,
            clock=spec.gpu_clock if at_limits else 1.0,
            power_limit_w=cap if at_limits else None,
        )

    perf = compiled(spec.pp, at_limits=True)
    used = eff or gpu.efficiency
    send = None
    if spec.pp > 1:
        # one stage-to-stage send per token count: the PP model's tables differ from the
        # same model without PP only by the pp - 1 sends (at the stock clock: links do not
        # slow with the SMs)
        piped = compiled(spec.pp, at_limits=False) if limited else perf
        send = np.maximum((piped.linear - compiled(1, at_limits=False).linear) / (spec.pp - 1), 0.0)
    cfg = PoolConfig(
        perf=perf,
        kv_blocks=plan.kv_blocks,
        block_size=spec.block_size,
        scheduler=spec.scheduler,
        max_num_seqs=spec.max_num_seqs,
        max_batched_tokens=spec.max_batched_tokens,
        chunk_size=spec.chunk_size,
        prefix_caching=spec.prefix_caching,
        prefix_block_tokens=_PREFIX_BLOCK_TOKENS,
        role=role,
        gpus=spec.gpus,
        power=gpu.at_clock(spec.gpu_clock),
        power_limit_w=cap,
        pp=spec.pp,
        pp_send=send,
        cpu_overhead_s=(used.iteration_overhead_s, used.per_seq_overhead_s),
    )
    return cfg, plan


def _check_requests(
    requests: pl.DataFrame, specs: list[ReplicaSpec], plans: list[MemoryPlan], source: str
) -> None:
    if requests.height == 0:
        raise InputFormatError(
            source, "the requests table is empty", expected="at least one request", found="0 rows"
        )
    for col in ("arrival_s", "prompt_tokens", "output_tokens"):
        if col not in requests.columns:
            raise InputFormatError(
                source,
                "missing column",
                field=col,
                expected="a requests table (arrival_s, prompt_tokens, output_tokens)",
                found=requests.columns,
            )
        nulls = requests[col].is_null() | (requests[col].cast(pl.Float64).is_nan())
        if nulls.any():
            row = int(nulls.arg_max() or 0)
            raise InputFormatError(
                source, "missing value", row=row, field=col, expected="a number", found=None
            )
    for col in ("prompt_tokens", "output_tokens"):
        bad = requests[col] < 1
        if bad.any():
            row = int(bad.arg_max() or 0)
            raise InputFormatError(
                source,
                "token count must be >= 1",
                row=row,
                field=col,
                expected=">= 1",
                found=requests[col][row],
            )
    bad = requests["arrival_s"] < 0
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise InputFormatError(
            source,
            "negative arrival time",
            row=row,
            field="arrival_s",
            expected=">= 0",
            found=requests["arrival_s"][row],
        )
    total = requests["prompt_tokens"] + requests["output_tokens"]
    for spec, plan in zip(specs, plans, strict=True):
        model = model_spec(spec.model)
        over = total > model.max_context
        if over.any():
            row = int(over.arg_max() or 0)
            raise InputFormatError(
                source,
                f"request longer than {model.name}'s context window",
                row=row,
                field="prompt_tokens+output_tokens",
                expected=f"<= {model.max_context} tokens",
                found=int(total[row]),
            )
        # with pp > 1 each of the pp lanes (micro-batch schedulers) owns 1/pp of the blocks
        capacity = (plan.kv_blocks // spec.pp) * plan.block_size
        over = total > capacity
        if over.any():
            row = int(over.arg_max() or 0)
            where = (
                "one replica's KV cache"
                if spec.pp == 1
                else f"one of the {spec.pp} pipeline lanes' KV caches (1/pp of a replica's)"
            )
            raise InputFormatError(
                source,
                f"request does not fit in {where}",
                row=row,
                field="prompt_tokens+output_tokens",
                expected=f"<= {capacity} tokens",
                found=int(total[row]),
            )
        if spec.scheduler != "sarathi":
            over = total > spec.max_batched_tokens
            if over.any():
                row = int(over.arg_max() or 0)
                raise InputFormatError(
                    source,
                    f"request longer than max_batched_tokens of the {spec.scheduler} "
                    "scheduler (use sarathi's chunked prefill or raise the limit)",
                    row=row,
                    field="prompt_tokens+output_tokens",
                    expected=f"<= {spec.max_batched_tokens} tokens",
                    found=int(total[row]),
                )


def _replica_nodes(spec: ClusterSpec) -> list[str]:
    """The fault-model node names of ``spec``'s replicas, ``replica-0`` … ``replica-{n-1}``.

    One node per replica (a TP×PP replica's GPUs fail together); pass these as
    ``nodes`` to :func:`fleetlab.sim.draw_faults` to draw a ``faults`` table for
    :func:`simulate`.

    Parameters
    ----------
    spec : ClusterSpec
        The cluster (its ``replicas`` count; a disaggregated cluster counts prefill
        replicas then decode replicas).

    Returns
    -------
    list of str
    """
    n = spec.prefill_replicas + spec.decode_replicas if spec.disaggregated else spec.replicas
    return [f"replica-{i}" for i in range(n)]


_FAULT_COLUMNS = ("node", "kind", "start_s", "end_s", "factor")


def _fault_actions(
    faults: pl.DataFrame, nodes: list[str], source: str
) -> list[tuple[float, int, int, float]]:
    """Turn a :func:`fleetlab.sim.draw_faults` table into the engine's boundary list."""
    missing = [c for c in _FAULT_COLUMNS if c not in faults.columns]
    if missing:
        raise InputFormatError(
            source,
            "missing column in the faults table",
            field=missing[0],
            expected="a draw_faults table (node, kind, start_s, end_s, factor)",
            found=faults.columns,
        )
    index = {name: i for i, name in enumerate(nodes)}
    acts: list[tuple[float, int, int, float]] = []
    slow: dict[int, list[tuple[float, int, float]]] = {}
    for row, (node, kind, start, end, factor) in enumerate(
        faults.select(_FAULT_COLUMNS).iter_rows()
    ):
        rep = index.get(str(node))
        if rep is None:
            raise InputFormatError(
                source,
                "fault on an unknown replica",
                row=row,
                field="node",
                expected=f"one of replica-0 … replica-{len(nodes) - 1}",
                found=node,
            )
        if start is None or end is None or not (0 <= float(start) <= float(end)):
            raise InputFormatError(
                source,
                "bad fault window",
                row=row,
                field="start_s/end_s",
                expected="0 <= start_s <= end_s",
                found=(start, end),
            )
        if kind in ("down", "partitioned"):
            acts.append((float(start), rep, 0, 1.0))
            acts.append((float(end), rep, 1, 1.0))
        elif kind == "slow":
            if factor is None or not float(factor) > 0:
                raise InputFormatError(
                    source,
                    "bad slowdown factor",
                    row=row,
                    field="factor",
                    expected="> 0",
                    found=factor,
                )
            slow.setdefault(rep, []).extend(
                [(float(start), 1, float(factor)), (float(end), -1, float(factor))]
            )
        else:
            raise InputFormatError(
                source,
                "unknown fault kind",
                row=row,
                field="kind",
                expected="down, partitioned or slow",
                found=kind,
            )
    # overlapping slowdowns of one replica multiply; emit the product at each boundary
    for rep, marks in slow.items():
        active: list[float] = []
        marks.sort(key=lambda m: (m[0], m[1]))
        for t, sign, factor in marks:
            if sign > 0:
                active.append(factor)
            else:
                active.remove(factor)
            acts.append((t, rep, 2, math.prod(active)))
    acts.sort(key=lambda a: (a[0], a[1]))
    return acts


def simulate(
    requests: pl.DataFrame,
    spec: ClusterSpec,
    *,
    router: Router | None = None,
    decode_router: Router | None = None,
    efficiency: Efficiency | None = None,
    seed: int = 0,
    sample_every_s: float | None = None,
    source: str = "<requests>",
    faults: pl.DataFrame | None = None,
    on_crash: Literal["retry", "drop"] = "retry",
    frontend: Frontend | None = None,
) -> SimResult:
    """Simulate an LLM serving cluster on a requests table.

    Parameters
    ----------
    requests : pl.DataFrame
        Canonical requests table (``arrival_s`` seconds, ``prompt_tokens``,
        ``output_tokens``, optional ``request_id`` and ``prefix_ids``).
    spec : ClusterSpec
        Replicas, router, disaggregation, SLO.
    router, decode_router : Router, optional
        Routing policy objects; by default built from ``spec.router``.
    efficiency : Efficiency, optional
        Calibrated efficiencies replacing the GPU's built-in ones.
    seed : int
        Seed of randomised routers.
    sample_every_s : float, optional
        Time-series sampling period per replica (default: trace span / 400).
    source : str
        Name of the input used in error messages.
    faults : pl.DataFrame, optional
        Fault windows as :func:`fleetlab.sim.draw_faults` returns them (``node``,
        ``kind``, ``start_s``, ``end_s``, ``factor``; times in seconds on the requests'
        clock), over the nodes ``replica-0`` … ``replica-{n-1}`` names (one node per replica). ``down`` and ``partitioned``
        windows make a replica unreachable, ``slow`` ones multiply its iteration times by
        ``factor``. Needs a non-disaggregated cluster with ``pp == 1``. See
        docs/inference.md, "Faults".
    on_crash : {"retry", "drop"}
        What happens to the requests on a replica when it becomes unreachable: re-sent
        to another replica at that instant (prompt and tokens so far prefilled again), or
        failed.
    frontend : Frontend, optional
        Put the serving frontend in front of the engine (docs/inference.md, "Request
        frontend"): a request reaches the scheduler ``request_s`` after ``arrival_s``
        plus its tokenization on one shared tokenizer (first come, first served), and
        every token reaches the client ``token_out_s`` late. ``ttft_s``, ``e2e_s`` and
        ``queueing_s`` are then measured from ``arrival_s`` at the client; ``tpot_s`` is
        unchanged. None (default): requests arrive at the scheduler itself.

    Returns
    -------
    SimResult

    Raises
    ------
    ConfigError
        Unknown model/GPU, a model that does not fit at that TP, bad options.
    InputFormatError
        Empty table, missing columns, requests longer than the context window or the KV
        cache. All checks run before any simulation.
    """
    if spec.disaggregated:
        dspec = spec.decode_replica or spec.replica
        pcfg, pplan = _pool(spec.replica, "prefill", efficiency)
        dcfg, dplan = _pool(dspec, "decode", efficiency)
        pools, sizes = [pcfg, dcfg], [spec.prefill_replicas, spec.decode_replicas]
        specs, plans = [spec.replica, dspec], [pplan, dplan]
        gpu = gpu_spec(spec.replica.gpu)
        link = (
            gpu.intra_node_bytes_per_s
            if spec.kv_link == "intra_node"
            else (gpu.inter_node_bytes_per_s)
        )
        # every GPU of the prefill replica sends its shard in parallel
        kv_s_per_token = pplan.kv_bytes_per_token / link
    else:
        cfg, plan = _pool(spec.replica, "mixed", efficiency)
        pools, sizes, specs, plans = [cfg], [spec.replicas], [spec.replica], [plan]
        kv_s_per_token = 0.0
    _check_requests(requests, specs, plans, source)
    fault_acts = None
    if faults is not None:
        if spec.disaggregated or spec.replica.pp > 1:
            raise ConfigError(
                "faults: the inference simulator injects faults into one pool of replicas "
                f"with pp == 1 (found disaggregated={spec.disaggregated}, "
                f"pp={spec.replica.pp})"
            )
        if on_crash not in ("retry", "drop"):
            raise ConfigError(f"on_crash: expected 'retry' or 'drop', found {on_crash!r}")
        fault_acts = _fault_actions(faults, _replica_nodes(spec), "faults")

    req = requests.with_row_index("_row").sort("arrival_s", maintain_order=True)
    arrival = req["arrival_s"].cast(pl.Float64).to_numpy()
    prompt = req["prompt_tokens"].cast(pl.Int64).to_numpy()
    output = req["output_tokens"].cast(pl.Int64).to_numpy()
    prefixes = None
    keys: list[int] = []
    if "prefix_ids" in req.columns and req["prefix_ids"].null_count() < req.height:
        prefixes = [list(p) if p is not None else [] for p in req["prefix_ids"].to_list()]
        keys = [p[0] if p else -1 for p in prefixes]
    span = float(arrival[-1] - arrival[0]) if len(arrival) > 1 else 1.0
    every = sample_every_s if sample_every_s is not None else max(span / 400.0, 1e-3)
    routers = [router or make_router(spec.router, seed=seed, prefix_keys=keys)]
    if spec.disaggregated:
        routers.append(
            decode_router
            or make_router(
                "least_outstanding" if spec.router == "prefix" else spec.router, seed=seed + 1
            )
        )
    res = run_engine(
        arrival if frontend is None else arrival + frontend.request_s,
        prompt,
        output,
        pools,
        sizes,
        routers=routers,
        prefixes=prefixes,
        kv_transfer_s_per_token=kv_s_per_token,
        sample_every_s=every,
        faults=fault_acts,
        on_crash=on_crash,
        preprocess_s=None if frontend is None else prompt * frontend.tokenize_s_per_token,
        mixed_prompt_tokens=spec.mixed_prompt_tokens if spec.mixed_pool else None,
    )

    out_s = 0.0 if frontend is None else frontend.token_out_s
    ttft = res.first_token_s + out_s - arrival
    e2e = res.finish_s + out_s - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (res.finish_s - res.first_token_s) / (output - 1), 0.0)
    meets = (ttft <= spec.slo.ttft_s) & (tpot <= spec.slo.tpot_s)
    rid = req["request_id"] if "request_id" in req.columns else req["_row"].cast(pl.Int64)
    table = pl.DataFrame(
        {
            "request_id": rid,
            "arrival_s": arrival,
            "prompt_tokens": prompt,
            "output_tokens": output,
            "replica": res.replica,
            "prefill_replica": res.prefill_replica,
            "queueing_s": res.admitted_s - arrival,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "tbt_max_s": np.where(output > 1, res.tbt_max_s, 0.0),
            "e2e_s": e2e,
            "preemptions": res.preemptions,
            "cached_tokens": res.cached_tokens,
            "meets_slo": meets,
        }
    )
    if fault_acts is not None:
        assert res.retries is not None and res.failed is not None
        table = table.with_columns(
            retries=pl.Series(res.retries, dtype=pl.Int64),
            failed=pl.Series(res.failed, dtype=pl.Boolean),
            reprefill_tokens=pl.Series(res.reprefill_tokens, dtype=pl.Int64),
        )
    pool_names = (
        (["prefill"] * sizes[0] + ["decode"] * sizes[1])
        if spec.disaggregated
        else (["mixed"] * sizes[0])
    )
    gpus = [p.gpus for p, s in zip(pools, sizes, strict=True) for _ in range(s)]
    end = max(res.end_s, float(arrival[-1]))
    duration = max(end - float(arrival[0]), 1e-9)
    busy = np.asarray(res.busy_s)
    iters = np.maximum(np.asarray(res.iterations, dtype=np.float64), 1.0)
    energy = np.asarray(res.energy_j) + np.asarray(res.idle_w) * np.maximum(duration - busy, 0)
    replicas = pl.DataFrame(
        {
            "replica": np.arange(len(busy)),
            "pool": pool_names,
            "gpus": gpus,
            "busy_s": busy,
            "utilization": busy / duration,
            "iterations": res.iterations,
            "tokens": res.tokens,
            "mean_batch_seqs": np.asarray(res.seqs, dtype=np.float64) / iters,
            "mean_batch_tokens": np.asarray(res.tokens, dtype=np.float64) / iters,
            "energy_j": energy,
        }
    )
    ts = pl.DataFrame(
        res.series,
        schema={
            "t_s": pl.Float64,
            "replica": pl.Int64,
            "running": pl.Int64,
            "waiting": pl.Int64,
            "kv_used": pl.Float64,
            "busy": pl.Boolean,
        },
    )
    metrics = _metrics(table, replicas, spec, duration, res.queue_area, plans[0])
    if spec.disaggregated:  # served end to end on one replica (the mixed pool's work)
        metrics["mixed_requests"] = int((table["replica"] == table["prefill_replica"]).sum())
    if faults is not None:
        avail = node_availability(faults, nodes=_replica_nodes(spec), horizon_s=max(end, 1e-9))
        metrics.update(
            {
                # mean over replicas of the fraction of [0, end of simulation] each was up
                "availability": float(cast(float, avail["availability"].mean())),
                "min_availability": float(cast(float, avail["availability"].min())),
                "failed_requests": int(table["failed"].sum()),
                "retried_requests": int((table["retries"] > 0).sum()),
                "retries": int(table["retries"].sum()),
                "reprefill_tokens": int(table["reprefill_tokens"].sum()),
            }
        )
    return SimResult(table, replicas, ts, metrics)


def _pct(values: np.ndarray, q: float) -> float:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if v.size else float("nan")


def _metrics(
    table: pl.DataFrame,
    replicas: pl.DataFrame,
    spec: ClusterSpec,
    duration: float,
    queue_area: float,
    plan: MemoryPlan,
) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": table.height}
    for col in ("ttft_s", "tpot_s", "tbt_max_s", "e2e_s", "queueing_s"):
        v = table[col].to_numpy()
        for q in (50, 90, 99):
            out[f"{col[:-2]}_p{q}_s"] = _pct(v, q)
        out[f"{col[:-2]}_mean_s"] = float(np.nanmean(v))
    out_tokens = int(table["output_tokens"].sum())
    in_tokens = int(table["prompt_tokens"].sum())
    gpus = int(replicas["gpus"].sum())
    energy = float(replicas["energy_j"].sum())
    good = table.filter(pl.col("meets_slo"))
    usd = gpus * duration / 3600.0 * _price(spec)
    out.update(
        {
            "duration_s": duration,
            "throughput_rps": table.height / duration,
            "output_tokens_per_s": out_tokens / duration,
            "total_tokens_per_s": (out_tokens + in_tokens) / duration,
            "goodput_rps": good.height / duration,
            "slo_attainment": good.height / table.height,
            "preemptions": int(table["preemptions"].sum()),
            "gpus": gpus,
            "mean_utilization": float(cast(float, replicas["utilization"].mean())),
            "mean_batch_seqs": float(
                (replicas["mean_batch_seqs"] * replicas["iterations"]).sum()
                / max(int(replicas["iterations"].sum()), 1)
            ),
            "energy_j": energy,
            "energy_per_request_j": energy / table.height,
            "energy_per_output_token_j": energy / max(out_tokens, 1),
            "mean_power_w": energy / duration,
            "cost_usd": usd,
            "usd_per_million_output_tokens": usd / max(out_tokens, 1) * 1e6,
            "kv_capacity_tokens": plan.kv_tokens,
            "mean_in_system": queue_area / duration,
        }
    )
    return out


def _price(spec: ClusterSpec) -> float:
    return gpu_spec(spec.replica.gpu).usd_per_hour
