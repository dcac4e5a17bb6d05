"""``fleetlab inference``: see docs/inference.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="inference commands.", no_args_is_help=True)
