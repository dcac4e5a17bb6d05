"""``fleetlab inference``: see docs/inference.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import typer

from fleetlab.cli._common import (
    JsonOption,
    err,
    kv_table,
    out,
    print_json,
    progress,
    recorded_run,
    rich_table,
)
from fleetlab.errors import ConfigError, DataNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

app = typer.Typer(
    help="LLM serving-cluster simulator: specs, simulate, calibrate, validate, profile.",
    no_args_is_help=True,
)

_SCHEDULERS = ("vllm", "sarathi", "orca")
_ROUTERS = ("round_robin", "least_outstanding", "least_kv", "power_of_two", "prefix")


def _refuse_overwrite(path: Path | None, force: bool) -> None:
    if path is not None and path.exists() and not force:
        raise ConfigError(f"{path} exists (pass --force to replace it)")


@app.command("specs")
def specs_cmd(json_out: bool = JsonOption) -> None:
    """List the built-in model architectures and GPUs."""
    from fleetlab import inference

    models = [
        {
            "model": m.name,
            "params_b": m.num_params / 1e9,
            "layers": m.num_layers,
            "heads": m.num_heads,
            "kv_heads": m.num_kv_heads,
            "experts": m.num_experts,
            "context": m.max_context,
            "kv_mb_per_token": m.kv_bytes_per_token() / 1e6,
        }
        for m in inference.builtin_models().values()
    ]
    gpus = [
        {
            "gpu": g.name,
            "bf16_tflops": g.bf16_flops / 1e12,
            "fp8_tflops": (g.fp8_flops or 0) / 1e12,
            "hbm_tb_s": g.hbm_bytes_per_s / 1e12,
            "memory_gb": g.memory_bytes / 1e9,
            "tdp_w": g.tdp_w,
            "usd_per_hour": g.usd_per_hour,
        }
        for g in inference.builtin_gpus().values()
    ]
    if json_out:
        print_json({"models": models, "gpus": gpus})
        return
    out.print(rich_table(models, title="Models"))
    out.print(rich_table(gpus, title="GPUs"))


@app.command("simulate")
def simulate_cmd(
    trace: Path | None = typer.Option(
        None, "--trace", "-t", help="Requests file (any format fleetlab.traces reads)."
    ),
    workload: Path | None = typer.Option(
        None,
        "--workload",
        "-w",
        help="Fitted requests workload model (fleetlab workload fit): synthesize arrivals.",
    ),
    duration: str | None = typer.Option(
        None, "--duration", help="With --workload: how long to synthesize (90s, 30m, 1h)."
    ),
    scale: float = typer.Option(
        1.0, "--scale", help="With --workload: multiply the model's arrival rate."
    ),
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Model name or YAML."),
    gpu: str = typer.Option("h100", "--gpu", "-g", help="GPU name or YAML."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    ep: int = typer.Option(
        1, "--ep", help="Expert-parallel degree (MoE models; a divisor of --tp)."
    ),
    replicas: int = typer.Option(1, "--replicas", "-r", help="Replicas (co-located)."),
    scheduler: str = typer.Option("vllm", "--scheduler", "-s", help="vllm, sarathi or orca."),
    chunk: int = typer.Option(512, "--chunk", help="Sarathi token budget per iteration."),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="Max sequences per batch."),
    max_batched_tokens: int = typer.Option(
        8192, "--max-batched-tokens", help="Max tokens per iteration (vllm, orca)."
    ),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 or fp8 weights."),
    router: str = typer.Option("least_outstanding", "--router", help=", ".join(_ROUTERS)),
    disaggregate: str | None = typer.Option(
        None, "--disaggregate", help="P:D prefill and decode replicas."
    ),
    mixed_pool: bool = typer.Option(
        False,
        "--mixed-pool",
        help="With --disaggregate: a replica serves a request end to end when the other "
        "pool is overloaded (Splitwise's mixed pool).",
    ),
    gpu_clock: float = typer.Option(
        1.0, "--gpu-clock", help="SM clock as a fraction of the maximum (DVFS; 1.0 = stock)."
    ),
    power_cap: float | None = typer.Option(
        None, "--power-cap", help="Board power cap per GPU, watts (default: the TDP)."
    ),
    prefix_caching: bool = typer.Option(
        False, "--prefix-caching", help="Reuse KV of shared prefixes (prefix_ids)."
    ),
    qps: float | None = typer.Option(None, "--qps", help="Re-time arrivals at this rate."),
    trace_rate: bool = typer.Option(
        False, "--trace-rate", help="Keep the trace's own arrival times (the default)."
    ),
    arrival: str = typer.Option("poisson", "--arrival", help="poisson or gamma (with --qps)."),
    cv: float = typer.Option(1.0, "--cv", help="Gamma inter-arrival coefficient of variation."),
    num_requests: int = typer.Option(
        10000, "--num-requests", "-n", help="Synthetic requests when no --trace is given."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use the first N requests only."),
    slo_ttft: float = typer.Option(2.0, "--slo-ttft", help="TTFT target (s) for goodput."),
    slo_tpot: float = typer.Option(0.1, "--slo-tpot", help="TPOT target (s) for goodput."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="ClusterSpec YAML (overrides the options above)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Per-request results (.parquet or .json)."
    ),
    report: Path | None = typer.Option(None, "--report", help="HTML report to write."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    seed: int = typer.Option(0, "--seed", help="Seed for arrivals, routing and faults."),
    faults: Path | None = typer.Option(
        None,
        "--faults",
        help="FaultModel YAML (docs/faults.md): crashes, slowdowns, partitions drawn over "
        "the replicas replica-0..N-1 with --seed.",
    ),
    on_crash: str = typer.Option(
        "retry", "--on-crash", help="With --faults: retry (re-send) or drop in-flight requests."
    ),
    fault_horizon: float | None = typer.Option(
        None,
        "--fault-horizon",
        help="With --faults: draw faults over [0, S] seconds (default: the last arrival).",
    ),
    racks: int = typer.Option(
        1, "--racks", help="With --faults: failure domains the replicas are spread over."
    ),
    json_out: bool = JsonOption,
) -> None:
    """Simulate an LLM serving cluster on a trace, a fitted workload model, or --qps arrivals."""
    import polars as pl

    from fleetlab import inference, traces

    for path in (output, report):
        _refuse_overwrite(path, force)
    if trace_rate and qps is not None:
        raise ConfigError("--trace-rate keeps the trace's arrivals; it cannot go with --qps")
    if workload is not None and trace is not None:
        raise ConfigError("give either --trace or --workload, not both")
    if workload is None and (duration is not None or scale != 1.0):
        raise ConfigError("--duration and --scale apply to --workload only")
    if scheduler not in _SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r} (expected one of {_SCHEDULERS})")
    if config is not None:
        spec = inference.load_spec(config, inference.ClusterSpec)
    else:
        prefill = decode = 0
        if disaggregate:
            try:
                prefill, decode = (int(x) for x in disaggregate.split(":"))
            except ValueError:
                raise ConfigError(
                    f"--disaggregate expects P:D (e.g. 2:2), found {disaggregate!r}"
                ) from None
        try:
            spec = inference.ClusterSpec(
                replica=inference.ReplicaSpec(
                    model=model,
                    gpu=gpu,
                    tp=tp,
                    pp=pp,
                    ep=ep,
                    dtype=dtype,
                    scheduler=scheduler,
                    chunk_size=chunk,
                    max_num_seqs=max_num_seqs,
                    max_batched_tokens=max_batched_tokens,
                    prefix_caching=prefix_caching,
                    gpu_clock=gpu_clock,
                    power_cap_w=power_cap,
                ),
                replicas=replicas,
                router=router,
                prefill_replicas=prefill,
                decode_replicas=decode,
                mixed_pool=mixed_pool,
                slo=inference.Slo(ttft_s=slo_ttft, tpot_s=slo_tpot),
            )
        except Exception as exc:  # pydantic validation -> one-line config error
            if hasattr(exc, "errors"):
                first = exc.errors()[0]
                if not first["loc"]:  # a check across options
                    raise ConfigError(first["msg"].removeprefix("Value error, ")) from None
                raise ConfigError(
                    f"option {first['loc'][-1]}: {first['msg']} (found {first.get('input')!r})"
                ) from None
            raise
    inference.model_spec(spec.replica.model)
    inference.gpu_spec(spec.replica.gpu)
    # checked by the library, which names the expected values (ConfigError)
    process = cast(Literal["poisson", "gamma"], arrival)
    if trace is not None:
        if not trace.exists():
            raise DataNotFoundError(f"{trace}: no such trace file")
        requests = traces.load(trace)
        source = str(trace)
    elif workload is not None:
        requests = _synthesize(workload, duration=duration, scale=scale, seed=seed)
        source = f"workload model {workload}"
    else:
        if qps is None:
            raise ConfigError("give --trace, or --qps for synthetic Poisson/Gamma requests")
        requests = inference.poisson_requests(
            num_requests,
            qps=qps,
            process=process,
            cv=cv,
            seed=seed,
        )
        source = f"synthetic {arrival} {qps} req/s"
    if limit is not None:
        requests = requests.head(limit)
    if qps is not None and (trace is not None or workload is not None):
        requests = inference.retime(
            requests,
            qps=qps,
            process=process,
            cv=cv,
            seed=seed,
        )
    fault_table = None
    horizon = None
    if faults is not None:
        from fleetlab import sim

        if not faults.exists():
            raise DataNotFoundError(f"{faults}: no such fault model file")
        if racks < 1:
            raise ConfigError(f"--racks: expected >= 1, found {racks}")
        fault_model = sim.load_fault_model(faults)
        # one fault-model node per replica, named as inference.simulate expects
        n_rep = spec.prefill_replicas + spec.decode_replicas or spec.replicas
        nodes = [f"replica-{i}" for i in range(n_rep)]
        domains = {name: f"rack-{i * racks // n_rep}" for i, name in enumerate(nodes)}
        last = float(cast(float, requests["arrival_s"].max() or 0.0))
        horizon = fault_horizon if fault_horizon is not None else max(last, 1.0)
        fault_table = sim.draw_faults(
            fault_model, nodes, domains, horizon, sim.stream(seed, "inference.faults")
        )
    elif fault_horizon is not None or on_crash != "retry" or racks != 1:
        raise ConfigError("--on-crash, --fault-horizon and --racks apply to --faults only")
    cfg = {
        "spec": spec.model_dump(mode="json"),
        "trace": source,
        "qps": qps,
        "arrival": arrival,
        "seed": seed,
        "limit": limit,
        "workload": str(workload) if workload is not None else None,
        "duration": duration,
        "scale": scale,
        "faults": str(faults) if faults is not None else None,
        "on_crash": on_crash,
        "fault_horizon_s": horizon,
        "racks": racks,
    }
    inputs = [p for p in (trace, workload, faults) if p is not None]
    with recorded_run("inference simulate", cfg, inputs) as run:
        t0 = time.perf_counter()
        with err.status(f"simulating {requests.height:,} requests…"):
            result = inference.simulate(
                requests,
                spec,
                seed=seed,
                source=source,
                faults=fault_table,
                on_crash=cast(Literal["retry", "drop"], on_crash),
            )
        wall = time.perf_counter() - t0
        metrics = {
            **result.metrics,
            "wall_s": wall,
            "simulated_requests_per_wall_s": requests.height / max(wall, 1e-9),
        }
        run.log_metrics(metrics)
        run.write_text("metrics.json", json.dumps(metrics, indent=1, default=float))
        run.write_parquet("requests.parquet", result.requests)
        run.write_parquet("replicas.parquet", result.replicas)
        run.write_parquet("timeseries.parquet", result.timeseries)
        if fault_table is not None:
            run.write_parquet("faults.parquet", fault_table)
        html = inference.simulation_report(
            result,
            subtitle=f"{source}; {spec.replica.model} on {spec.replica.gpu}",
            config={
                "trace": source,
                "replica": spec.replica.model_dump(mode="json"),
                "replicas": spec.replicas,
                "router": spec.router,
                "disaggregate": f"{spec.prefill_replicas}:{spec.decode_replicas}",
                "mixed_pool": spec.mixed_pool,
                **({"faults": str(faults), "on_crash": on_crash} if faults else {}),
            },
            faults=fault_table,
        )
        run.write_text("report.html", html.to_html())
        if report is not None:
            html.write(report)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            if output.suffix == ".json":
                output.write_text(result.requests.write_json())
            else:
                result.requests.write_parquet(output)
    if json_out:
        print_json({"metrics": metrics, "replicas": result.replicas.to_dicts()})
        return
    keys: tuple[str, ...] = (
        "requests",
        "ttft_p50_s",
        "ttft_p99_s",
        "tpot_p50_s",
        "tpot_p99_s",
        "tbt_max_p99_s",
        "e2e_p50_s",
        "e2e_p99_s",
        "queueing_p99_s",
        "throughput_rps",
        "output_tokens_per_s",
        "goodput_rps",
        "slo_attainment",
        "preemptions",
        "mean_utilization",
        "mean_batch_seqs",
        "energy_j",
        "energy_per_output_token_j",
        "cost_usd",
        "usd_per_million_output_tokens",
        "wall_s",
    )
    if fault_table is not None:
        keys += ("availability", "failed_requests", "retried_requests", "reprefill_tokens")
    out.print(kv_table({k: metrics[k] for k in keys}, title="Simulation"))
    out.print(rich_table(result.replicas.head(32).to_dicts(), title="Replicas"))
    _ = pl


def _synthesize(path: Path, *, duration: str | None, scale: float, seed: int) -> pl.DataFrame:
    """A requests table drawn from a fitted workload model (``fleetlab.workload``).

    The CLI is the layer that may use both areas: ``inference`` never imports
    ``workload``, it only receives the canonical requests table.
    """
    from fleetlab import workload as wl

    model = wl.load_model(path)
    if model.table != "requests":
        raise ConfigError(
            f"{path}: field 'table': expected a model of the requests table "
            f"(fit it on an LLM requests trace), found {model.table!r}"
        )
    seconds = wl.parse_duration(duration) if duration is not None else None
    if not (scale > 0):
        raise ConfigError(f"--scale must be > 0 (found {scale})")
    with err.status("synthesizing requests from the workload model…"):
        table = model.sample(duration_s=seconds, scale=scale, seed=seed)
    if table.height == 0:
        raise ConfigError(
            f"{path}: the model drew no requests in {seconds or model.source.duration_s:g} s "
            f"at scale {scale:g} (expected at least one; raise --duration or --scale)"
        )
    return table


@app.command("calibrate")
def calibrate_cmd(
    profiles: list[Path] = typer.Argument(..., help="vidur-format mlp.csv profiles."),
    gpu: str = typer.Option("h100", "--gpu", "-g", help="GPU the profiles were measured on."),
    network: Path | None = typer.Option(None, "--network", help="vidur all_reduce.csv."),
    attention: Path | None = typer.Option(None, "--attention", help="vidur attention.csv."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="GPU spec YAML to write (the GPU with these efficiencies; pass it as --gpu).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Fit the roofline efficiencies to operator profiles (vidur's CSV format).

    The output is a whole GPU spec, so `inference simulate --gpu OUTPUT` runs with it.
    """
    import yaml

    from fleetlab import inference

    _refuse_overwrite(output, force)
    g = inference.gpu_spec(gpu)
    with recorded_run(
        "inference calibrate",
        {
            "gpu": gpu,
            "profiles": [str(p) for p in profiles],
            "network": str(network),
            "attention": str(attention),
        },
        [*profiles],
    ) as run:
        with err.status("fitting…"):
            eff, stats = inference.calibrate(g, profiles, network=network, attention=attention)
        run.log_metrics(stats)
        if output is not None:
            spec = g.model_copy(update={"efficiency": eff})
            output.write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
            run.add_artifact(output.name, output)
    if json_out:
        print_json({"efficiency": eff.model_dump(), "fit": stats})
        return
    out.print(kv_table(eff.model_dump(), title=f"Calibrated efficiency ({g.name})"))
    out.print(kv_table(stats, title="Fit"))


@app.command("validate")
def validate_cmd(
    splitwise: Path | None = typer.Option(
        None,
        "--splitwise",
        help="Splitwise perf_model.csv (default: $FLEETLAB_MIRROR/splitwise-perf-model/).",
    ),
    silicon: bool = typer.Option(
        False, "--silicon", help="Also predict aiconfigurator's silicon_sample.csv (minutes)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Rows with predictions."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Predict measured latencies (Splitwise held out by GPU; optionally aiconfigurator)."""
    import os

    from fleetlab import inference

    if splitwise is None:
        mirror = Path(os.environ.get("FLEETLAB_MIRROR", "../shared/data"))
        splitwise = mirror / "splitwise-perf-model" / "perf_model.csv"
    _refuse_overwrite(output, force)
    with recorded_run("inference validate", {"splitwise": str(splitwise)}, [splitwise]) as run:
        rows, summary = inference.validate_splitwise(splitwise)
        run.write_parquet("splitwise_summary.parquet", summary)
        run.log_metrics(
            {
                f"{r['hardware']}_{k}": r[k]
                for r in summary.filter(summary["model"] == "all").to_dicts()
                for k in ("prompt_time_mape", "token_time_mape", "e2e_time_mape")
            }
        )
        if output is not None:
            rows.write_parquet(output)
        silicon_summary = None
        if silicon:
            from fleetlab.inference._validate import validate_silicon

            with err.status("simulating aiconfigurator's measured deployments…"):
                _, silicon_summary = validate_silicon()
            run.write_parquet("silicon_summary.parquet", silicon_summary)
    if json_out:
        print_json(
            {
                "splitwise": summary.to_dicts(),
                "silicon": silicon_summary.to_dicts() if silicon_summary is not None else None,
            }
        )
    else:
        out.print(rich_table(summary.to_dicts(), title="Splitwise: MAPE (%) by table"))
        if silicon_summary is not None:
            out.print(
                rich_table(
                    silicon_summary.to_dicts(), title="aiconfigurator silicon_sample: MAPE (%)"
                )
            )


@app.command("profile-network")
def profile_network_cmd(
    collective: str = typer.Option(
        "all_reduce", "--collective", help="all_reduce (TP) or send_recv (PP, 2 GPUs)."
    ),
    workers: list[int] = typer.Option(
        [2, 4, 8], "--workers", help="GPU counts to time (repeatable; at most the visible GPUs)."
    ),
    device: str = typer.Option("cuda", "--device", help="cuda (NCCL) or cpu (gloo)."),
    repeats: int = typer.Option(10, "--repeats", help="Timed calls per size."),
    output: Path = typer.Option(
        Path("all_reduce.csv"), "--output", "-o", help="vidur-format CSV to write."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Time collectives between this machine's GPUs and write vidur's network CSV."""
    from fleetlab.inference._collectives import profile_collectives

    if collective not in ("all_reduce", "send_recv"):
        raise ConfigError(f"--collective: expected all_reduce or send_recv, found {collective!r}")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device: expected cuda or cpu, found {device!r}")
    _refuse_overwrite(output, force)
    with recorded_run(
        "inference profile-network",
        {"collective": collective, "workers": workers, "device": device, "repeats": repeats},
    ) as run:
        with err.status(f"timing {collective} on {', '.join(map(str, workers))} workers…"):
            table = profile_collectives(
                collective=collective,  # type: ignore[arg-type]
                world_sizes=workers,
                repeats=repeats,
                device=device,  # type: ignore[arg-type]
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        table.write_csv(output)
        run.add_artifact(output.name, output)
        run.log_metrics({"rows": table.height})
    summary = {"output": str(output), "rows": table.height, "collective": collective}
    if json_out:
        print_json(summary)
    else:
        out.print(kv_table(summary, title="Network profile"))


@app.command("profile")
def profile_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model whose operators are timed."),
    tp: list[int] = typer.Option([1], "--tp", help="Tensor-parallel degrees (repeatable)."),
    tokens: list[int] = typer.Option(
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
        "--tokens",
        help="Token counts (repeatable).",
    ),
    device: str = typer.Option("cuda", "--device", help="cuda (PyTorch) or cpu (numpy)."),
    repeats: int = typer.Option(10, "--repeats", help="Timed calls per operator."),
    sustain: float = typer.Option(
        0.5,
        "--sustain",
        min=0.0,
        help="Seconds to run each operator of 0.1 ms or more before timing it, so that "
        "compute-bound ones are timed at the clock a loaded GPU runs at (GPU only; 0 "
        "times bursts, as vidur's profiles).",
    ),
    output: Path = typer.Option(
        Path("mlp.csv"), "--output", "-o", help="vidur-format CSV to write."
    ),
    attention: bool = typer.Option(
        True, "--attention/--no-attention", help="Also time attention (attention.csv)."
    ),
    attention_output: Path | None = typer.Option(
        None,
        "--attention-output",
        help="vidur-format attention CSV (default: attention.csv beside OUTPUT).",
    ),
    max_context: int = typer.Option(
        16384, "--max-context", help="Longest sequence in the attention grid (tokens)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Time a model's operators on this machine and write vidur's mlp.csv and attention.csv."""
    from fleetlab import inference

    att_path = (attention_output or output.with_name("attention.csv")) if attention else None
    _refuse_overwrite(output, force)
    _refuse_overwrite(att_path, force)
    timer: inference.NumpyTimer | inference.TorchTimer = (
        inference.NumpyTimer() if device == "cpu" else inference.TorchTimer(device, sustain)
    )
    with recorded_run(
        "inference profile",
        {
            "model": model,
            "tp": tp,
            "tokens": tokens,
            "device": device,
            "repeats": repeats,
            "sustain_s": sustain,
        },
    ) as run:
        with progress() as bar:

            def show(name: str) -> Callable[[int, int], None]:
                task = bar.add_task(name, total=None)
                return lambda done, total: bar.update(task, completed=done, total=total)

            table = inference.profile_operators(
                model,
                timer=timer,
                tp_degrees=tp,
                token_counts=tokens,
                repeats=repeats,
                progress=show("operators"),
            )
            att = None
            if att_path is not None:
                att = inference.profile_attention(
                    model,
                    timer=timer,
                    tp_degrees=tp,
                    max_model_len=max_context,
                    repeats=repeats,
                    progress=show("attention"),
                )
        output.parent.mkdir(parents=True, exist_ok=True)
        table.write_csv(output)
        run.add_artifact("mlp.csv", output)
        summary: dict[str, object] = {"output": str(output), "rows": table.height}
        if att_path is not None and att is not None:
            att_path.parent.mkdir(parents=True, exist_ok=True)
            att.write_csv(att_path)
            run.add_artifact("attention.csv", att_path)
            summary |= {
                "attention_output": str(att_path),
                "attention_rows": att.height,
                "attention_backends": ", ".join(sorted(set(att["attention_backend"]))),
            }
        summary["device"] = device
        run.log_metrics({"rows": table.height})
    if json_out:
        print_json(summary)
    else:
        out.print(kv_table(summary, title="Profile"))
