"""``fleetlab depgraph``: mine, show and analyse service dependency graphs (docs/depgraph.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fleetlab.cli._common import (
    JsonOption,
    err,
    kv_table,
    out,
    print_json,
    recorded_run,
    rich_table,
    to_jsonable,
)
from fleetlab.errors import FleetlabError

if TYPE_CHECKING:
    from fleetlab import depgraph

# the area is imported inside the commands, so that `fleetlab --help` starts fast;
# the names of the built-in topologies (fleetlab.depgraph.TOPOLOGIES) for the help text:
# a test checks that they match
TOPOLOGY_NAMES = (
    "chain",
    "fanout",
    "shared-backends",
    "async-retry-cycle",
    "hotel-reservation",
    "social-network",
)

app = typer.Typer(
    help="Mine service dependency graphs from spans or flows; blast radius, critical path, diff.",
    no_args_is_help=True,
)

ForceOption = typer.Option(False, "--force", help="Replace output files that exist.")
ReportOption = typer.Option(None, "--report", help="Also write an HTML report here.")


def _refuse_existing(*paths: Path | None, force: bool) -> None:
    for p in paths:
        if p is not None and p.exists() and not force:
            raise FleetlabError(f"{p}: already exists; pass --force to replace it")


def _write_json(path: Path, result: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(to_jsonable(result), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _edge_rows(graph: depgraph.DependencyGraph, limit: int = 40) -> list[dict[str, Any]]:
    rows = sorted(graph.edges(), key=lambda e: -e["calls"])[:limit]
    return [
        {
            "caller": e["caller"],
            "callee": e["callee"],
            "calls": e["calls"],
            "rate/s": e["rate_per_s"],
            "p50 ms": e["p50_ms"],
            "p99 ms": e["p99_ms"],
            "errors": e["error_rate"],
            "kind": e["kind"],
            "conf": e["confidence"],
        }
        for e in rows
    ]


@app.command("mine")
def mine_cmd(
    path: Path = typer.Argument(..., help="Spans or flows file (any supported format)."),
    output: Path = typer.Option(..., "--output", "-o", help="Graph file: .json, .graphml or .dot."),
    format: str | None = typer.Option(None, "--format", "-f", help="Input format; skip detection."),
    min_confidence: float | None = typer.Option(
        None, "--min-confidence", help="Flows only: keep edges explained at least this much."
    ),
    report: Path | None = ReportOption,
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Mine the service graph: from trace links (spans) or Orion-style from timing (flows)."""
    from fleetlab import depgraph

    _refuse_existing(output, report, force=force)
    spec = (
        depgraph.FlowMiningSpec(min_confidence=min_confidence)
        if min_confidence is not None
        else None
    )
    config = {
        "path": str(path),
        "output": str(output),
        "format": format,
        "min_confidence": min_confidence,
    }
    with recorded_run("depgraph mine", config, [path]) as run:
        with err.status("mining…"):
            graph = depgraph.mine_file(path, format=format, spec=spec)
        depgraph.write_graph(graph, output, overwrite=force)
        result = depgraph.summary(graph)
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
        run.add_artifact(output.name, output)
        if report is not None:
            depgraph.graph_report(graph, title=f"Dependency graph of {path.name}").write(report)
            run.add_artifact(report.name, report)
    if json_out:
        print_json({**result, "output": str(output), "quality": graph.meta.get("quality")})
        return
    out.print(kv_table({**result, "written": str(output)}, title="Dependency graph"))
    out.print(rich_table(_edge_rows(graph), title="Busiest edges"))
    issues = {
        k: v
        for k, v in (graph.meta.get("quality") or {}).items()
        if v and k not in ("spans_in", "spans_used", "traces", "root_spans", "calls")
    }
    if issues:
        out.print(kv_table(issues, title="Data quality (counted and handled)"))


@app.command("show")
def show_cmd(
    graph_path: Path = typer.Argument(..., help="Graph file from `depgraph mine` (or a trace)."),
    report: Path | None = ReportOption,
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Terminal summary of a graph: edges, entry points, blast radii, SPOFs, cycles."""
    from fleetlab import depgraph

    _refuse_existing(report, force=force)
    graph = depgraph.graph_of(graph_path)
    result: dict[str, Any] = {
        "summary": depgraph.summary(graph),
        "edges": graph.edges(),
        "blast_radius": depgraph.blast_radii(graph),
        "single_points_of_failure": depgraph.single_points_of_failure(graph),
        "cycles": depgraph.cycles(graph),
    }
    if report is not None:
        depgraph.graph_report(graph, title=f"Dependency graph {graph_path.name}").write(report)
    if json_out:
        print_json(result)
        return
    out.print(kv_table(result["summary"], title=f"{graph_path}"))
    out.print(rich_table(_edge_rows(graph), title="Busiest edges"))
    out.print(rich_table(result["blast_radius"][:15], title="Largest blast radius"))
    spof = [
        {
            "service": r["service"],
            "cuts off": len(r["cut_off"]),
            "entry points": ", ".join(r["entry_points"]),
        }
        for r in result["single_points_of_failure"][:15]
    ]
    if spof:
        out.print(rich_table(spof, title="Single points of failure"))
    if result["cycles"]:
        out.print(
            rich_table(
                [
                    {"cycle": " → ".join(c["services"]), "async": c["async"]}
                    for c in result["cycles"][:15]
                ],
                title="Cycles",
            )
        )


@app.command("blast-radius")
def blast_radius_cmd(
    graph_path: Path = typer.Argument(..., help="Graph file from `depgraph mine` (or a trace)."),
    service: str = typer.Argument(..., help="The service that fails."),
    sync_only: bool = typer.Option(
        False, "--sync-only", help="Do not propagate the failure over asynchronous calls."
    ),
    json_out: bool = JsonOption,
) -> None:
    """What fails upstream when SERVICE fails: services, entry points, share of traffic."""
    from fleetlab import depgraph

    graph = depgraph.graph_of(graph_path)
    result = depgraph.blast_radius(graph, service, through_async=not sync_only)
    if json_out:
        print_json(result)
        return
    head = {
        "service": service,
        "share of traffic": result["share_of_traffic"],
        "upstream services": len(result["affected_services"]),
        "entry points": ", ".join(result["entry_points"]),
        "method": result["method"],
        "calls in": result["calls_in"],
    }
    out.print(kv_table(head, title="Blast radius"))
    out.print(rich_table([{"affected service": s} for s in result["affected_services"]]))
    out.print(
        rich_table(
            [
                {"entry point": e, "share of its requests": s}
                for e, s in result["share_by_entry"].items()
            ]
        )
    )


@app.command("critical-path")
def critical_path_cmd(
    path: Path = typer.Argument(..., help="Spans file (any supported format)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Per-trace table (.parquet)."),
    max_traces: int = typer.Option(50_000, "--max-traces", help="Analyse a sample this large."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    report: Path | None = ReportOption,
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Critical path of each trace (CRISP) and which services most often determine latency."""
    from fleetlab import depgraph

    _refuse_existing(output, report, force=force)
    config = {"path": str(path), "max_traces": max_traces, "seed": seed}
    with recorded_run("depgraph critical-path", config, [path]) as run:
        table, frame = depgraph.load_table(path)
        if table != "spans":
            raise FleetlabError(f"{path}: critical paths need spans, this is a {table} table")
        with err.status("walking traces…"):
            per_trace = depgraph.analyze_traces(
                frame, max_traces=max_traces, seed=seed, source=str(path)
            )
        services = depgraph.critical_services(per_trace)
        stats = depgraph.shape_stats(per_trace)
        run.log_metrics({"traces": stats["traces"], "patterns": stats["patterns"]})
        if output is not None:
            per_trace.write_parquet(output)
            run.add_artifact(output.name, output)
        if report is not None:
            graph = depgraph.mine_spans(frame, source=str(path))
            depgraph.graph_report(
                graph, title=f"Critical paths of {path.name}", traces=per_trace
            ).write(report)
            run.add_artifact(report.name, report)
    if json_out:
        print_json(
            {
                "services": services.to_dicts(),
                "shapes": stats,
                "patterns": depgraph.trace_patterns(per_trace, top=10).to_dicts(),
            }
        )
        return
    out.print(rich_table(services.head(20).to_dicts(), title="Critical path by service"))
    out.print(
        rich_table(
            depgraph.trace_patterns(per_trace, top=10).to_dicts(),
            title="Most frequent call-tree patterns",
        )
    )


@app.command("diff")
def diff_cmd(
    before: Path = typer.Argument(..., help="Graph file or trace of the first window."),
    after: Path = typer.Argument(..., help="Graph file or trace of the second window."),
    latency_ratio: float = typer.Option(1.5, "--latency-ratio", help="Flag p50/p99 shifts ≥ this."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the diff as JSON."),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """New and removed edges, latency/error shifts, and the services they point at."""
    from fleetlab import depgraph

    _refuse_existing(output, force=force)
    config = {"before": str(before), "after": str(after), "latency_ratio": latency_ratio}
    with recorded_run("depgraph diff", config, [before, after]) as run:
        result = depgraph.diff_graphs(
            depgraph.graph_of(before), depgraph.graph_of(after), latency_ratio=latency_ratio
        )
        run.log_metrics(
            {
                "added_edges": len(result["added_edges"]),
                "removed_edges": len(result["removed_edges"]),
                "changed_edges": len(result["changed_edges"]),
            }
        )
        if output is not None:
            _write_json(output, result)
            run.add_artifact(output.name, output)
    if json_out:
        print_json(result)
        return
    out.print(
        kv_table(
            {
                "added edges": len(result["added_edges"]),
                "removed edges": len(result["removed_edges"]),
                "changed edges": len(result["changed_edges"]),
                "top suspect": (result["suspects"] or [{"service": "-"}])[0]["service"],
            },
            title="Graph diff",
        )
    )
    for key in ("added_edges", "removed_edges"):
        if result[key]:
            out.print(
                rich_table(
                    [{"caller": u, "callee": v} for u, v in result[key]],
                    title=key.replace("_", " "),
                )
            )
    if result["changed_edges"]:
        cols = (
            "caller",
            "callee",
            "p50_ms_before",
            "p50_ms_after",
            "p99_ms_before",
            "p99_ms_after",
            "error_rate_before",
            "error_rate_after",
        )
        out.print(
            rich_table(
                [{k: r[k] for k in cols} for r in result["changed_edges"][:20]],
                title="Shifted edges",
            )
        )
    out.print(rich_table(result["suspects"][:10], title="Suspects"))


@app.command("generate")
def generate_cmd(
    topology: str = typer.Argument(
        ..., help=f"One of: {', '.join(TOPOLOGY_NAMES)}; or a topology .yaml file."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Spans table to write (.parquet)."),
    flows: Path | None = typer.Option(None, "--flows", help="Also write the flows (.parquet)."),
    rate: float = typer.Option(50.0, "--rate", help="Requests per second."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds of traffic."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Synthesize spans (and flows) for a topology with known ground truth."""
    from fleetlab import depgraph

    _refuse_existing(output, flows, force=force)
    topo = depgraph.topology(topology)
    traffic = depgraph.Traffic(rate_per_s=rate, duration_s=duration)
    config = {"topology": topology, "rate": rate, "duration": duration, "seed": seed}
    with recorded_run("depgraph generate", config) as run:
        spans = depgraph.generate_spans(topo, traffic, seed=seed)
        spans.write_parquet(output)
        result: dict[str, Any] = {
            "spans": spans.height,
            "output": str(output),
            "true_edges": sorted(topo.edges()),
        }
        if flows is not None:
            frame, _ = depgraph.add_background_flows(depgraph.spans_to_flows(spans), seed=seed)
            frame.write_parquet(flows)
            result["flows"] = frame.height
        run.log_metrics({"spans": spans.height})
    if json_out:
        print_json(result)
    else:
        out.print(
            kv_table(
                {k: v for k, v in result.items() if k != "true_edges"},
                title=f"Generated {topology}",
            )
        )


@app.command("evaluate")
def evaluate_cmd(
    paths: list[Path] = typer.Argument(..., help="Spans files with parent links (ground truth)."),
    background_pairs: int = typer.Option(
        5, "--background-pairs", help="Pairs of unrelated background traffic to add."
    ),
    seed: int = typer.Option(0, "--seed"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write results as JSON."),
    force: bool = ForceOption,
    json_out: bool = JsonOption,
) -> None:
    """Orion-style mining scored against the stripped parent links: precision/recall/F1."""
    from fleetlab import depgraph

    _refuse_existing(output, force=force)
    rows = []
    with recorded_run(
        "depgraph evaluate", {"paths": [str(p) for p in paths], "seed": seed}, paths
    ) as run:
        for p in paths:
            table, frame = depgraph.load_table(p)
            if table != "spans":
                raise FleetlabError(f"{p}: evaluation needs spans with parent links")
            r = depgraph.evaluate_flow_mining(frame, background_pairs=background_pairs, seed=seed)
            rows.append(
                {
                    "dataset": str(p),
                    "edge_precision": r["edges"]["precision"],
                    "edge_recall": r["edges"]["recall"],
                    "edge_f1": r["edges"]["f1"],
                    "triple_f1": r["triples"]["f1"],
                    "concurrency": r["concurrency"],
                    "false_positives": r["edges"]["false_positives"],
                    "false_negatives": r["edges"]["false_negatives"],
                }
            )
        run.log_metrics({"mean_edge_f1": sum(r["edge_f1"] for r in rows) / max(1, len(rows))})
        if output is not None:
            _write_json(output, rows)
            run.add_artifact(output.name, output)
    if json_out:
        print_json(rows)
    else:
        out.print(
            rich_table(
                [
                    {k: v for k, v in r.items() if k not in ("false_positives", "false_negatives")}
                    for r in rows
                ],
                title="Flow mining vs ground truth",
            )
        )
