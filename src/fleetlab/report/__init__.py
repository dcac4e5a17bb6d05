"""Self-contained offline HTML reports shared by every area."""

from fleetlab.report._html import Report, Section

__all__ = ["Report", "Section"]
