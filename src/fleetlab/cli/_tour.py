"""``fleetlab tour``: the main job, end to end on defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from fleetlab.cli._common import JsonOption, err, kv_table, out, print_json, progress, recorded_run


def tour(
    output: Path = typer.Option(
        Path("fleetlab-tour"), "--output", "-o", help="Folder for the tour's files."
    ),
    seed: int = typer.Option(0, help="Seed for every random draw."),
    only: list[str] | None = typer.Option(None, "--only", help="Run only these stops."),
    json_out: bool = JsonOption,
) -> None:
    """Run every capability on defaults, offline, and write one HTML report."""
    from fleetlab.tour import STOPS, run_tour

    names = [n for n, _ in STOPS if not only or n in only]
    with recorded_run("tour", {"seed": seed, "only": only}) as run, progress() as bar:
        task = bar.add_task("tour", total=len(names))

        def on_stop(name: str) -> None:
            bar.update(task, description=f"tour: {name}")

        report, summary = run_tour(output, seed=seed, only=only, on_stop=on_stop)
        bar.update(task, completed=len(names))
        html_path = report.write(output / "report.html")
        run.add_artifact("report.html", html_path)
        run.log_metrics(
            {
                f"{stop}.{k}": v
                for stop, s in summary.items()
                for k, v in s.items()
                if isinstance(v, (int, float))
            }
        )
    if json_out:
        print_json({"report": str(html_path), "stops": summary})
        return
    for stop, stats in summary.items():
        out.print(kv_table(stats, title=f"tour: {stop}"))
    err.print(f"report: {html_path}")
