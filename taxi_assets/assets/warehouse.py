"""The tutorial's GCS → BigQuery pipeline: the lake's trips, columns normalised, in a warehouse."""

import dagster as dg
import pyarrow as pa

from taxi_assets.batches import RowsPerDay, TripBatches, rows_per_day
from taxi_assets.dagster_private import check_evaluation_for_partition
from taxi_assets.partitions import daily_partitions
from taxi_assets.schema import PICKUP


def normalise_column_names(trips: TripBatches) -> TripBatches:
    """The tutorial's rule: spaces to underscores, lower case (`VendorID` → `vendorid`)."""
    names = [name.replace(" ", "_").lower() for name in trips.schema.names]
    # New names over the same column data.
    return trips.map(
        lambda batch: batch.rename_columns(names),
        pa.schema([field.with_name(name) for field, name in zip(trips.schema, names)]),
    )


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
    additional_ins={
        "lake_trips": dg.AssetIn("yellow_trips_by_day", metadata={"columns": [PICKUP]})
    },
    partitions_def=daily_partitions,
    description="The warehouse holds exactly as many rows for each day as the lake does.",
)
def warehouse_matches_lake(
    context: dg.AssetCheckExecutionContext,
    warehouse_yellow_trips: RowsPerDay,
    lake_trips: TripBatches,
) -> None:
    """One evaluation per day, each recorded against its own partition.

    A range of days runs as one run (single-run backfill), and an `AssetCheckResult` there can
    only be recorded without a partition, which leaves each day's planned evaluation without an
    outcome: the UI then shows the days as skipped and the check as passed at once. An
    evaluation that names its day settles that day's entry.
    """
    # Counted by the warehouse, and over the lake's pickup column batch by batch.
    warehouse_rows, lake_rows = warehouse_yellow_trips, rows_per_day(lake_trips, PICKUP)
    [check_key] = [spec.key for spec in context.check_specs]
    op_context = context.op_execution_context
    for day in op_context.partition_keys:
        in_warehouse, in_lake = warehouse_rows.get(day, 0), lake_rows.get(day, 0)
        op_context.log_event(
            check_evaluation_for_partition(
                context.instance,
                check_key,
                day,
                passed=in_warehouse == in_lake,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"warehouse_rows": in_warehouse, "lake_rows": in_lake},
            )
        )
