"""Reading placement inputs: a vms table from any supported trace file."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from fleetlab import traces
from fleetlab.errors import DataNotFoundError, InputFormatError


def load_vms(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Load a trace file as a canonical ``vms`` table.

    Any format :mod:`fleetlab.traces` reads to a ``vms`` table works (Alibaba GPU 2023
    openb pods, GPU 2025 DLRM, 2017/2018 batch, Azure vmtable, canonical CSV/Parquet).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    UnknownFormatError
        No reader recognises it.
    InputFormatError
        The file is not a vms table (names the table found).
    """
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{p}: no such file or directory")
    fmt = traces.detect(p)
    if fmt.table != "vms":
        raise InputFormatError(p, "not a VM/pod table", expected="a vms table", found=fmt.table)
    return traces.load(p)
