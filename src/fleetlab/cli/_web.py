"""``fleetlab web``: the dashboard over the run store."""

from __future__ import annotations

from pathlib import Path

import typer

from fleetlab.cli._common import err

app = typer.Typer(help="The web dashboard over the run store.", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, help="TCP port."),
    store: Path | None = typer.Option(None, help="Run store folder (default: the user's store)."),
) -> None:
    """Serve the dashboard: runs, metrics, inputs and their HTML reports."""
    from fleetlab.web import serve

    err.print(f"fleetlab dashboard on http://{host}:{port}/  (Ctrl-C to stop)")
    serve(host=host, port=port, store_path=store)
