"""``fleetlab depgraph``: see docs/depgraph.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="depgraph commands.", no_args_is_help=True)
