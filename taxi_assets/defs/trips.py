"""One trip dataset's pipeline, built from its definition (datasets.py), read top to bottom.

The month's file → its trips in canonical columns → the cleaned trips, checked → Postgres and
the month's Parquet object; the cleaned months → the days' lake layouts → the warehouse. Then
the jobs, schedules and sensors that run it.
"""

from __future__ import annotations

import dagster as dg

from taxi_assets.defs import automation, checks, jobs, schedules, sensors
from taxi_assets.defs.assets.clean import build_cleaned_trips
from taxi_assets.defs.assets.lake_outputs import build_lake_outputs, build_month_versions_check
from taxi_assets.defs.assets.postgres_table import build_postgres_table
from taxi_assets.defs.assets.raw_trips import build_raw_trips
from taxi_assets.defs.assets.warehouse import build_warehouse
from taxi_assets.datasets import DATASETS, TripDataset


def trip_dataset_definitions(dataset: TripDataset) -> dg.Definitions:
    warehouse, warehouse_matches_lake = build_warehouse(dataset)
    assets = automation.with_downstream_automation(
        [
            build_raw_trips(dataset),
            build_cleaned_trips(dataset),
            build_postgres_table(dataset),
            *build_lake_outputs(dataset),
            warehouse,
        ],
        cleaned=dg.AssetKey(dataset.cleaned_asset),
    )
    monthly_job, daily_job = jobs.build_jobs(dataset, assets)
    return dg.Definitions(
        assets=assets,
        asset_checks=[
            checks.build_quality_checks(dataset),
            build_month_versions_check(dataset),
            warehouse_matches_lake,
        ],
        jobs=[monthly_job, daily_job],
        schedules=[
            schedules.build_monthly_schedule(dataset, monthly_job),
            schedules.build_daily_schedule(dataset, daily_job),
        ],
        sensors=[
            sensors.build_publish_sensor(dataset, monthly_job),
            sensors.build_reupload_sensor(dataset, monthly_job),
        ],
    )


@dg.definitions
def trip_pipelines() -> dg.Definitions:
    """Every dataset's pipeline."""
    return dg.Definitions.merge(
        *(trip_dataset_definitions(dataset) for dataset in DATASETS.values())
    )
