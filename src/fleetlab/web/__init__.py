"""The dashboard: runs, their metrics and their reports, read from the run store.

``create_app(store)`` builds the FastAPI app (runs list with filters, search, sort and
pages; one run with params, metrics, artifacts and its embedded report; a side-by-side
compare of runs of one kind; live status of running runs); ``serve`` runs it with
uvicorn on loopback, refusing other addresses unless ``allow_remote=True``.
"""

from fleetlab.web._app import create_app
from fleetlab.web._serve import check_bind, serve

__all__ = ["check_bind", "create_app", "serve"]
