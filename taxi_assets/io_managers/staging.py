"""Intermediate asset values as one Parquet file per asset partition on local disk."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.schema import to_pandas


class StagingParquetIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(self, key: dg.AssetKey, partition: str | None) -> Path:
        return Path(self.base_dir, *key.path, f"{partition or 'all'}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        # Written aside and renamed, so a reader never meets half a file.
        pq.write_table(pa.Table.from_pandas(obj, preserve_index=False), partial)
        os.replace(partial, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        # Input metadata may mark the last N upstream partitions as optional: data that is
        # welcome when it exists (late-filed trips in the next month's file) but not required.
        optional = partitions[len(partitions) - context.definition_metadata.get("optional_trailing_partitions", 0):]
        tables = []
        for partition in partitions:
            path = self._path(key, partition)
            if path.exists():
                tables.append(pq.read_table(path))
            elif partition in optional:
                context.log.info(f"{key.to_user_string()} {partition} is not materialized yet: "
                                 "reading without it")
            else:
                raise FileNotFoundError(
                    f"{key.to_user_string()} partition {partition} is not materialized "
                    f"(no {path}); materialize it first"
                )
        return to_pandas(pa.concat_tables(tables))
