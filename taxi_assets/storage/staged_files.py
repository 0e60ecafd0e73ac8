"""Intermediate trips as one Parquet file per partition on local disk, streamed both ways.

A file is written row group by row group as its batches arrive, aside and renamed whole
(atomic_files.replace_file), and read back the same way, so a step holds a few batches of the
month, never the month.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.storage.atomic_files import replace_file
from taxi_assets.tlc import batches as batching
from taxi_assets.tlc.batches import TripBatches, conformed, rebatched

Window = tuple[pd.Timestamp, pd.Timestamp]
# The footer entry holding what the stream's producer learned while its batches passed.
PRODUCER_METADATA_KEY = "taxi_assets.producer_metadata"


def write_staged(path: Path, trips: TripBatches, setting: str) -> int:
    """The stream as the one file at `path`; returns its rows. What the stream's producer
    learned while its batches passed (`trips.metadata`) goes in the file's footer, with the
    rows it is about. A dead run's partial file is removed by the next write of the path;
    `setting` moves the folder, for errors."""
    rows = 0

    def write(out) -> None:
        nonlocal rows
        with pq.ParquetWriter(out, trips.schema) as writer:
            for group in rebatched(trips, batching.BATCH_ROWS):
                writer.write_table(group, row_group_size=group.num_rows)
                rows += group.num_rows
            if trips.metadata:
                writer.add_key_value_metadata(
                    {PRODUCER_METADATA_KEY: json.dumps(trips.metadata, default=str)}
                )

    replace_file(path, write, setting=setting)
    return rows


def read_staged(
    files: list[pq.ParquetFile], column: str | None = None, window: Window | None = None
) -> TripBatches:
    """The files' rows as one stream; with `column` and `window`, only the rows whose
    `column` falls in it, skipping row groups wholly outside. Months may differ by a column
    one of them brought: the others get it as nulls."""
    schema = pa.unify_schemas([file.schema_arrow for file in files], promote_options="default")
    return TripBatches(
        schema,
        lambda: (
            conformed(batch, schema) for file in files for batch in _batches(file, column, window)
        ),
        num_rows=None if window else sum(file.metadata.num_rows for file in files),
        # What the producer learned about the rows holds for one whole file only.
        metadata=_producer_metadata(files[0]) if len(files) == 1 and not window else {},
    )


def _producer_metadata(file: pq.ParquetFile) -> dict:
    stored = (file.metadata.metadata or {}).get(PRODUCER_METADATA_KEY.encode())
    return json.loads(stored) if stored else {}


def _batches(
    file: pq.ParquetFile, column: str | None, window: Window | None
) -> Iterator[pa.RecordBatch]:
    groups = list(range(file.num_row_groups))
    if window:
        index = file.schema_arrow.get_field_index(column)
        groups = [
            g for g in groups if _may_overlap(file.metadata.row_group(g).column(index), window)
        ]
    if not groups:
        return
    batches = file.iter_batches(batch_size=batching.BATCH_ROWS, row_groups=groups)
    if not window:
        yield from batches
        return
    dates_type = file.schema_arrow.field(column).type
    start, end = (pa.scalar(t.to_pydatetime(), dates_type) for t in window)
    for batch in batches:
        dates = batch.column(column)
        inside = batch.filter(pc.and_(pc.greater_equal(dates, start), pc.less(dates, end)))
        if inside.num_rows:
            yield inside


def _may_overlap(chunk: pq.ColumnChunkMetaData, window: Window) -> bool:
    stats = chunk.statistics
    if stats is None or not stats.has_min_max:
        return True
    return pd.Timestamp(stats.min) < window[1] and pd.Timestamp(stats.max) >= window[0]
