"""The dashboard: a FastAPI app that reads the run store and shows runs and their reports.

Pages are Jinja2 templates; htmx (vendored in ``static/``, no build step, no CDN)
swaps the runs table when filters or pages change and polls the status of running
runs. Every page also works without JavaScript.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from fleetlab import __version__
from fleetlab.errors import ConfigError, DataNotFoundError
from fleetlab.store import RunRecord, RunStore
from fleetlab.web._compare import compare_runs
from fleetlab.web._query import (
    STATUSES,
    RunQuery,
    artifact_file,
    fetch_page,
    filter_runs,
    flatten,
    fmt_value,
    kinds,
    report_artifact,
)

_HERE = Path(__file__).parent
_TEMPLATES = _HERE / "templates"
_STATIC = _HERE / "static"
#: artifacts are served in a sandbox: an HTML report may run its scripts (plotly) but in an
#: opaque origin, so it can never act as the dashboard
#: how many recent runs feed the kind menu, and how many recent runs of the same command are
#: searched for a run's "previous run" link: they bound each page's cost in a large store
KIND_WINDOW = 500
PREVIOUS_WINDOW = 200
_ARTIFACT_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups allow-downloads",
    "X-Content-Type-Options": "nosniff",
}


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


def _elapsed_s(record: RunRecord) -> float:
    if record.duration_s is not None:
        return record.duration_s
    return max(0.0, (datetime.now(UTC) - record.started_at).total_seconds())


def _size(path: Path) -> str:
    try:
        n = float(path.stat().st_size)
    except OSError:
        return "missing"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _pct(delta: float | None) -> str:
    if delta is None:
        return ""
    return f"{delta * 100:+.1f}%"


def create_app(store_path: str | os.PathLike[str] | None = None, *, poll_s: float = 2.0) -> FastAPI:
    """The dashboard app over the run store at ``store_path``.

    It only reads the store, so it runs beside any number of CLI runs writing to it.

    Parameters
    ----------
    store_path
        The run store folder (``None``: the user's store, see
        :func:`fleetlab.store.default_store_path`).
    poll_s
        Seconds between the browser's live-status refreshes of running runs.

    Returns
    -------
    fastapi.FastAPI
        The app: pages ``/`` (runs list: filters, search, sort, pages), ``/runs/{id}``,
        ``/compare?id=A&id=B``, artifact downloads, JSON under ``/api`` and the
        vendored htmx under ``/static``.

    Raises
    ------
    ConfigError
        ``poll_s`` is not positive.
    StoreError
        The store cannot be opened.
    """
    if not poll_s > 0:
        raise ConfigError(f"dashboard: field 'poll_s' expected seconds > 0, found {poll_s!r}")
    store = RunStore(store_path)
    templates = Jinja2Templates(directory=str(_TEMPLATES))
    env = templates.env
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    env.filters["fmt"] = fmt_value
    env.filters["pct"] = _pct
    env.filters["size"] = _size
    env.filters["elapsed"] = lambda r: f"{_elapsed_s(r):.1f}"
    env.globals.update(
        urlencode=urlencode,
        version=__version__,
        poll_s=f"{poll_s:g}",
        statuses=STATUSES,
    )
    app = FastAPI(title="fleetlab dashboard", version=__version__)
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")

    def lookup(run_id: str) -> RunRecord:
        try:
            return store.get(run_id)
        except DataNotFoundError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    def query_of(kind: str, status: str, q: str, sort: str, page: int, per_page: int) -> RunQuery:
        try:
            return RunQuery(
                kind=kind.strip(),
                status=status.strip(),
                text=q.strip(),
                sort=sort,  # type: ignore[arg-type]  # checked by RunQuery
                page=page,
                per_page=per_page,
            )
        except ConfigError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"code": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_params(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in e['loc'][1:])!r}: {e['msg']}" for e in exc.errors()
        )
        return await http_error(request, HTTPException(status_code=400, detail=problems))

    @app.get("/", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        kind: str = Query("", description="command or area, e.g. 'placement'"),
        command: str = Query("", description="alias of kind"),
        status: str = Query(""),
        q: str = Query("", description="words to search in id, command, config, metrics, error"),
        sort: str = Query("newest"),
        page: int = Query(1),
        per_page: int = Query(25),
    ) -> Response:
        query = query_of(kind or command, status, q, sort, page, per_page)
        context: dict[str, Any] = {"page": fetch_page(store, query), "query": query}
        partial = (
            request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-Target") == "runs"
            and "HX-History-Restore-Request" not in request.headers
        )
        if not partial:  # the kind menu: the kinds of the recent runs, and the chosen one
            recent = kinds(store.list(limit=KIND_WINDOW))
            context["kinds"] = sorted({*recent, query.kind} - {""})
            context["store"] = str(store.path)
        response = templates.TemplateResponse(
            request, "_runs_table.html" if partial else "runs.html", context
        )
        response.headers["Vary"] = "HX-Request, HX-Target"
        return response

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> Response:
        record = lookup(run_id)
        # the run of the same command just before this one, among the most recent ones
        recent = store.list(limit=PREVIOUS_WINDOW, command=record.command)
        earlier = [r for r in recent if r.command == record.command and r.id < record.id]
        previous = max(earlier, key=lambda r: r.id) if earlier else None
        return templates.TemplateResponse(
            request,
            "run.html",
            {
                "run": record,
                "r": record,
                "summary": _summary(record),
                "params": flatten(record.config),
                "metrics": flatten(record.metrics),
                "report": report_artifact(record),
                "previous": previous,
            },
        )

    @app.get("/runs/{run_id}/live", response_class=HTMLResponse)
    def run_live(request: Request, run_id: str) -> Response:
        record = lookup(run_id)
        response = templates.TemplateResponse(
            request,
            "_run_live.html",
            {"run": record, "r": record, "metrics": flatten(record.metrics)},
        )
        if record.status != "running":
            # the run ended: reload the whole page so its report and final numbers show
            response.headers["HX-Refresh"] = "true"
        return response

    @app.get("/runs/{run_id}/status", response_class=HTMLResponse)
    def run_status(request: Request, run_id: str) -> Response:
        record = lookup(run_id)
        return templates.TemplateResponse(request, "_status.html", {"r": record})

    @app.get("/runs/{run_id}/artifacts/{name:path}")
    def artifact(run_id: str, name: str, download: bool = False) -> FileResponse:
        record = lookup(run_id)
        path = artifact_file(record, name)
        if path is None:
            raise HTTPException(
                status_code=404,
                detail=f"run {record.id} has no artifact {name!r} inside its artifact folder",
            )
        return FileResponse(
            path,
            filename=Path(name).name,
            content_disposition_type="attachment" if download else "inline",
            headers=_ARTIFACT_HEADERS,
        )

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(
        request: Request,
        id: list[str] = Query([], description="run ids, the first is the baseline"),
        only: str = Query("", description="'diff' to show only rows that differ"),
    ) -> Response:
        records = [lookup(i) for i in id]
        try:
            cmp = compare_runs(records)
        except ConfigError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        diff_only = only == "diff"
        return templates.TemplateResponse(
            request,
            "compare.html",
            {
                "cmp": cmp,
                "diff_only": diff_only,
                "metrics": [m for m in cmp.metrics if m.any_differs or not diff_only],
                "params": [p for p in cmp.params if p.any_differs or not diff_only],
                "id_params": [("id", r.id) for r in cmp.runs],
            },
        )

    @app.get("/api/runs")
    def api_runs(
        kind: str = Query(""),
        command: str = Query("", description="alias of kind"),
        status: str = Query(""),
        q: str = Query(""),
        sort: str = Query("newest"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> JSONResponse:
        query = query_of(kind or command, status, q, sort, 1, 25)
        st: Any = query.status or None
        matching = filter_runs(store.list(limit=None, command=query.kind or None, status=st), query)
        return JSONResponse(
            [_summary(r) for r in matching[:limit]],
            headers={"X-Total-Count": str(len(matching))},
        )

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> JSONResponse:
        return JSONResponse(json.loads(lookup(run_id).model_dump_json()))

    @app.get("/api/compare")
    def api_compare(id: list[str] = Query([])) -> JSONResponse:
        records = [lookup(i) for i in id]
        try:
            cmp = compare_runs(records)
        except ConfigError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

        def rows(rs: list[Any]) -> list[dict[str, Any]]:
            return [
                {"name": r.name, "values": r.values, "differs": r.differs, "delta": r.delta}
                for r in rs
            ]

        return JSONResponse(
            {
                "kind": cmp.kind,
                "runs": [r.id for r in cmp.runs],
                "params": rows(cmp.params),
                "metrics": rows(cmp.metrics),
            }
        )

    return app
