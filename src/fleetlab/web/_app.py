"""The dashboard: a FastAPI app that reads the run store and shows runs and their reports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from fleetlab import __version__
from fleetlab.errors import DataNotFoundError
from fleetlab.store import RunRecord, RunStore

_TEMPLATES = Path(__file__).with_name("templates")


def _summary(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "command": record.command,
        "status": record.status,
        "started_at": record.started_at.isoformat(timespec="seconds"),
        "duration_s": record.duration_s,
        "metrics": record.metrics,
        "artifacts": sorted(record.artifacts),
        "error": record.error,
    }


def create_app(store_path: str | os.PathLike[str] | None = None) -> FastAPI:
    """The dashboard app over the run store at ``store_path`` (default: the user's store).

    It only reads the store, so it runs beside any number of CLI runs writing to it.
    """
    store = RunStore(store_path)
    templates = Jinja2Templates(directory=str(_TEMPLATES))
    templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    app = FastAPI(title="fleetlab dashboard", version=__version__)

    def lookup(run_id: str) -> RunRecord:
        try:
            return store.get(run_id)
        except DataNotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    @app.get("/", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        command: str | None = Query(None),
        status: str | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
    ) -> HTMLResponse:
        records = store.list(limit=limit, command=command or None, status=status or None)  # type: ignore[arg-type]
        return templates.TemplateResponse(
            request,
            "runs.html",
            {
                "runs": [_summary(r) for r in records],
                "command": command or "",
                "status": status or "",
                "version": __version__,
                "store": str(store.path),
            },
        )

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        record = lookup(run_id)
        return templates.TemplateResponse(
            request,
            "run.html",
            {"run": record, "summary": _summary(record), "version": __version__},
        )

    @app.get("/runs/{run_id}/artifacts/{name:path}")
    def artifact(run_id: str, name: str) -> FileResponse:
        record = lookup(run_id)
        path = record.artifacts.get(name)
        if path is None or not Path(path).is_file():
            raise HTTPException(status_code=404, detail=f"run {record.id} has no artifact {name!r}")
        return FileResponse(path)

    @app.get("/api/runs")
    def api_runs(
        command: str | None = None,
        status: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> JSONResponse:
        records = store.list(limit=limit, command=command, status=status)  # type: ignore[arg-type]
        return JSONResponse([_summary(r) for r in records])

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> JSONResponse:
        return JSONResponse(json.loads(lookup(run_id).model_dump_json()))

    return app


def serve(
    *, host: str = "127.0.0.1", port: int = 8765, store_path: str | os.PathLike[str] | None = None
) -> None:
    """Serve the dashboard with uvicorn (loopback only unless ``host`` says otherwise)."""
    import uvicorn

    uvicorn.run(create_app(store_path), host=host, port=port, log_level="warning")
