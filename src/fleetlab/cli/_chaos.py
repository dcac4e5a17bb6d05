"""``fleetlab chaos``: fault-injecting proxy, experiments, graph-guided search (docs/chaos.md)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

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

# the area is imported inside the commands, so that `fleetlab --help` starts fast;
# the toxic types (fleetlab.chaos.TOXIC_TYPES) for the help text: a test checks that they match
TOXIC_NAMES = (
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "down",
    "http_abort",
    "http_delay",
    "http_corrupt",
    "http_reset",
)

app = typer.Typer(
    help="Inject faults: proxy, experiments, graph-guided search, demo.", no_args_is_help=True
)

ApiOption = typer.Option("http://127.0.0.1:8474", "--api", help="Proxy control API URL.")
TokenOption = typer.Option(
    None,
    "--token",
    envvar="FLEETLAB_CHAOS_TOKEN",
    help="Control API token (required when the API is not on loopback).",
)
ForceOption = typer.Option(False, "--force", help="Replace output files that exist.")


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Control API address."),
    port: int = typer.Option(8474, "--port", help="Control API port (Toxiproxy's: 8474; 0: any)."),
    token: str | None = TokenOption,
    allow: list[str] = typer.Option(
        ["127.0.0.0/8", "::1/128"], "--allow", help="Networks proxies may listen on / relay to."
    ),
    port_file: Path | None = typer.Option(
        None, "--port-file", help="Write the API URL here once listening."
    ),
) -> None:
    """Run the proxy server (Toxiproxy-compatible API) until Ctrl-C or SIGTERM."""
    from fleetlab import chaos
    from fleetlab.chaos._output import write_json

    def ready(url: str) -> None:
        err.print(f"fleetlab proxy API on {url} (Toxiproxy-compatible); Ctrl-C stops it")
        if port_file is not None:
            write_json({"api": url, "pid": os.getpid()}, port_file, overwrite=True)

    chaos.serve_proxy(host=host, port=port, token=token, allow=tuple(allow), on_ready=ready)


@app.command("stop-all")
def stop_all_cmd(
    api: str = ApiOption, token: str | None = TokenOption, json_out: bool = JsonOption
) -> None:
    """The kill switch: remove every active fault on the proxy at once."""
    from fleetlab import chaos

    with chaos.ProxyClient(api, token=token) as client:
        removed = client.stop_all()
    result = {"api": api, "removed_toxics": removed}
    if json_out:
        print_json(result)
    else:
        out.print(kv_table(result, title="All faults removed"))


@app.command("list")
def list_cmd(
    api: str = ApiOption, token: str | None = TokenOption, json_out: bool = JsonOption
) -> None:
    """List proxies and their active toxics."""
    from fleetlab import chaos

    with chaos.ProxyClient(api, token=token) as client:
        proxies = client.proxies()
    if json_out:
        print_json(proxies)
        return
    rows = [
        {
            "proxy": n,
            "listen": p["listen"],
            "upstream": p["upstream"],
            "enabled": p["enabled"],
            "toxics": ", ".join(t["name"] for t in p["toxics"]),
        }
        for n, p in proxies.items()
    ]
    out.print(rich_table(rows, title="Proxies"))


@app.command("add-proxy")
def add_proxy_cmd(
    name: str = typer.Argument(...),
    upstream: str = typer.Option(..., "--upstream", help="host:port to relay to (loopback)."),
    listen: str = typer.Option("127.0.0.1:0", "--listen"),
    protocol: str = typer.Option("tcp", "--protocol", help="tcp or http (HTTP-aware faults)."),
    api: str = ApiOption,
    token: str | None = TokenOption,
    json_out: bool = JsonOption,
) -> None:
    """Create a proxy in front of a loopback service."""
    from fleetlab import chaos

    with chaos.ProxyClient(api, token=token) as client:
        doc = client.create_proxy(
            name, upstream=upstream, listen=listen, protocol="http" if protocol == "http" else "tcp"
        )
    print_json(doc) if json_out else out.print(
        kv_table({k: v for k, v in doc.items() if k != "toxics"}, title="Proxy")
    )


@app.command("add-toxic")
def add_toxic_cmd(
    proxy: str = typer.Argument(...),
    type: str = typer.Argument(..., help=f"One of: {', '.join(TOXIC_NAMES)}."),
    attr: list[str] = typer.Option([], "--attr", "-a", help="Attribute key=value (repeat)."),
    name: str | None = typer.Option(None, "--name"),
    stream: str = typer.Option("downstream", "--stream", help="upstream or downstream."),
    toxicity: float = typer.Option(1.0, "--toxicity", help="Probability of applying (0..1)."),
    api: str = ApiOption,
    token: str | None = TokenOption,
    json_out: bool = JsonOption,
) -> None:
    """Add a toxic (e.g. ``add-toxic db latency -a latency=200 -a jitter=20``)."""
    from fleetlab import chaos

    attributes = chaos.parse_attributes(attr)
    with chaos.ProxyClient(api, token=token) as client:
        doc = client.add_toxic(
            proxy,
            type,
            name=name,
            toxicity=toxicity,
            attributes=attributes,
            stream="upstream" if stream == "upstream" else "downstream",
        )
    print_json(doc) if json_out else out.print(kv_table(doc, title="Toxic added"))


@app.command("remove-toxic")
def remove_toxic_cmd(
    proxy: str = typer.Argument(...),
    name: str = typer.Argument(...),
    api: str = ApiOption,
    token: str | None = TokenOption,
) -> None:
    """Remove one toxic."""
    from fleetlab import chaos

    with chaos.ProxyClient(api, token=token) as client:
        client.remove_toxic(proxy, name)
    err.print(f"removed {name} from {proxy}")


@app.command("validate")
def validate_cmd(
    experiment: Path = typer.Argument(
        ..., help="Experiment YAML/JSON (fleetlab or Chaos Toolkit)."
    ),
    json_out: bool = JsonOption,
) -> None:
    """Validate an experiment file without injecting anything."""
    from fleetlab import chaos

    exp = chaos.load_experiment(experiment)
    info = {
        "title": exp.title,
        "faults": len(exp.method),
        "proxies": len(exp.proxies),
        "method_s": exp.method_s,
        "load_rate_per_s": exp.load.rate_per_s if exp.load else 0,
        "valid": True,
    }
    print_json(info) if json_out else out.print(kv_table(info, title=str(experiment)))


@app.command("run")
def run_cmd(
    experiment: Path = typer.Argument(
        ..., help="Experiment YAML/JSON (fleetlab or Chaos Toolkit)."
    ),
    api: str | None = typer.Option(
        None, "--api", help="Proxy API (overrides the file; none: an embedded proxy)."
    ),
    token: str | None = TokenOption,
    output: Path | None = typer.Option(None, "--output", "-o", help="Journal JSON to write."),
    report: Path | None = typer.Option(None, "--report", help="HTML report to write."),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Run an experiment: steady state, faults under load, guaranteed rollback, journal."""
    from fleetlab import chaos
    from fleetlab.chaos._output import write_json

    exp = chaos.load_experiment(experiment)
    for p in (output, report):
        if p is not None and p.exists() and not force:
            raise typer.BadParameter(f"{p} exists; pass --force to replace it")
    with recorded_run(
        "chaos run", {"experiment": str(experiment), "api": api}, [experiment]
    ) as run:
        result = chaos.run_experiment(
            exp,
            api=api,
            token=token,
            on_event=lambda kind, data: err.print(f"[dim]{kind}[/] {data}", highlight=False),
        )
        run.log_metrics(
            {
                k: v
                for k, v in result.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
        path = run.write_json("journal.json", result.journal)
        if output is not None:
            path = write_json(result.journal, output, overwrite=force)
        html = chaos.experiment_report(result)
        run.write_text("report.html", html.to_html())
        if report is not None:
            html.write(report)
    if json_out:
        print_json(result.journal)
    else:
        out.print(kv_table(result.metrics, title=f"{exp.title}: {result.journal['status']}"))
        out.print(
            rich_table(
                result.journal["rollbacks"] or [{"what": "nothing", "ok": True}], title="Rollbacks"
            )
        )
        err.print(f"journal: {path}")
    if result.journal["status"] not in ("completed",):
        raise typer.Exit(1)


@app.command("explore")
def explore_cmd(
    graph: Path = typer.Option(..., "--graph", help="Dependency graph (fleetlab depgraph JSON)."),
    entry: str = typer.Option(
        ..., "--entry", help="Entry URL to load, e.g. http://127.0.0.1:8080/checkout."
    ),
    api: str = ApiOption,
    token: str | None = TokenOption,
    mapping: list[str] = typer.Option([], "--map", help="service=proxy (default: same name)."),
    kinds: str = typer.Option("down,slow,error", "--kinds", help="Single fault kinds."),
    pairs: str = typer.Option("down", "--pairs", help="Kinds combined in pairs ('' = none)."),
    rate: float = typer.Option(40.0, "--rate", help="Load on the entry, requests/s."),
    window: float = typer.Option(0.5, "--window", help="Seconds each fault set is injected."),
    steady_window: float = typer.Option(
        0.1, "--steady-window", help="Steady-state window before/after each fault, seconds."
    ),
    p99_ms: float = typer.Option(300.0, "--p99-ms", help="SLO: p99 latency, ms."),
    error_rate: float = typer.Option(0.05, "--error-rate", help="SLO: max error rate."),
    max_runs: int = typer.Option(200, "--max-runs"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Matrix as .parquet or .json."),
    journal: Path | None = typer.Option(
        None, "--journal", help="Exploration journal (every experiment's journal), JSON."
    ),
    report: Path | None = typer.Option(None, "--report", help="HTML report to write."),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Run each dependency fault as an experiment, in blast-radius order; print the matrix."""
    from fleetlab import chaos
    from fleetlab.chaos._output import write_json, write_table
    from fleetlab.depgraph import read_graph

    for p in (output, journal, report):
        if p is not None and p.exists() and not force:
            raise typer.BadParameter(f"{p} exists; pass --force to replace it")
    g = read_graph(graph)
    spec = chaos.ExploreSpec.model_validate(
        {
            "kinds": [k for k in kinds.split(",") if k],
            "pair_kinds": [k for k in pairs.split(",") if k],
            "rate_per_s": rate,
            "window_s": window,
            "steady_window_s": steady_window,
            "max_runs": max_runs,
            "slo": {"p99_ms": p99_ms, "error_rate": error_rate},
        }
    )
    proxies = chaos.parse_attributes(mapping)
    config = {"graph": str(graph), "entry": entry, "api": api, **spec.model_dump()}
    with recorded_run("chaos explore", config, [graph]) as run, progress() as bar:
        task = bar.add_task("exploring", total=None)
        result = chaos.explore(
            g,
            entry_url=entry,
            api=api,
            token=token,
            proxies={k: str(v) for k, v in proxies.items()},
            spec=spec,
            on_run=lambda i, n, label: bar.update(task, completed=i, description=label),
        )
        run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        run.write_parquet("matrix.parquet", result.matrix)
        run.write_json("journal.json", result.journal)
        if output is not None:
            write_table(result.matrix, output, overwrite=force)
        if journal is not None:
            write_json(result.journal, journal, overwrite=force)
        html = chaos.explore_report(result)
        run.write_text("report.html", html.to_html())
        if report is not None:
            html.write(report)
    doc = {
        "metrics": result.metrics,
        "findings": result.findings,
        "minimal_failing": result.minimal_failing,
        "matrix": result.matrix.to_dicts(),
    }
    if json_out:
        print_json(doc)
        return
    shown = result.matrix.drop("called", "size", "requests", "amplified", strict=False)
    out.print(rich_table(shown.to_dicts(), title="Resilience matrix"))
    out.print(rich_table(result.findings or [{"finding": "none"}], title="Findings"))
    out.print(kv_table(result.metrics, title="Search"))


@app.command("demo")
def demo_cmd(
    graph_out: Path | None = typer.Option(
        None, "--graph-out", help="Write the demo's graph JSON here."
    ),
    force: bool = ForceOption,
) -> None:
    """Start the bundled demo system (gateway + backends behind proxies) until Ctrl-C."""
    from fleetlab import chaos
    from fleetlab.chaos._output import write_json

    with chaos.demo_system() as demo:
        if graph_out is not None:
            write_json(demo.graph.to_json(), graph_out, overwrite=force)
        out.print(
            kv_table(
                {
                    "entry": demo.entry_url,
                    "proxy api": demo.api_url,
                    **{f"flaw: {s}": f"{f} (try {k})" for s, k, f in demo.flaws},
                },
                title="fleetlab chaos demo",
            )
        )
        err.print("Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


@app.command("simulate")
def simulate_cmd(
    config: Path = typer.Argument(..., help="Fault model YAML (fleetlab.sim.FaultModel)."),
    nodes: int = typer.Option(100, "--nodes", help="Nodes in the fleet."),
    racks: int = typer.Option(10, "--racks", help="Failure domains (nodes spread evenly)."),
    days: float = typer.Option(30.0, "--days", help="Simulated horizon, days."),
    target: float = typer.Option(0.999, "--target", help="Per-node availability SLO."),
    seed: int = typer.Option(0, "--seed"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Fault windows (.parquet)."),
    report: Path | None = typer.Option(None, "--report", help="HTML report to write."),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Draw a fault model over a simulated fleet: availability and SLO attainment."""
    from fleetlab import chaos, sim
    from fleetlab.chaos._output import write_table

    model = sim.load_fault_model(config)
    names, domains = sim.fleet(nodes, racks)
    cfg = {"config": str(config), "nodes": nodes, "racks": racks, "days": days, "seed": seed}
    with recorded_run("chaos simulate", cfg, [config]) as run:
        windows = sim.draw_faults(model, names, domains, days * 86400.0, seed)
        html, stats = chaos.availability_report(
            windows, nodes=names, horizon_s=days * 86400.0, target=target
        )
        run.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
        run.write_parquet("windows.parquet", windows)
        run.write_text("report.html", html.to_html())
        if output is not None:
            write_table(windows, output, overwrite=force)
        if report is not None:
            if report.exists() and not force:
                raise typer.BadParameter(f"{report} exists; pass --force to replace it")
            html.write(report)
    if json_out:
        print_json(stats)
    else:
        out.print(
            kv_table(
                {k: v for k, v in stats.items() if k != "by_cause"},
                title="Availability under faults",
            )
        )
        out.print(rich_table(stats["by_cause"], title="Fault windows by cause"))
