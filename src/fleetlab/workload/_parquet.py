"""Cheap Parquet encoding of synthetic chunks, written in a background thread.

Synthetic columns are high-cardinality numbers, where the Parquet defaults (dictionary
pages, min/max statistics on every column, a definition level per value, lz4 on
everything) cost more CPU than drawing the rows. So, per column:

* columns that synthesis always fills are declared non-nullable (no definition levels);
* integers: ``DELTA_BINARY_PACKED`` (ids, counts and token counts pack to a few bits),
  no compression on top (it gains nothing on bit-packed data);
* floats: ``BYTE_STREAM_SPLIT`` then lz4 (the exponent bytes compress, the mantissas
  do not);
* strings (entity names, ids): dictionary + lz4 (pyarrow falls back to plain pages when
  the dictionary grows too large);
* statistics only on the time column (row-group pruning on time ranges).

pyarrow releases the GIL while it encodes, so the writer runs in one background thread
while the next chunk is drawn; at most one chunk waits to be written.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

# pyarrow ships no py.typed and pyarrow-stubs is not in the dev extra
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from fleetlab.errors import FleetlabError


def writer_options(schema: pa.Schema, time_column: str) -> dict[str, Any]:
    """``ParquetWriter`` keyword options for a synthetic chunk's schema (see the module doc)."""
    compression: dict[str, str] = {}
    encoding: dict[str, str] = {}
    dictionary: list[str] = []
    for field in schema:
        if pa.types.is_integer(field.type):
            encoding[field.name] = "DELTA_BINARY_PACKED"
            compression[field.name] = "none"
        elif pa.types.is_floating(field.type):
            encoding[field.name] = "BYTE_STREAM_SPLIT"
            compression[field.name] = "lz4"
        else:
            dictionary.append(field.name)
            compression[field.name] = "lz4"
    return {
        "compression": compression,
        "column_encoding": encoding,
        "use_dictionary": dictionary,
        "write_statistics": [time_column] if time_column in schema.names else False,
    }


def required_schema(schema: pa.Schema, filled: set[str]) -> pa.Schema:
    """``schema`` with the columns in ``filled`` (never null in synthesis) non-nullable."""
    return pa.schema([f.with_nullable(f.name not in filled) for f in schema])


class ChunkWriter:
    """Writes polars chunks to one Parquet file in a background thread, in order."""

    def __init__(self, path: Path, time_column: str, filled: set[str]) -> None:
        self.path = path
        self.time_column = time_column
        self.filled = filled
        self.schema: pa.Schema | None = None
        self.writer: pq.ParquetWriter | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetlab-parquet")
        self.pending: Future[None] | None = None

    def _arrow(self, chunk: pl.DataFrame) -> pa.Table:
        """``chunk`` as arrow, without converting all-null columns (a costly string cast)."""
        if self.schema is None:
            base = chunk.head(0).to_arrow().schema
            self.schema = required_schema(base, self.filled & set(base.names))
            self.writer = pq.ParquetWriter(
                self.path, self.schema, **writer_options(self.schema, self.time_column)
            )
        n = chunk.height
        empty = {c for c in chunk.columns if chunk.get_column(c).null_count() == n}
        for name in self.filled & set(chunk.columns):
            if chunk.get_column(name).null_count():
                raise FleetlabError(f"synthetic column {name!r} has nulls (expected none)")
        full = chunk.select([c for c in chunk.columns if c not in empty]).to_arrow()
        arrays = [
            pa.nulls(n, f.type) if f.name in empty else full.column(f.name) for f in self.schema
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def submit(self, chunk: pl.DataFrame) -> None:
        """Queue ``chunk``; waits for the previous chunk's write first (bounded memory)."""
        table = self._arrow(chunk)
        self.wait()
        assert self.writer is not None
        self.pending = self.pool.submit(self.writer.write_table, table)

    def wait(self) -> None:
        """Wait until every queued chunk is written (re-raises a write error)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    @property
    def started(self) -> bool:
        return self.writer is not None

    def close(self) -> None:
        """Finish the queued write and close the file (also after an error)."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
            if self.writer is not None:
                writer, self.writer = self.writer, None
                writer.close()
