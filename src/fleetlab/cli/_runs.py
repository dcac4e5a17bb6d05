"""``fleetlab runs``: list, show and remove recorded runs (see docs/store.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from fleetlab.cli._common import JsonOption, err, kv_table, out, print_json, rich_table

if TYPE_CHECKING:
    from fleetlab.store import RunRecord

app = typer.Typer(
    help="Recorded runs: every command that computes something is stored with its config, "
    "input fingerprints, metrics and artifacts.",
    no_args_is_help=True,
)

StoreOption = typer.Option(
    None, "--store", help="Run store folder (default: $FLEETLAB_HOME/runs).", show_default=False
)


_STATUS_STYLE = {"finished": "green", "failed": "red", "running": "yellow"}


def _runs_table(records: list[RunRecord]) -> Table:
    table = Table(title=f"Runs ({len(records)}, newest first, times in UTC)", title_justify="left")
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("command", min_width=10, overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("secs", justify="right", no_wrap=True)
    for rec in records:
        took = rec.duration_s
        status = f"[{_STATUS_STYLE[rec.status]}]{rec.status}[/]"
        table.add_row(
            rec.id,
            rec.command,
            status,
            f"{rec.started_at:%m-%d %H:%M}",
            "" if took is None else f"{took:.1f}",
        )
    return table


@app.command("list")
def list_cmd(
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many runs."),
    command: str | None = typer.Option(None, "--command", "-c", help="Only runs of this command."),
    status: str | None = typer.Option(
        None, "--status", "-s", help="Only runs with this status: running, finished or failed."
    ),
    store: Path | None = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """List recorded runs, newest first."""
    if status is not None and status not in ("running", "finished", "failed"):
        raise typer.BadParameter(
            f"expected running, finished or failed, found {status!r}", param_hint="--status"
        )
    records = _store(store).list(limit=limit, command=command, status=status)
    if json_out:
        print_json([r.model_dump(mode="json") for r in records])
        return
    if not records:
        err.print("no runs recorded yet")
        return
    out.print(_runs_table(records))


@app.command("show")
def show_cmd(
    run_id: str = typer.Argument(..., help="Run id, a unique prefix of one, or 'latest'."),
    store: Path | None = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Show one run: config, inputs, metrics and artifacts."""
    rec = _store(store).get(run_id)
    if json_out:
        print_json(rec.model_dump(mode="json"))
        return
    head = {
        "id": rec.id,
        "command": rec.command,
        "status": rec.status,
        "started (UTC)": rec.started_at.isoformat(timespec="seconds"),
        "ended (UTC)": rec.ended_at.isoformat(timespec="seconds") if rec.ended_at else "",
        "duration (s)": rec.duration_s,
        "host / pid": f"{rec.host} / {rec.pid}",
        "fleetlab": rec.version,
        "folder": str(rec.dir),
    }
    if rec.error:
        head["error"] = rec.error
    out.print(kv_table(head, title="Run"))
    if rec.config:
        out.print(kv_table({k: _flat(v) for k, v in rec.config.items()}, title="Config"))
    if rec.inputs:
        rows = [
            {
                "path": i.path,
                "kind": i.kind,
                "bytes": i.size if i.size is not None else "",
                "fingerprint": (i.fingerprint or "")[:23],
            }
            for i in rec.inputs
        ]
        out.print(rich_table(rows, title="Inputs"))
    if rec.metrics:
        out.print(kv_table(rec.metrics, title="Metrics"))
    if rec.artifacts:
        out.print(
            rich_table(
                [{"name": k, "path": str(v)} for k, v in rec.artifacts.items()], title="Artifacts"
            )
        )


@app.command("rm")
def rm_cmd(
    run_ids: list[str] = typer.Argument(..., help="Run ids (or unique prefixes) to delete."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Also remove runs that are still running."),
    store: Path | None = StoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Delete runs and their artifacts (asks first unless --yes)."""
    run_store = _store(store)
    records = [run_store.get(r) for r in run_ids]
    if not yes:
        for rec in records:
            err.print(f"{rec.id}  {rec.command}  {rec.status}  {len(rec.artifacts)} artifact(s)")
        if not typer.confirm(f"Delete {len(records)} run(s) and their artifacts?", err=True):
            err.print("nothing deleted")
            raise typer.Exit(1)
    removed = [run_store.remove(rec.id, force=force).id for rec in records]
    if json_out:
        print_json({"removed": removed})
    else:
        for rid in removed:
            err.print(f"removed {rid}")


def _flat(value: Any) -> str:
    if isinstance(value, (dict, list)):
        import json

        text = json.dumps(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return "" if value is None else str(value)


def _store(path: Path | None) -> Any:
    from fleetlab.store import RunStore

    return RunStore(path)
