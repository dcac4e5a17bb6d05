"""``fleetlab chaos``: see docs/chaos.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="chaos commands.", no_args_is_help=True)
