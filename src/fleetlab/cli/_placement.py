"""``fleetlab placement``: see docs/placement.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="placement commands.", no_args_is_help=True)
