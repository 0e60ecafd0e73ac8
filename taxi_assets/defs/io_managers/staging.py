"""Intermediate asset values as one Parquet file per asset partition on local disk.

A value is written row group by row group as its batches arrive and read back the same way,
so a step holds a few batches of the month, never the month. Steps that take `TripBatches`
get that stream; anything else (a notebook's `load_asset_value`, an asset asking for a
DataFrame) gets the rows as one pandas DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.tlc import batches as batching
from taxi_assets.storage.atomic_files import replace_file
from taxi_assets.tlc.batches import TripBatches, conformed, rebatched
from taxi_assets.dagster_private import running_step_time_window


# An asset's staging folder, where it is not its key's path: the name it keeps when its key is
# renamed, so the values staged before stay readable.
STAGING_NAME_METADATA_KEY = "staging/name"


class StagingParquetIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(
        self, key: dg.AssetKey, metadata: Mapping[str, object] | None, partition: str | None
    ) -> Path:
        name = (metadata or {}).get(STAGING_NAME_METADATA_KEY)
        folder = [str(name)] if name else key.path
        return Path(self.base_dir, *folder, f"{partition or 'all'}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, context.definition_metadata, partition)
        trips = TripBatches.of(obj)
        rows = 0

        def write(out) -> None:
            nonlocal rows
            with pq.ParquetWriter(out, trips.schema) as writer:
                for group in rebatched(trips, batching.BATCH_ROWS):
                    writer.write_table(group, row_group_size=group.num_rows)
                    rows += group.num_rows

        # Written aside and renamed, so a reader never meets half a file; a dead run's partial
        # file is removed by the next write of the partition.
        replace_file(path, write, setting="TAXI_HOME")
        context.log.info(f"{context.asset_key.to_user_string()}: staged {rows:,} rows")
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": rows,
                **trips.metadata,
            }
        )

    def load_input(self, context: dg.InputContext) -> TripBatches | pd.DataFrame:
        key = context.asset_key
        upstream = context.upstream_output
        metadata = upstream.definition_metadata if upstream else None
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        # Input metadata "window_column" asks for the rows whose date in that column falls in
        # the running step's time window, from every upstream partition mapped to it: the
        # partitions overlapping the window are required, the ones after it (late-filed trips
        # in the next month's file) are read when they exist. Only those rows are kept.
        column = context.definition_metadata.get("window_column")
        window = _naive_window(running_step_time_window(context)) if column else None
        files = []
        for partition in partitions:
            path = self._path(key, metadata, partition)
            if path.exists():
                # Opened now: a run replacing the file meanwhile cannot change what this reads.
                files.append(pq.ParquetFile(path))
            elif (
                window
                and _naive_window(
                    context.asset_partitions_def.time_window_for_partition_key(partition)
                )[0]
                >= window[1]
            ):
                context.log.info(
                    f"{key.to_user_string()} {partition} is not materialized yet: "
                    "reading without it"
                )
            else:
                raise FileNotFoundError(
                    f"{key.to_user_string()} partition {partition} is not materialized "
                    f"(no {path}); materialize it first"
                )
        if not files:
            raise FileNotFoundError(f"{key.to_user_string()}: no partition is materialized")
        # Months may differ by a column one of them brought: the others get it as nulls.
        schema = pa.unify_schemas([file.schema_arrow for file in files], promote_options="default")
        trips = TripBatches(
            schema,
            lambda: (
                conformed(batch, schema)
                for file in files
                for batch in _batches(file, column, window)
            ),
            num_rows=None if window else sum(file.metadata.num_rows for file in files),
        )
        if context.dagster_type.typing_type is TripBatches:
            return trips
        return trips.to_pandas()


def _naive_window(window: dg.TimeWindow) -> tuple[pd.Timestamp, pd.Timestamp]:
    # Trip times are naive wall-clock times; partition windows are in UTC.
    return pd.Timestamp(window.start).tz_localize(None), pd.Timestamp(window.end).tz_localize(None)


def _batches(
    file: pq.ParquetFile, column: str | None, window: tuple[pd.Timestamp, pd.Timestamp] | None
) -> Iterator[pa.RecordBatch]:
    """The file's batches; with a window, only its rows, skipping row groups wholly outside."""
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


def _may_overlap(chunk: pq.ColumnChunkMetaData, window: tuple[pd.Timestamp, pd.Timestamp]) -> bool:
    stats = chunk.statistics
    if stats is None or not stats.has_min_max:
        return True
    return pd.Timestamp(stats.min) < window[1] and pd.Timestamp(stats.max) >= window[0]
