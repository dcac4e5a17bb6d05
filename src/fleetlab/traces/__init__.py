"""Canonical trace tables and the readers that produce them from public formats.

``read(path)`` gives a lazy canonical table for any supported file; ``inspect`` and
``convert`` back the ``fleetlab traces`` commands; ``TABLES`` documents the schemas.
``datasets()`` / ``dataset(name)`` give the catalog of public datasets, ``pull(name)``
fetches, verifies and converts one, and ``dataset_file(name, path)`` gives the local
path of one of its raw files (see docs/data.md).
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
from fleetlab.traces._catalog import ArchiveMember, Dataset, DatasetFile, dataset, datasets
from fleetlab.traces._formats import Format
from fleetlab.traces._pull import (
    PullProgress,
    PullResult,
    dataset_file,
    datasets_home,
    pull,
    pull_dataset,
)
from fleetlab.traces._schemas import TABLES, TableSchema, conform, table_of

__all__ = [
    "TABLES",
    "ArchiveMember",
    "Dataset",
    "DatasetFile",
    "Format",
    "PullProgress",
    "PullResult",
    "TableSchema",
    "canonical",
    "collect",
    "conform",
    "convert",
    "dataset",
    "dataset_file",
    "datasets",
    "datasets_home",
    "detect",
    "format_named",
    "formats",
    "inspect",
    "load",
    "pull",
    "pull_dataset",
    "read",
    "summarize",
    "table_of",
]
