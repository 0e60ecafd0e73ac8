"""The tutorial's GCS → BigQuery pipeline: the lake's trips, columns normalised, in a warehouse."""

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.dagster_private import check_evaluation_for_partition
from taxi_assets.partitions import daily_partitions
from taxi_assets.schema import PICKUP


def normalise_column_names(trips: pd.DataFrame) -> pd.DataFrame:
    """The tutorial's rule: spaces to underscores, lower case (`VendorID` → `vendorid`)."""
    normalised = trips.copy(deep=False)  # new names over the same column data
    normalised.columns = [name.replace(" ", "_").lower() for name in normalised.columns]
    return normalised


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
def warehouse_yellow_trips(trips: pd.DataFrame) -> pd.DataFrame:
    """`ny_taxi.yellow_trips`: the day-partitioned lake's trips, one warehouse partition a day."""
    return normalise_column_names(trips)


@dg.asset_check(
    asset=warehouse_yellow_trips,
    additional_ins={"lake_trips": dg.AssetIn("yellow_trips_by_day",
                                              metadata={"columns": [PICKUP]})},
    partitions_def=daily_partitions,
    description="The warehouse holds exactly as many rows for each day as the lake does.",
)
def warehouse_matches_lake(
    context: dg.AssetCheckExecutionContext, warehouse_yellow_trips: pd.DataFrame,
    lake_trips: pd.DataFrame,
) -> None:
    """One evaluation per day, each recorded against its own partition.

    A range of days runs as one run (single-run backfill), and an `AssetCheckResult` there can
    only be recorded without a partition, which leaves each day's planned evaluation without an
    outcome: the UI then shows the days as skipped and the check as passed at once. An
    evaluation that names its day settles that day's entry.
    """
    warehouse_rows = _rows_per_day(warehouse_yellow_trips, PICKUP.lower())
    lake_rows = _rows_per_day(lake_trips, PICKUP)
    [check_key] = [spec.key for spec in context.check_specs]
    op_context = context.op_execution_context
    for day in op_context.partition_keys:
        in_warehouse, in_lake = warehouse_rows.get(day, 0), lake_rows.get(day, 0)
        op_context.log_event(check_evaluation_for_partition(
            context.instance, check_key, day, passed=in_warehouse == in_lake,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"warehouse_rows": in_warehouse, "lake_rows": in_lake},
        ))


def _rows_per_day(trips: pd.DataFrame, pickup: str) -> dict[str, int]:
    if trips.empty:  # an empty day may come back without columns
        return {}
    counts = pc.value_counts(pc.cast(pa.array(trips[pickup]), pa.date32()))
    return {str(count["values"]): count["counts"] for count in counts.to_pylist()}
