"""``fleetlab traces``: inspect and convert trace files."""

from __future__ import annotations

from pathlib import Path

import typer

from fleetlab.cli._common import (
    JsonOption,
    err,
    kv_table,
    out,
    print_json,
    recorded_run,
    rich_table,
)

app = typer.Typer(
    help="Inspect and convert trace files into canonical tables.", no_args_is_help=True
)


@app.command("formats")
def formats_cmd(json_out: bool = JsonOption) -> None:
    """List the supported input formats and the canonical table each produces."""
    from fleetlab import traces

    rows = [
        {"format": f.name, "table": f.table, "description": f.description} for f in traces.formats()
    ]
    if json_out:
        print_json(rows)
    else:
        out.print(rich_table(rows, title="Supported formats"))


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(
        ..., help="Trace file or dataset directory (any supported format)."
    ),
    format: str | None = typer.Option(None, "--format", "-f", help="Skip auto-detection."),
    json_out: bool = JsonOption,
) -> None:
    """Detect the format and summarise: schema, rows, time span, per-column statistics."""
    from fleetlab import traces

    with recorded_run("traces inspect", {"path": str(path), "format": format}, [path]) as run:
        result = traces.inspect(path, format=format)
        run.log_metrics({"rows": result["rows"]})
    if json_out:
        print_json(result)
        return
    head = {
        "path": result["path"],
        "format": result["format"],
        "table": result["table"],
        "rows": result["rows"],
    }
    if "time_span" in result:
        head["time span (s)"] = result["time_span"]["duration_s"]
    out.print(kv_table(head, title="Trace"))
    out.print(rich_table(result["columns"], title="Columns"))
    if result.get("quality"):
        out.print(kv_table(result["quality"], title="Data quality"))


@app.command("convert")
def convert_cmd(
    path: Path = typer.Argument(..., help="Trace file or dataset directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Canonical Parquet file to write."),
    format: str | None = typer.Option(None, "--format", "-f", help="Skip auto-detection."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Convert a trace to a canonical Parquet table (streaming where possible)."""
    from fleetlab import traces

    with recorded_run("traces convert", {"path": str(path), "output": str(output)}, [path]) as run:
        with err.status("converting…"):
            result = traces.convert(path, output, format=format, overwrite=force)
        run.log_metrics({"rows": result["rows"]})
    if json_out:
        print_json(result)
    else:
        out.print(kv_table(result, title="Converted"))
