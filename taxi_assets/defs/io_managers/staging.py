"""Intermediate asset values as one Parquet file per asset partition on local disk.

The IO manager says where a partition's file is (`{base_dir}/{asset key}/{partition}.parquet`)
and which partitions an input reads; storage/staged_files.py writes and reads the files as a
stream. Steps that take `TripBatches` get that stream; anything else (a notebook's
`load_asset_value`, an asset asking for a DataFrame) gets the rows as one pandas DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from taxi_assets.dagster_private import running_step_time_window
from taxi_assets.storage.staged_files import read_staged, write_staged
from taxi_assets.tlc.batches import TripBatches


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
        # Written aside and renamed, so a reader never meets half a file.
        rows = write_staged(path, trips, setting="TAXI_HOME")
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
        trips = read_staged(files, column, window)
        if context.dagster_type.typing_type is TripBatches:
            return trips
        return trips.to_pandas()


def _naive_window(window: dg.TimeWindow) -> tuple[pd.Timestamp, pd.Timestamp]:
    # Trip times are naive wall-clock times; partition windows are in UTC.
    return pd.Timestamp(window.start).tz_localize(None), pd.Timestamp(window.end).tz_localize(None)
