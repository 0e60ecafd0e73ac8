"""The tutorial's three GCS outputs: a Parquet object per month, a dataset by day, daily exports."""

import dagster as dg

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.datasets import TripDataset
from taxi_assets.defs.io_managers.lake_writers import LakeLayout
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

    # One version of a month in its monthly sinks: the object is written beside the month's
    # Postgres partition, in that asset's step, and published with its swap; this step then
    # only describes it (storage/month_versions.py).
    @dg.asset(
        name=dataset.lake_month_asset,
        ins={"trips": dg.AssetIn(cleaned)},
        deps=[dataset.postgres_asset],
        partitions_def=monthly_partitions,
        group_name=dataset.group("lake"),
        kinds={"parquet"},
        io_manager_key="lake_monthly_io_manager",
        metadata=LakeLayout(
            name=dataset.lake_name, follows_postgres_table=dataset.postgres_table
        ).as_metadata(),
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
        metadata=LakeLayout(
            name=dataset.lake_by_day_name, date_column=pickup, partition_column=dataset.pickup_date
        ).as_metadata(),
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
        metadata=LakeLayout(name=dataset.lake_name, date_column=pickup).as_metadata(),
        pool=f"lake_{dataset.lake_export_asset}",
        description="The tutorial's `execution_date` export: a day's trips at "
        f"`YYYY/MM/DD/{dataset.lake_name}.parquet`.",
    )
    def daily_export(trips: TripBatches) -> TripBatches:
        return trips

    return [month_object, by_day, daily_export]


def build_month_versions_check(dataset: TripDataset) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dataset.lake_month_asset,
        name="lake_month_matches_postgres",
        required_resource_keys={"lake_monthly_io_manager"},
        description=f"Every month's lake object holds the version {dataset.postgres_table} "
        "holds. Publishes first any object a run killed after its Postgres swap left staged. "
        "Warns only: a month behind is one whose Postgres table was loaded without the lake "
        "(or whose staged object was lost); nothing downstream reads the monthly object, and "
        "the month's next run repairs it.",
    )
    def lake_month_matches_postgres(context: dg.AssetCheckExecutionContext):
        monthly = context.resources.lake_monthly_io_manager
        behind = monthly.versions_behind(dataset.postgres_table, context.log)
        return dg.AssetCheckResult(
            passed=not behind,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(row.describe(dataset.postgres_table) for row in behind) or None,
            metadata={
                "months_behind": [row.month for row in behind],
                "versions": {
                    row.month: {"postgres": row.postgres_run, "lake": row.lake_run}
                    for row in behind
                },
            },
        )

    return lake_month_matches_postgres
