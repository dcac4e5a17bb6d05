"""The ``fleetlab`` command: one sub-command group per area, thin over the library."""

from __future__ import annotations

import sys

import typer

from fleetlab import __version__
from fleetlab.cli import (
    _chaos,
    _data,
    _depgraph,
    _inference,
    _placement,
    _runs,
    _traces,
    _web,
    _workload,
)
from fleetlab.cli._common import err
from fleetlab.cli._tour import tour
from fleetlab.errors import FleetlabError

app = typer.Typer(
    name="fleetlab",
    help="Workload-aware cloud efficiency and reliability, on real traces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Workload-aware cloud efficiency and reliability, on real traces."""


app.command("tour")(tour)
app.add_typer(_traces.app, name="traces")
app.add_typer(_data.app, name="data")
app.add_typer(_runs.app, name="runs")
app.add_typer(_workload.app, name="workload")
_workload.register_top_level(app)
app.add_typer(_inference.app, name="inference")
app.add_typer(_placement.app, name="placement")
app.add_typer(_depgraph.app, name="depgraph")
app.add_typer(_chaos.app, name="chaos")
app.add_typer(_web.app, name="web")


def main() -> None:
    """Entry point of the console script: one-line errors and distinct exit codes."""
    try:
        rc = app(standalone_mode=False)
    except FleetlabError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # usage errors of click (or typer's vendored copy of it) know how to show themselves
        code = getattr(exc, "exit_code", None)
        if hasattr(exc, "show") and isinstance(code, int):
            exc.show()
            sys.exit(code)
        if type(exc).__name__ == "Abort":
            err.print("aborted")
            sys.exit(130)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


__all__ = ["app", "main"]
