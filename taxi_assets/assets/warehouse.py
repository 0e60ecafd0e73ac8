"""The tutorial's GCS → BigQuery pipeline: the lake's trips, columns normalised, in a warehouse."""

import dagster as dg
import pyarrow as pa

from taxi_assets.batches import RowCount, TripBatches
from taxi_assets.partitions import daily_partitions
from taxi_assets.schema import PICKUP


def normalise_column_names(trips: TripBatches) -> TripBatches:
    """The tutorial's rule: spaces to underscores, lower case (`VendorID` → `vendorid`)."""
    names = [name.replace(" ", "_").lower() for name in trips.schema.names]
    # New names over the same column data.
    return trips.map(lambda batch: batch.rename_columns(names),
                     pa.schema([field.with_name(name) for field, name in zip(trips.schema, names)]))


@dg.asset(
    key=["ny_taxi", "yellow_trips"],
    partitions_def=daily_partitions,
    ins={"trips": dg.AssetIn("yellow_trips_by_day")},
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="warehouse",
    kinds={"bigquery", "duckdb"},
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": PICKUP.lower()},
    pool="warehouse_yellow_trips",
)
def warehouse_yellow_trips(trips: TripBatches) -> TripBatches:
    """`ny_taxi.yellow_trips`: the day-partitioned lake's trips, one warehouse partition a day."""
    return normalise_column_names(trips)


@dg.asset_check(
    asset=warehouse_yellow_trips,
    additional_ins={"lake_trips": dg.AssetIn("yellow_trips_by_day",
                                              metadata={"columns": [PICKUP]})},
    partitions_def=daily_partitions,
    description="The warehouse holds exactly as many rows for the days as the lake does.",
)
def warehouse_matches_lake(
    warehouse_yellow_trips: RowCount, lake_trips: TripBatches
) -> dg.AssetCheckResult:
    warehouse_rows = int(warehouse_yellow_trips)
    lake_rows = sum(batch.num_rows for batch in lake_trips)
    return dg.AssetCheckResult(
        passed=warehouse_rows == lake_rows,
        metadata={"warehouse_rows": warehouse_rows, "lake_rows": lake_rows},
    )
