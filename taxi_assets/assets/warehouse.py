"""The tutorial's GCS → BigQuery pipeline: the lake's trips, columns normalised, in a warehouse."""

import dagster as dg
import pandas as pd

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
    description="The warehouse holds exactly as many rows for the days as the lake does.",
)
def warehouse_matches_lake(
    warehouse_yellow_trips: pd.DataFrame, lake_trips: pd.DataFrame
) -> dg.AssetCheckResult:
    warehouse_rows, lake_rows = len(warehouse_yellow_trips), len(lake_trips)
    return dg.AssetCheckResult(
        passed=warehouse_rows == lake_rows,
        metadata={"warehouse_rows": warehouse_rows, "lake_rows": lake_rows},
    )
