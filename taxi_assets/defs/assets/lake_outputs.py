"""The tutorial's three GCS outputs: a Parquet object per month, a dataset by day, daily exports."""

import dagster as dg

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.datasets import TripDataset
from taxi_assets.defs.io_managers.lake_writers import (
    DATE_COLUMN_METADATA_KEY,
    FOLLOWS_POSTGRES_METADATA_KEY,
    NAME_METADATA_KEY,
    PARTITION_COLUMN_METADATA_KEY,
)
from taxi_assets.defs.partitions import day_to_file_months, daily_partitions, monthly_partitions


def build_lake_outputs(dataset: TripDataset) -> list[dg.AssetsDefinition]:
    cleaned, pickup = dataset.cleaned_asset, dataset.pickup
    # A day's trips are in its own month's file and, when filed late, in the next one; the
    # next file may not be published (or loaded) yet, and the day is rebuilt when it is. Only
    # the run's days are read from each month: the input holds only the rows picked up on them.
    trips_for_days = dg.AssetIn(
        cleaned, partition_mapping=day_to_file_months, metadata={"window_column": pickup}
    )
    # What a daily lake asset is: days, from the months' files, a range of them in one run.
    daily_from_months = dict(
        partitions_def=daily_partitions,
        ins={"trips": trips_for_days},
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=dataset.group("lake"),
        kinds={"parquet"},
    )

    # One version of a month in its monthly sinks: the object is replaced only once the
    # month's Postgres partition is (one transaction), so a failed Postgres load leaves both
    # at the last good version. The object's write is one atomic replace after it; a run that
    # dies between the two leaves a record of Postgres being ahead (month_publishes.py).
    @dg.asset(
        name=dataset.lake_month_asset,
        ins={"trips": dg.AssetIn(cleaned)},
        deps=[dataset.postgres_asset],
        partitions_def=monthly_partitions,
        group_name=dataset.group("lake"),
        kinds={"parquet"},
        io_manager_key="lake_monthly_io_manager",
        metadata={
            NAME_METADATA_KEY: dataset.lake_name,
            FOLLOWS_POSTGRES_METADATA_KEY: dataset.postgres_table,
        },
        pool=f"lake_{dataset.lake_month_asset}",
        description=f"The month's cleaned {dataset.title} trips as one Parquet object: "
        f"`{dataset.lake_name}/YYYY-MM.parquet`.",
    )
    def month_object(trips: TripBatches) -> TripBatches:
        return trips

    @dg.asset(
        name=dataset.lake_by_day_asset,
        **daily_from_months,
        io_manager_key="lake_by_day_io_manager",
        metadata={
            NAME_METADATA_KEY: dataset.lake_by_day_name,
            DATE_COLUMN_METADATA_KEY: pickup,
            PARTITION_COLUMN_METADATA_KEY: dataset.pickup_date,
        },
        pool=f"lake_{dataset.lake_by_day_asset}",
        description=f"{dataset.title.capitalize()} trips by pickup day, whichever month's file "
        f"they came in: `{dataset.lake_by_day_name}/{dataset.pickup_date}=…/` folders.",
    )
    def by_day(trips: TripBatches) -> TripBatches:
        return trips

    @dg.asset(
        name=dataset.lake_export_asset,
        **daily_from_months,
        io_manager_key="lake_export_io_manager",
        metadata={NAME_METADATA_KEY: dataset.lake_name, DATE_COLUMN_METADATA_KEY: pickup},
        pool=f"lake_{dataset.lake_export_asset}",
        description="The tutorial's `execution_date` export: a day's trips at "
        f"`YYYY/MM/DD/{dataset.lake_name}.parquet`.",
    )
    def daily_export(trips: TripBatches) -> TripBatches:
        return trips

    return [month_object, by_day, daily_export]
