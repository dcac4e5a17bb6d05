"""Canonical trace tables and the readers that produce them from public formats.

``read(path)`` gives a lazy canonical table for any supported file; ``inspect`` and
``convert`` back the ``fleetlab traces`` commands; ``TABLES`` documents the schemas.
"""

from fleetlab.traces._api import (
    canonical,
    collect,
    convert,
    detect,
    format_named,
    formats,
    inspect,
    load,
    read,
    summarize,
)
from fleetlab.traces._formats import Format
from fleetlab.traces._schemas import TABLES, TableSchema, conform, table_of

__all__ = [
    "TABLES",
    "Format",
    "TableSchema",
    "canonical",
    "collect",
    "conform",
    "convert",
    "detect",
    "format_named",
    "formats",
    "inspect",
    "load",
    "read",
    "summarize",
    "table_of",
]
