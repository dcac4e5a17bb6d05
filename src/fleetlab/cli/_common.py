"""What every sub-command shares: output in three forms, run recording, error exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

#: messages and progress go to stderr, so ``--json`` output on stdout stays clean
err = Console(stderr=True)
out = Console()

JsonOption = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def to_jsonable(value: Any) -> Any:
    """Make ``value`` JSON-serialisable (paths, numpy scalars, NaN become plain values)."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    return value


def print_json(result: Any) -> None:
    """Write ``result`` as JSON to stdout."""
    sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")


def rich_table(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> Table:
    """A rich table from a list of dicts (columns from the first row)."""
    table = Table(title=title, title_justify="left")
    if not rows:
        return table
    for key in rows[0]:
        table.add_column(str(key), justify="right" if _is_num(rows[0][key]) else "left")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in rows[0]))
    return table


def kv_table(values: dict[str, Any], *, title: str | None = None) -> Table:
    """A two-column key/value rich table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(str(key), _cell(value))
    return table


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if v is None:
        return ""
    return str(v)


def progress() -> Progress:
    """A rich progress bar on stderr for long work."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@contextmanager
def recorded_run(
    command: str, config: dict[str, Any], inputs: Sequence[str | Path] = ()
) -> Iterator[Any]:
    """Record a run of ``command`` in the run store; yields the store's run handle.

    The run is marked finished when the block exits normally and failed (with the
    error message) when it raises; artifacts written through the handle appear
    atomically.
    """
    from fleetlab.store import RunStore

    store = RunStore()
    with store.run(command, config=to_jsonable(config), inputs=[str(p) for p in inputs]) as run:
        yield run
