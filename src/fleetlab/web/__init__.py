"""The dashboard: runs, their metrics and their reports, read from the run store."""

from fleetlab.web._app import create_app, serve

__all__ = ["create_app", "serve"]
