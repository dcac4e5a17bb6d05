"""``fleetlab placement``: see docs/placement.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from fleetlab.errors import FleetlabError

app = typer.Typer(
    help="Workload-aware placement: simulate policies, size clusters, serve.", no_args_is_help=True
)

_POLICY_HELP = (
    "Policy name (repeat to compare): first-fit, best-fit, best-fit-l2, worst-fit, "
    "dot-product, tetris, most-allocated, least-allocated, rtcr, random, gpu-packing, gpu-clustering, "
    "protean, fgd, lifetime, oversub."
)


def _missing(value: str) -> Any:
    if value not in ("error", "start", "drop"):
        raise FleetlabError(f"--missing-created: expected error, start or drop, found {value!r}")
    return value


def _check_out(path: Path | None, force: bool) -> None:
    if path is not None and path.exists() and not force:
        raise FleetlabError(f"{path}: already exists; pass --force to replace it")
    if path is not None and path.suffix not in (".json", ".parquet"):
        raise FleetlabError(f"{path}: expected a .json or .parquet output file")


def _write(path: Path | None, table: Any, result: dict[str, Any], run: Any) -> None:
    if path is None:
        return
    import json

    from fleetlab.cli._common import to_jsonable

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table.write_parquet(path)
    else:
        path.write_text(json.dumps(to_jsonable(result), indent=2), encoding="utf-8")
    run.add_artifact(path.name, path)


def _report(path: Path | None, report: Any, force: bool, run: Any) -> None:
    if path is None:
        return
    if path.exists() and not force:
        raise FleetlabError(f"{path}: already exists; pass --force to replace it")
    report.write(path)
    run.add_artifact(path.name, path)
    err.print(f"report: {path}")


@app.command("simulate")
def simulate_cmd(
    trace: Path = typer.Option(..., "--trace", help="VM/pod trace (canonical vms or openb pods)."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster YAML spec or node-list CSV."),
    policy: list[str] = typer.Option(["best-fit"], "--policy", "-p", help=_POLICY_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for drawing policies and failures."),
    failures: Path | None = typer.Option(
        None, "--failures", help="FailureSpec YAML (node/rack crashes)."
    ),
    usage: Path | None = typer.Option(
        None, "--usage", help="Usage table to count oversubscription violations."
    ),
    oversub_ratio: float = typer.Option(
        1.5, "--oversub-ratio", help="Ratio for the oversub policy."
    ),
    max_per_rack: int | None = typer.Option(
        None, "--max-per-rack", help="Spread a tenant: at most N VMs per rack."
    ),
    migrate: bool = typer.Option(
        False,
        "--migrate",
        help="Move one resident VM to make room for a request that fits nowhere "
        "(any named policy; runs the Python engine).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N requests."),
    samples: int = typer.Option(200, "--samples", help="Points in the timeline per policy."),
    missing_created: str = typer.Option(
        "error",
        "--missing-created",
        help="Rows without a creation time: error, start (created at trace start) or drop.",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the summary (.parquet) or result (.json)."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report here."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    json_out: bool = JsonOption,
) -> None:
    """Replay a trace on a cluster under one or more policies and compare them."""
    from fleetlab import placement as pl_

    _check_out(output, force)
    cl = pl_.load_cluster(cluster)
    vms = pl_.load_vms(trace)
    if limit is not None:
        vms = vms.head(limit)
    config = {
        "trace": str(trace),
        "cluster": str(cluster),
        "policies": policy,
        "seed": seed,
        "failures": str(failures) if failures else None,
        "oversub_ratio": oversub_ratio,
        "max_per_rack": max_per_rack,
        "migrate": migrate,
        "limit": limit,
    }
    with recorded_run("placement simulate", config, [trace, cluster]) as run:
        reqs = pl_.requests_from_vms(
            vms, cl, source=str(trace), missing_created=_missing(missing_created)
        )
        outage = None
        head: dict[str, Any] = {}
        if failures is not None:
            spec = pl_.load_failure_spec(str(failures))
            outage = pl_.outages(cl, spec, horizon_s=reqs.horizon_s, seed=seed)
            head = pl_.headroom(cl, outage)
        with progress() as bar:
            task = bar.add_task("simulating", total=None)
            summary, timeline, metrics = pl_.compare(
                cl,
                reqs,
                policy,
                seed=seed,
                samples=samples,
                outages=outage,
                oversub_ratio=oversub_ratio,
                max_per_rack=max_per_rack,
                migrate=migrate,
                progress=lambda n: bar.update(task, completed=n),
            )
        if head:
            metrics["headroom"] = head
        if usage is not None:
            from fleetlab import traces

            use = traces.load(usage)
            metrics["oversub_violations"] = {}
            for name in policy:
                types = pl_.task_types(reqs, cl.dims) if "gpus" in cl.dims else None
                pol = pl_.make_policy(
                    name,
                    seed=seed,
                    oversub_ratio=oversub_ratio,
                    types=types,
                    max_per_rack=max_per_rack,
                    migrate=migrate,
                )
                res = pl_.simulate(cl, reqs, pol, samples=2, outages=outage, types=types)
                metrics["oversub_violations"][name] = pl_.oversub_violations(
                    res.placements, vms, use, cl
                )
        run.log_metrics(
            {
                f"{p}.{k}": v
                for p, m in metrics["policies"].items()
                for k, v in m.items()
                if isinstance(v, (int, float))
            }
        )
        _write(output, summary, {"summary": summary.to_dicts(), **metrics}, run)
        _report(
            report,
            pl_.simulation_report(
                summary,
                timeline,
                bound=metrics.get("bounds"),
                note=f"Trace {trace.name} ({vms.height} requests) on {cluster.name} "
                f"({cl.size} servers).",
            ),
            force,
            run,
        )
    if json_out:
        print_json({"summary": summary.to_dicts(), **metrics})
        return
    names = {
        "policy": "policy",
        "engine": "engine",
        "failures": "failed",
        "failure_rate": "fail share",
        "peak_used_servers": "peak servers",
        "lower_bound_servers": "bound",
        "gap_to_bound": "gap",
        "lost": "lost",
        "mean_alloc_cores": "cores alloc",
        "mean_alloc_gpus": "GPUs alloc",
        "mean_gpu_frag": "GPU frag",
        "migrations": "migrations",
    }
    rows = [{names[k]: r[k] for k in names if k in r} for r in summary.to_dicts()]
    out.print(
        rich_table(
            rows,
            title="placement policies",
        )
    )
    if head:
        out.print(kv_table(head, title="failure headroom"))
    if "oversub_violations" in metrics:
        out.print(
            rich_table(
                [{"policy": k, **v} for k, v in metrics["oversub_violations"].items()],
                title="oversubscription violations",
            )
        )


@app.command("fragmentation")
def fragmentation_cmd(
    trace: Path = typer.Option(..., "--trace", help="GPU task trace (e.g. openb pods)."),
    cluster: Path = typer.Option(..., "--cluster", help="GPU node list or cluster YAML."),
    policy: list[str] = typer.Option(
        ["random", "dot-product", "gpu-packing", "gpu-clustering", "best-fit", "fgd"],
        "--policy",
        "-p",
        help=_POLICY_HELP,
    ),
    seeds: int = typer.Option(3, "--seeds", help="Number of arrival sequences (seeds 0..N-1)."),
    step: float = typer.Option(0.02, "--step", help="Record every this share of arrived load."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Curves (.parquet) or result (.json)."
    ),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report here."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    json_out: bool = JsonOption,
) -> None:
    """The FGD paper's protocol: fill a GPU cluster, measure unallocated GPUs."""
    from fleetlab import placement as pl_

    _check_out(output, force)
    cl = pl_.load_cluster(cluster)
    vms = pl_.load_vms(trace)
    config = {
        "trace": str(trace),
        "cluster": str(cluster),
        "policies": policy,
        "seeds": seeds,
        "step": step,
    }
    with recorded_run("placement fragmentation", config, [trace, cluster]) as run:
        with progress() as bar:
            task = bar.add_task("policy x seed", total=len(policy) * seeds)
            curves, summary, metrics = pl_.fragmentation_experiment(
                cl,
                vms,
                policy,
                seeds=range(seeds),
                step=step,
                progress=lambda n: bar.update(task, completed=n),
            )
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        _write(output, curves, {"summary": summary.to_dicts(), **metrics}, run)
        _report(
            report,
            pl_.fragmentation_report(
                curves,
                summary,
                metrics,
                note=f"{trace.name} on {cluster.name}: {cl.size} nodes, "
                f"{int(cl.gpus.sum())} GPUs, {seeds} seeds.",
            ),
            force,
            run,
        )
    if json_out:
        print_json({"summary": summary.to_dicts(), **metrics})
        return
    out.print(rich_table(summary.to_dicts(), title="unallocated GPUs at full arrived load"))
    out.print(kv_table({k: v for k, v in metrics.items() if k.startswith("fgd_") or k == "winner"}))


@app.command("size")
def size_cmd(
    trace: Path = typer.Option(..., "--trace", help="VM/pod trace."),
    cores: float = typer.Option(..., "--cores", help="Cores per server."),
    memory_gb: float = typer.Option(..., "--memory-gb", help="Memory per server (GiB)."),
    gpus: int = typer.Option(0, "--gpus", help="GPUs per server."),
    ssd_gb: float = typer.Option(0.0, "--ssd-gb", help="SSD per server (GB)."),
    nic_gbps: float = typer.Option(0.0, "--nic-gbps", help="NIC per server (Gbit/s)."),
    policy: str = typer.Option("best-fit", "--policy", "-p", help=_POLICY_HELP),
    max_failure_rate: float = typer.Option(
        0.0, "--max-failure-rate", help="Allowed failure share."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N requests."),
    failures: Path | None = typer.Option(
        None, "--failures", help="FailureSpec YAML: size with the headroom failures need."
    ),
    seed: int = typer.Option(0, "--seed"),
    migrate: bool = typer.Option(
        False,
        "--migrate",
        help="Move one resident VM to make room for a request that fits nowhere "
        "(runs the Python engine).",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Probes (.parquet) or result (.json)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    json_out: bool = JsonOption,
) -> None:
    """How many servers of one type does the trace need under a policy?"""
    from fleetlab import placement as pl_

    _check_out(output, force)
    capacity = {
        k: v
        for k, v in {
            "cores": cores,
            "memory_gb": memory_gb,
            "ssd_gb": ssd_gb,
            "nic_gbps": nic_gbps,
        }.items()
        if v > 0
    }
    server = pl_.ServerType(name="server", count=0, capacity=capacity, gpus=gpus)
    vms = pl_.load_vms(trace)
    if limit is not None:
        vms = vms.head(limit)
    config = {
        "trace": str(trace),
        "server": server.model_dump(),
        "policy": policy,
        "max_failure_rate": max_failure_rate,
        "failures": str(failures) if failures else None,
        "migrate": migrate,
        "limit": limit,
    }
    with recorded_run("placement size", config, [trace]) as run:
        with progress() as bar:
            task = bar.add_task("probing", total=None)
            probes, result = pl_.size_cluster(
                vms,
                server,
                policy,
                max_failure_rate=max_failure_rate,
                seed=seed,
                failures=pl_.load_failure_spec(str(failures)) if failures else None,
                migrate=migrate,
                progress=lambda n: bar.update(task, completed=n),
            )
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        _write(output, probes, {**result, "probes": probes.to_dicts()}, run)
    if json_out:
        print_json({**result, "probes": probes.to_dicts()})
        return
    out.print(kv_table(result, title="servers needed"))
    out.print(rich_table(probes.to_dicts(), title="probes"))


@app.command("bounds")
def bounds_cmd(
    trace: Path = typer.Option(..., "--trace", help="VM/pod trace."),
    cluster: Path = typer.Option(..., "--cluster", help="Cluster YAML spec or node list."),
    json_out: bool = JsonOption,
) -> None:
    """Fluid and LP lower bounds on the servers the trace needs."""
    from fleetlab import placement as pl_

    cl = pl_.load_cluster(cluster)
    reqs = pl_.requests_from_vms(pl_.load_vms(trace), cl, source=str(trace))
    with recorded_run(
        "placement bounds", {"trace": str(trace), "cluster": str(cluster)}, [trace, cluster]
    ) as run:
        res = pl_.bounds(reqs, cl)
        run.log_metrics(
            {
                "servers": res["servers"],
                "fluid": res["fluid"]["servers"],
                "lp": res["lp"].get("servers") or 0,
            }
        )
    if json_out:
        print_json(res)
        return
    out.print(
        kv_table(
            {
                "lower bound (servers)": res["servers"],
                "fluid bound": res["fluid"]["servers"],
                "fluid binding dimension": cl.dims[res["fluid"]["dimension"]]
                if res["fluid"]["dimension"] is not None
                else None,
                "LP bound": res["lp"].get("servers"),
                "LP snapshot (s)": res["lp"].get("t_s"),
                "VMs active at snapshot": res["lp"].get("active"),
            }
        )
    )


@app.command("serve")
def serve_cmd(
    cluster: Path = typer.Option(..., "--cluster", help="Cluster YAML spec or node list."),
    policy: str = typer.Option("best-fit", "--policy", "-p", help=_POLICY_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8089, "--port", help="Port to bind (0: any free port)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Serve an HTTP allocator (POST /allocate, POST /release, GET /state)."""
    from fleetlab import placement as pl_

    cl = pl_.load_cluster(cluster)
    if policy == "fgd":
        raise FleetlabError("policy 'fgd' needs a target workload; use it in simulate")
    alloc = pl_.Allocator(cl, pl_.make_policy(policy, seed=seed))
    pl_.serve(
        alloc,
        host=host,
        port=port,
        ready=lambda addr: err.print(
            f"allocator on http://{addr[0]}:{addr[1]} ({cl.size} servers, policy {policy})"
        ),
    )
