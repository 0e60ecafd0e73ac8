"""Guards shared by the warehouse IO managers (BigQuery and DuckDB).

Both replace a partition by deleting the rows whose `partition_expr` column falls in the
partition's time window and then appending the new rows. A row outside that window would
survive the next rerun's DELETE and be written again, duplicating it; so we refuse such output
instead of letting the table drift from the lake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.dagster_private import DbIOManager, TablePartitionDimension
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.tlc.schema import to_pandas


def time_window_dimensions(
    dimensions: Sequence[TablePartitionDimension] | None,
) -> list[TablePartitionDimension]:
    return [d for d in dimensions or () if isinstance(d.partitions, dg.TimeWindow)]


def wall_clock(ts) -> pd.Timestamp:
    """The partition boundary as a naive wall-clock time in the partition's own timezone."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def check_rows_inside_windows(
    obj: pd.DataFrame, dimensions: Sequence[TablePartitionDimension] | None
) -> None:
    """Raise if any row's partition column is null or outside its partition's time window."""
    if obj.empty:
        return  # a day without trips, possibly read back from the lake with no columns at all
    for dim in time_window_dimensions(dimensions):
        column = dim.partition_expr
        if column not in obj.columns:
            raise ValueError(
                f"partition_expr {column!r} must name a column of the output; columns are"
                f" {list(obj.columns)}"
            )
        start, end = dim.partitions.start, dim.partitions.end  # type: ignore[union-attr]
        values = obj[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        else:
            # Naive datetimes (and dates) are wall-clock times, as BigQuery DATETIME/DATE are.
            values = pd.to_datetime(values)
            lo, hi = wall_clock(start), wall_clock(end)
        outside = values.isna() | (values < lo) | (values >= hi)
        if outside.any():
            sample = obj.loc[outside, column].head(3).tolist()
            raise ValueError(
                f"{int(outside.sum())} of {len(obj)} rows have {column!r} outside the partition"
                f" window [{start}, {end}) (e.g. {sample}); rerunning the partition would not"
                " replace them. Filter the output to the partition's window."
            )


class WindowCheckedDbIOManager(DbIOManager):
    """DbIOManager that checks rows against their partition window before they reach the table.

    DbIOManager deletes the partition's rows before the type handler writes; checking in the
    handler would be too late on BigQuery, which has no transaction around the two. A frame is
    checked whole up front; a batch stream batch by batch as the handler reads it, which both
    handlers do before their transaction replaces the partition.
    """

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if context.has_asset_partitions and isinstance(
            obj, (pd.DataFrame, TripBatches, LakeDayFiles)
        ):
            dimensions = self._get_table_slice(context, context).partition_dimensions
            if isinstance(obj, pd.DataFrame):
                check_rows_inside_windows(obj, dimensions)
            elif isinstance(obj, LakeDayFiles):
                # For a sink that streams the rows; one that reads the files checks them itself.
                obj = dataclasses.replace(obj, trips=_checked_batches(obj.trips, dimensions))
            else:
                obj = _checked_batches(obj, dimensions)
        super().handle_output(context, obj)


def _checked_batches(trips: TripBatches, dimensions) -> TripBatches:
    def checked(batch: pa.RecordBatch) -> pa.RecordBatch:
        check_rows_inside_windows(to_pandas(batch), dimensions)
        return batch

    return trips.map(checked)


def counted(trips: TripBatches, tally: dict) -> TripBatches:
    """The stream, adding its rows to `tally["rows"]` as they pass."""
    tally["rows"] = 0

    def count(batch: pa.RecordBatch) -> pa.RecordBatch:
        tally["rows"] += batch.num_rows
        return batch

    return trips.map(count)


def written_metadata(
    context: dg.OutputContext,
    obj: pd.DataFrame | TripBatches,
    storage_kind: str,
    rows: int | None = None,
) -> dict:
    """What both warehouse type handlers report about a write: rows and the columns."""
    count_key = "dagster/partition_row_count" if context.has_partition_key else "dagster/row_count"
    if isinstance(obj, TripBatches):
        types = [(field.name, str(field.type)) for field in obj.schema]
    else:
        types = [(str(name), str(dtype)) for name, dtype in obj.dtypes.items()]
        rows = len(obj)
    columns = [dg.TableColumn(name=name, type=type_) for name, type_ in types]
    return {
        count_key: rows,
        "dagster/storage_kind": storage_kind,
        "dataframe_columns": dg.MetadataValue.table_schema(dg.TableSchema(columns)),
    }
