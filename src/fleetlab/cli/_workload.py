"""``fleetlab workload`` and ``fleetlab characterize``: see docs/workload.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    to_jsonable,
)
from fleetlab.errors import FleetlabError

if TYPE_CHECKING:
    from fleetlab import workload

# the areas are imported inside the commands, so that `fleetlab --help` starts fast

app = typer.Typer(
    help="Characterize workloads, fit generative models, synthesize traces, check fidelity.",
    no_args_is_help=True,
)

_FORMAT = typer.Option(None, "--format", "-f", help="Input format (skip auto-detection).")
_SEED = typer.Option(0, "--seed", help="Seed of every random draw (results are reproducible).")
_FORCE = typer.Option(False, "--force", help="Replace output files that exist.")


def _refuse_existing(path: Path | None, force: bool) -> None:
    if path is not None and path.exists() and not force:
        raise FleetlabError(f"{path}: already exists; pass --force to replace it")


def _write_json(path: Path, data: Any) -> None:
    import json
    import os

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(to_jsonable(data), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def characterize_cmd(
    trace: Path = typer.Argument(
        ..., help="Trace file (any supported format or canonical Parquet)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the HTML report (.html) or the numbers as JSON (.json)."
    ),
    format: str | None = _FORMAT,
    seed: int = _SEED,
    force: bool = _FORCE,
    json_out: bool = JsonOption,
) -> None:
    """Characterize a trace: arrivals, periodicity, sizes, lifetimes, popularity, correlations."""
    from fleetlab import traces, workload

    _refuse_existing(output, force)
    config = {"trace": str(trace), "format": format, "seed": seed}
    with recorded_run("characterize", config, [trace]) as run:
        with err.status("reading…"):
            frame = traces.load(trace, format=format)
        with err.status(f"characterizing {frame.height:,} rows…"):
            ch = workload.characterize(frame, seed=seed)
        result = ch.to_dict()
        run.log_metrics(_headline(result))
        if output is not None:
            if output.suffix.lower() in (".html", ".htm"):
                workload.characterization_report(ch, subtitle=str(trace)).write(output)
            else:
                _write_json(output, result)
            run.add_artifact(output.name, output)
            err.print(f"wrote {output}")
    if json_out:
        print_json(result)
        return
    _print_characterization(result)


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    a = result.get("arrivals", {})
    h: dict[str, Any] = {"rows": result["overview"]["rows"]}
    for k in ("duration_s", "mean_rate_per_s", "iat_cv", "renewal_cv"):
        if a.get(k) is not None:
            h[k] = a[k]
    for f, s in result.get("sizes", {}).items():
        if s.get("median") is not None:
            h[f"median_{f}"] = s["median"]
    return h


def _print_characterization(r: dict[str, Any]) -> None:
    out.print(kv_table(_headline(r), title=f"{r['table']} table"))
    if r.get("sizes"):
        rows = [
            {
                "field": f,
                **{
                    k: s.get(k)
                    for k in (
                        "median",
                        "p90",
                        "p99",
                        "max",
                        "cv",
                        "best_family",
                        "best_ks",
                        "tail_index_hill",
                    )
                },
            }
            for f, s in r["sizes"].items()
        ]
        out.print(rich_table(rows, title="Sizes"))
    a = r.get("arrivals", {})
    if a.get("idc"):
        out.print(rich_table(a["idc"], title="Index of dispersion for counts"))
    if r.get("periodicity", {}).get("dominant"):
        out.print(rich_table(r["periodicity"]["dominant"], title="Dominant periods"))
    if r.get("lifetimes"):
        out.print(
            kv_table(
                {k: v for k, v in r["lifetimes"].items() if not isinstance(v, str)},
                title="Lifetimes (Kaplan-Meier)",
            )
        )
    if r.get("popularity"):
        out.print(
            rich_table([{"column": c, **v} for c, v in r["popularity"].items()], title="Popularity")
        )
    if r.get("utilization"):
        u = {k: v for k, v in r["utilization"].items() if isinstance(v, (int, float))}
        out.print(kv_table(u, title="Utilization"))
    if r.get("anomalies"):
        out.print(
            rich_table(
                [{k: str(v) for k, v in x.items()} for x in r["anomalies"]], title="Anomalies"
            )
        )
    if r.get("skipped"):
        out.print(rich_table(r["skipped"], title="Skipped analyses"))


app.command("characterize")(characterize_cmd)


@app.command("fit")
def fit_cmd(
    trace: Path = typer.Argument(
        ..., help="Trace file (any supported format or canonical Parquet)."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Model file to write (.yaml or .json)."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Also write an HTML report of the fit."
    ),
    format: str | None = _FORMAT,
    seed: int = _SEED,
    arrivals: str = typer.Option(
        "gamma",
        "--arrivals",
        help="Burstiness: gamma (renewal, default), mmpp, or auto (the better of the two "
        "on its own fidelity report).",
    ),
    force: bool = _FORCE,
    json_out: bool = JsonOption,
) -> None:
    """Fit a generative workload model to a trace and write it as YAML/JSON."""
    from fleetlab import traces, workload

    if arrivals not in ("gamma", "mmpp", "auto"):
        raise typer.BadParameter(
            f"expected gamma, mmpp or auto (found {arrivals!r})", param_hint="--arrivals"
        )
    _refuse_existing(output, force)
    _refuse_existing(report, force)
    config = {
        "trace": str(trace),
        "output": str(output),
        "format": format,
        "seed": seed,
        "arrivals": arrivals,
    }
    with recorded_run("workload fit", config, [trace]) as run:
        with err.status("reading…"):
            frame = traces.load(trace, format=format)
        with err.status(f"fitting {frame.height:,} rows…"):
            model, diagnostics = workload.fit(
                frame,
                seed=seed,
                source_path=str(trace),
                arrivals=arrivals,  # type: ignore[arg-type]  # checked above
            )
        workload.save_model(model, output, overwrite=force)
        run.add_artifact(output.name, output)
        if report is not None:
            _model_report(model, diagnostics, trace).write(report)
            run.add_artifact(report.name, report)
        summary = _model_summary(model, output)
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    if json_out:
        print_json({**summary, "diagnostics": diagnostics})
        return
    out.print(kv_table(summary, title="Workload model"))
    out.print(
        rich_table(
            [
                {
                    "field": f,
                    "kind": m.kind,
                    "family": m.family or "",
                    "ks": m.ks,
                    "zero_fraction": m.zero_fraction,
                }
                for f, m in model.fields.items()
            ],
            title="Marginals",
        )
    )


def _model_report(model: workload.WorkloadModel, diagnostics: dict[str, Any], trace: Path) -> Any:
    from fleetlab import workload
    from fleetlab.report import Report

    return workload.model_section(Report("Workload model", str(trace)), model, diagnostics)


def _batch_mean(batch: workload.Marginal | None) -> float | None:
    """Mean events per arrival instant of a discrete batch marginal (None otherwise)."""
    if batch is None or batch.values is None or batch.probs is None:
        return None
    return float(sum(v * p for v, p in zip(batch.values, batch.probs, strict=True)))


def _model_summary(model: workload.WorkloadModel, path: Path) -> dict[str, Any]:
    a = model.arrival
    return {
        "model": str(path),
        "table": model.table,
        "source_rows": model.source.rows,
        "source_duration_s": model.source.duration_s,
        "rate_bin_s": a.rate.bin_s,
        "period_s": a.rate.period_s,
        "mean_rate_per_s": a.rate.mean_rate_per_s,
        "renewal": a.renewal.family,
        "renewal_cv": a.renewal.cv,
        "process": a.process,
        "mmpp_states": len(a.mmpp.rates) if a.mmpp else 0,
        "trend_days": len(a.rate.trend) if a.rate.trend else 0,
        "batch_mean": _batch_mean(a.batch),
        "grid_s": a.quantum_s,
        "fields": len(model.fields),
        "entities": model.entity.count if model.entity else 0,
        "templates": len(model.traces.templates) if model.traces else 0,
        "other_share": model.traces.other_share if model.traces else None,
    }


@app.command("synth")
def synth_cmd(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file written by `workload fit`."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Parquet file to write."),
    duration: str | None = typer.Option(
        None, "--duration", help="Length, e.g. 3600, 90m, 12h, 7d (default: the source trace's)."
    ),
    scale: float = typer.Option(1.0, "--scale", help="Rate factor (keeps shape and burstiness)."),
    seed: int = _SEED,
    chunk_rows: int = typer.Option(1 << 20, "--chunk-rows", min=1, help="Rows per written chunk."),
    vms: Path | None = typer.Option(
        None,
        "--vms",
        help="Usage models: also write the matching vms table (one row per synthetic VM) here.",
    ),
    force: bool = _FORCE,
    json_out: bool = JsonOption,
) -> None:
    """Synthesize a trace of any duration and scale from a model, streamed to Parquet."""
    import time

    from fleetlab import workload

    model = workload.load_model(model_path)
    if vms is not None and model.table != "usage":
        raise typer.BadParameter(
            f"--vms needs a usage model (found a {model.table} model)", param_hint="--vms"
        )
    _refuse_existing(vms, force)
    seconds = workload.parse_duration(duration) if duration is not None else model.source.duration_s
    config = {
        "model": str(model_path),
        "output": str(output),
        "duration_s": seconds,
        "scale": scale,
        "seed": seed,
        "chunk_rows": chunk_rows,
    }
    with recorded_run("workload synth", config, [model_path]) as run:
        started = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("synthesizing", total=int(seconds))

            def on_chunk(rows: int, t: float) -> None:
                bar.update(
                    task, completed=min(int(t), int(seconds)), description=f"{rows:,} events"
                )

            result = workload.synth(
                model,
                output,
                duration_s=seconds,
                scale=scale,
                seed=seed,
                chunk_rows=chunk_rows,
                overwrite=force,
                on_chunk=on_chunk,
            )
        elapsed = time.perf_counter() - started
        result["events_per_s"] = result["rows"] / elapsed if elapsed > 0 else None
        if vms is not None:
            table = workload.usage_vms(model, scale=scale, seed=seed)
            vms.parent.mkdir(parents=True, exist_ok=True)
            table.write_parquet(vms)
            result["vms_path"] = str(vms)
            result["vms"] = table.height
        run.log_metrics(
            {
                "rows": result["rows"],
                "chunks": result["chunks"],
                "events_per_s": result["events_per_s"],
            }
        )
    if json_out:
        print_json(result)
    else:
        out.print(kv_table(result, title="Synthesized"))


@app.command("compare")
def compare_cmd(
    real: Path = typer.Argument(..., help="The real trace."),
    synth: Path = typer.Argument(..., help="The synthetic trace (e.g. from `workload synth`)."),
    scale: float = typer.Option(
        1.0, "--scale", help="Scale factor the synthetic trace was made with."
    ),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", help="YAML file overriding thresholds (see docs/workload.md)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Write the fidelity report (.html) or the table (.json/.parquet).",
    ),
    check: bool = typer.Option(False, "--check", help="Exit with code 1 when any statistic fails."),
    format: str | None = _FORMAT,
    seed: int = _SEED,
    force: bool = _FORCE,
    json_out: bool = JsonOption,
) -> None:
    """Fidelity report: per-statistic distances and verdicts with the thresholds used."""
    from fleetlab import traces, workload

    _refuse_existing(output, force)
    th = workload.load_thresholds(thresholds) if thresholds else workload.Thresholds()
    config = {
        "real": str(real),
        "synth": str(synth),
        "scale": scale,
        "seed": seed,
        "thresholds": th.model_dump(),
    }
    with recorded_run("workload compare", config, [real, synth]) as run:
        with err.status("reading…"):
            a = traces.load(real, format=format)
            b = traces.load(synth)
        with err.status("comparing…"):
            cmp = workload.compare(a, b, scale=scale, thresholds=th, seed=seed)
        run.log_metrics({k: v for k, v in cmp.metrics.items() if isinstance(v, (int, float, bool))})
        if output is not None:
            suffix = output.suffix.lower()
            if suffix in (".html", ".htm"):
                workload.comparison_report(cmp, subtitle=f"{real} vs {synth}").write(output)
            elif suffix == ".parquet":
                cmp.table.write_parquet(output)
            else:
                _write_json(output, {**cmp.metrics, "statistics": cmp.table.to_dicts()})
            run.add_artifact(output.name, output)
            err.print(f"wrote {output}")
    if json_out:
        print_json({**cmp.metrics, "statistics": cmp.table.to_dicts()})
    else:
        out.print(
            rich_table(cmp.table.drop("note").to_dicts(), title="Fidelity (notes: --json / -o)")
        )
        verdict = (
            "[green]PASS[/]" if cmp.passed else f"[red]FAIL[/] ({', '.join(cmp.metrics['failed'])})"
        )
        out.print(f"overall: {verdict}")
    if check and not cmp.passed:
        raise typer.Exit(1)


def register_top_level(root: typer.Typer) -> None:
    """Add the workload commands that live at the top level (``fleetlab characterize``)."""
    root.command("characterize")(characterize_cmd)
