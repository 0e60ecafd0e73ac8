"""Intermediate asset values as one Parquet file per asset partition on local disk.

Runs execute in one process (see definitions.py), where every step of a month reads what the
step before it wrote. The last table written is therefore also kept in memory and handed to
readers as long as the file on disk is still the one it was written to; anything else is
read from disk.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from taxi_assets.atomic_files import replace_file
from taxi_assets.schema import to_pandas


class _LastWritten:
    """The most recent table this process wrote, with the file identity it was written to.

    A later run (the days after their month) may take it once; then it is let go, so a
    backfill of many months in one process never carries one month's table into the next.
    """

    # One tuple, replaced whole, so threads running runs side by side never mix two entries.
    entry: tuple[Path, tuple[int, int], pa.Table, str] | None = None

    @classmethod
    def remember(cls, path: Path, table: pa.Table, run_id: str) -> None:
        cls.entry = (path, _stamp(path), table, run_id)

    @classmethod
    def read(cls, path: Path, run_id: str) -> pa.Table:
        entry = cls.entry
        if entry and entry[0] == path and entry[1] == _stamp(path):
            if entry[3] != run_id:
                cls.entry = None
            return entry[2]
        return pq.read_table(path)


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_ino


class StagingParquetIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(self, key: dg.AssetKey, partition: str | None) -> Path:
        return Path(self.base_dir, *key.path, f"{partition or 'all'}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, partition)
        table = pa.Table.from_pandas(obj, preserve_index=False)
        # Written aside and renamed, so a reader never meets half a file; a dead run's partial
        # file is removed by the next write of the partition.
        replace_file(path, lambda out: pq.write_table(table, out), size_hint=table.nbytes,
                     setting="TAXI_HOME")
        _LastWritten.remember(path, table, context.run_id)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        key = context.asset_key
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        # Input metadata "window_column" asks for the rows whose date in that column falls in
        # the running step's time window, from every upstream partition mapped to it: the
        # partitions overlapping the window are required, the ones after it (late-filed trips
        # in the next month's file) are read when they exist. Only those rows are kept.
        column = context.definition_metadata.get("window_column")
        window = _naive_window(context.step_context.partition_time_window) if column else None
        tables = []
        for partition in partitions:
            path = self._path(key, partition)
            if path.exists():
                table = _LastWritten.read(path, context.step_context.run_id)
                tables.append(_rows_in(table, column, window) if window else table)
            elif window and _naive_window(context.asset_partitions_def.time_window_for_partition_key(
                    partition))[0] >= window[1]:
                context.log.info(f"{key.to_user_string()} {partition} is not materialized yet: "
                                 "reading without it")
            else:
                raise FileNotFoundError(
                    f"{key.to_user_string()} partition {partition} is not materialized "
                    f"(no {path}); materialize it first"
                )
        return to_pandas(pa.concat_tables(tables))


def _naive_window(window: dg.TimeWindow) -> tuple[pd.Timestamp, pd.Timestamp]:
    # Trip times are naive wall-clock times; partition windows are in UTC.
    return pd.Timestamp(window.start).tz_localize(None), pd.Timestamp(window.end).tz_localize(None)


def _rows_in(table: pa.Table, column: str, window: tuple[pd.Timestamp, pd.Timestamp]) -> pa.Table:
    dates = table[column]
    start, end = (pa.scalar(t.to_pydatetime(), dates.type) for t in window)
    return table.filter(pc.and_(pc.greater_equal(dates, start), pc.less(dates, end)))
