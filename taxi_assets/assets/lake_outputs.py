"""The tutorial's three GCS outputs: a Parquet object per month, a dataset by day, daily exports."""

import dagster as dg

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import day_to_file_months, daily_partitions, monthly_partitions
from taxi_assets.schema import PICKUP

# A day's trips are in its own month's file and, when filed late, in the next one; the next
# file may not be published (or loaded) yet, and the day is rebuilt when it is. Only the
# run's days are read from each month: the input holds only the rows picked up on them.
trips_for_days = dg.AssetIn(
    "yellow_trips",
    partition_mapping=day_to_file_months,
    metadata={"window_column": PICKUP},
)


# What a daily lake asset is: days, from the months' files, a range of them in one run.
daily_from_months = dict(
    partitions_def=daily_partitions,
    ins={"yellow_trips": trips_for_days},
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lake",
    kinds={"parquet"},
)


@dg.asset(
    partitions_def=monthly_partitions,
    group_name="lake",
    kinds={"parquet"},
    io_manager_key="lake_monthly_io_manager",
    pool="lake_yellow_trips_parquet",
)
def yellow_trips_parquet(yellow_trips: TripBatches) -> TripBatches:
    """The month's cleaned trips as one Parquet object: `nyc_taxi_data/YYYY-MM.parquet`."""
    return yellow_trips


@dg.asset(
    **daily_from_months, io_manager_key="lake_by_day_io_manager", pool="lake_yellow_trips_by_day"
)
def yellow_trips_by_day(yellow_trips: TripBatches) -> TripBatches:
    """Trips by pickup day, whichever month's file they came in: `tpep_pickup_date=…/` folders."""
    return yellow_trips


@dg.asset(
    **daily_from_months,
    io_manager_key="lake_export_io_manager",
    pool="lake_yellow_trips_daily_export",
)
def yellow_trips_daily_export(yellow_trips: TripBatches) -> TripBatches:
    """The tutorial's `execution_date` export: a day's trips at `YYYY/MM/DD/nyc_taxi_data.parquet`."""
    return yellow_trips
