"""``fleetlab web``: the dashboard over the run store."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from fleetlab.cli._common import err

app = typer.Typer(help="The web dashboard over the run store.", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, help="TCP port."),
    store: Path | None = typer.Option(None, help="Run store folder (default: the user's store)."),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a non-loopback --host. The dashboard has no login: anyone who can "
        "reach it can read every run and artifact.",
    ),
    poll: float = typer.Option(
        2.0, "--poll", help="Seconds between live-status refreshes of running runs."
    ),
) -> None:
    """Serve the dashboard: runs, metrics, params, artifacts, reports and run comparisons."""
    from fleetlab.web import check_bind, serve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_bind(host, allow_remote=allow_remote)  # raises SafetyError unless allowed
    for w in caught:
        err.print(f"[bold yellow]warning:[/] {w.message}")
    err.print(f"fleetlab dashboard on http://{host}:{port}/  (Ctrl-C to stop)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="serving the dashboard on", category=UserWarning)
        serve(host=host, port=port, store_path=store, allow_remote=allow_remote, poll_s=poll)
