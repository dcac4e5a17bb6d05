"""``fleetlab workload``: see docs/workload.md."""

from __future__ import annotations

import typer

app = typer.Typer(help="workload commands.", no_args_is_help=True)


def register_top_level(root: typer.Typer) -> None:
    """Add the workload commands that live at the top level (``fleetlab characterize``)."""
