"""``fleetlab runs``: see docs/runs.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="runs commands.", no_args_is_help=True)
