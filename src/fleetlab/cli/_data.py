"""``fleetlab data``: the catalog of public datasets and ``pull`` (see docs/data.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from fleetlab.cli._common import (
    JsonOption,
    err,
    kv_table,
    out,
    print_json,
    recorded_run,
    rich_table,
)
from fleetlab.errors import InputFormatError

if TYPE_CHECKING:
    from fleetlab import traces

app = typer.Typer(
    help="Public datasets: list the catalog, show one, pull it into the cache as canonical Parquet.",
    no_args_is_help=True,
)


def _mb(n: int) -> float:
    return round(n / 1e6, 2)


@app.command("list")
def list_cmd(json_out: bool = JsonOption) -> None:
    """List the datasets of the catalog with their size, formats and licence."""
    from fleetlab import traces

    entries = traces.datasets()
    if json_out:
        print_json(
            [
                {
                    "name": d.name,
                    "title": d.title,
                    "files": len(d.files),
                    "bytes": d.size,
                    "formats": list(d.formats),
                    "license": d.license,
                }
                for d in entries
            ]
        )
        return
    table = Table(
        title=f"Datasets ({len(entries)}); `fleetlab data info NAME` for more", title_justify="left"
    )
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("files", justify="right")
    table.add_column("MB", justify="right")
    table.add_column("formats", overflow="fold")
    for d in entries:
        table.add_row(d.name, str(len(d.files)), f"{d.size / 1e6:.1f}", ", ".join(d.formats) or "-")
    out.print(table)


def _local_state(d: traces.Dataset) -> dict[str, Any]:
    from fleetlab import traces

    root = traces.datasets_home() / d.name
    present = sum((root / "raw" / f.path).is_file() for f in d.files)
    canonical = root / "canonical"
    n_parquet = sum(1 for _ in canonical.rglob("*.parquet")) if canonical.is_dir() else 0
    return {"cache": str(root), "raw files present": present, "canonical files": n_parquet}


@app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="Dataset name (see `fleetlab data list`)."),
    all_files: bool = typer.Option(False, "--all", help="List every file, not just the first 25."),
    json_out: bool = JsonOption,
) -> None:
    """Show a dataset: description, licence, citation, download URLs, files and cache state."""
    from fleetlab import traces

    d = traces.dataset(name)
    state = _local_state(d)
    if json_out:
        print_json({**d.model_dump(mode="json"), "bytes": d.size, "local": state})
        return
    downloadable = sum(f.downloadable for f in d.files)
    head = {
        "name": d.name,
        "title": d.title,
        "description": d.description,
        "license": d.license,
        "citation": d.citation,
        "homepage": d.homepage,
        "download": "\n".join(d.urls),
        "files": f"{len(d.files)} ({downloadable} downloadable one by one, "
        f"{len(d.files) - downloadable} from a mirror only)",
        "size (MB)": _mb(d.size),
        "formats": ", ".join(d.formats) or "-",
        **state,
    }
    out.print(kv_table(head, title="Dataset"))
    shown = d.files if all_files else d.files[:25]
    rows = [
        {
            "path": f.path,
            "KB": round(f.size / 1e3, 1),
            "format": f.format or "-",
            "sha256": f.sha256[:12],
            "url": "yes" if f.downloadable else "mirror only",
        }
        for f in shown
    ]
    title = (
        "Files" if len(shown) == len(d.files) else f"Files (25 of {len(d.files)}; --all for all)"
    )
    out.print(rich_table(rows, title=title))


class _AmountColumn(ProgressColumn):
    """Bytes and speed for the fetch bar, done/total files for the convert bar."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "fetch":
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        return Text(f"{int(task.completed)}/{int(task.total or 0)} files")


class _Bars:
    """Maps :class:`fleetlab.traces.PullProgress` events onto rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, path: str, advance: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, unit=stage)
        short = path if len(path) <= 40 else "…" + path[-39:]
        self.progress.update(self.tasks[stage], advance=advance, description=f"{stage} {short}")


@app.command("pull")
def pull_cmd(
    name: str = typer.Argument(..., help="Dataset name (see `fleetlab data list`)."),
    force: bool = typer.Option(False, "--force", help="Fetch and convert again even if cached."),
    mirror: Path | None = typer.Option(
        None, "--mirror", help="Copy from this mirror folder (default: $FLEETLAB_MIRROR)."
    ),
    json_out: bool = JsonOption,
) -> None:
    """Download (or copy from FLEETLAB_MIRROR), verify sha256, and convert to canonical Parquet."""
    from fleetlab import traces

    d = traces.dataset(name)
    bytes_bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    with recorded_run(
        "data pull", {"name": name, "force": force, "mirror": str(mirror) if mirror else None}
    ) as run:
        with bytes_bar:
            bars = _Bars(bytes_bar)
            result = traces.pull_dataset(d, force=force, progress=bars, mirror=mirror)
        run.log_metrics(
            {
                "files": len(d.files),
                "fetched": len(result.fetched),
                "reused": len(result.reused),
                "bytes_fetched": result.bytes_fetched,
                "converted": len(result.canonical),
                "left_raw": len(result.left_raw),
            }
        )
        run.write_json("pull.json", result.model_dump(mode="json"))
    failed = {k: v for k, v in result.left_raw.items() if v.startswith("conversion failed")}
    if json_out:
        print_json(result.model_dump(mode="json"))
        _fail_on(failed, result.raw)
        return
    summary = {
        "dataset": d.name,
        "source": result.source,
        "cache": str(result.root),
        "files fetched": len(result.fetched),
        "files already verified": len(result.reused),
        "MB fetched": _mb(result.bytes_fetched),
        "canonical Parquet files": len(result.canonical),
        "left raw": len(result.left_raw),
    }
    out.print(kv_table(summary, title="Pulled"))
    if result.canonical:
        rows = [
            {"file": k, "parquet": str(v.relative_to(result.root))}
            for k, v in list(result.canonical.items())[:25]
        ]
        more = f" (25 of {len(result.canonical)})" if len(result.canonical) > 25 else ""
        out.print(rich_table(rows, title=f"Canonical tables{more}"))
    for path, why in list(result.left_raw.items())[:10]:
        err.print(f"[yellow]left raw:[/] {path}: {why}", highlight=False, soft_wrap=True)
    if len(result.left_raw) > 10:
        err.print(f"[yellow]... and {len(result.left_raw) - 10} more left raw (see --json)[/]")
    _fail_on(failed, result.raw)


def _fail_on(failed: dict[str, str], raw: dict[str, Path]) -> None:
    """Exit non-zero (InputFormatError) when a reader failed on a pulled file."""
    if failed:
        first, why = next(iter(failed.items()))
        raise InputFormatError(
            raw[first], f"{len(failed)} file(s) could not be converted and stay raw; first: {why}"
        )


@app.command("path")
def path_cmd(
    name: str = typer.Argument(..., help="Dataset name (see `fleetlab data list`)."),
    path: str = typer.Argument("", help="A file or folder inside the dataset (default: all)."),
    json_out: bool = JsonOption,
) -> None:
    """Print the local path of a dataset file or folder, fetching and verifying it if needed.

    With FLEETLAB_MIRROR set this is the verified mirror path; otherwise the cache path.
    Handy in scripts: ``fleetlab traces inspect $(fleetlab data path NAME FILE)``.
    """
    from fleetlab import traces

    local = traces.dataset_file(name, path)
    if json_out:
        print_json({"dataset": name, "path": path, "local": str(local)})
    else:
        typer.echo(str(local))
