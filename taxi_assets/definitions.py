"""The taxi_assets code location: every asset, check, IO manager and trigger in one place."""

import os

import dagster as dg

from taxi_assets import checks, schedules, sensors
from taxi_assets.assets import clean, lake, postgres, source
from taxi_assets.io_managers.lake import (
    DailyDatasetIOManager,
    DailyExportIOManager,
    MonthlyParquetIOManager,
)
from taxi_assets.io_managers.postgres import PostgresPandasIOManager
from taxi_assets.io_managers.staging import StagingParquetIOManager
from taxi_assets.resources import gcp_resources, local_resources

PROFILES = {"local": local_resources, "gcp": gcp_resources}


def resources_for_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"TAXI_PROFILE={profile!r} is not a profile; choose one of {sorted(PROFILES)}")
    settings = PROFILES[profile]()
    return {
        "taxi_source": settings["taxi_source"],
        "io_manager": StagingParquetIOManager(base_dir=settings["staging_dir"]),
        "postgres_io_manager": PostgresPandasIOManager(postgres=settings["postgres"]),
        "lake_monthly_io_manager": MonthlyParquetIOManager(lake=settings["lake"]),
        "lake_by_day_io_manager": DailyDatasetIOManager(lake=settings["lake"]),
        "lake_export_io_manager": DailyExportIOManager(lake=settings["lake"]),
    }


assets = sensors.with_downstream_automation(
    dg.load_assets_from_modules([source, clean, postgres, lake]))
jobs = schedules.partitioned_jobs(assets)

defs = dg.Definitions(
    assets=assets,
    jobs=list(jobs.values()),
    schedules=schedules.partitioned_schedules(jobs),
    sensors=sensors.all_sensors(jobs),
    # One process per run, not per step: a run's steps are a chain over staged Parquet, and
    # with a process per step a 2-core machine spends most of a backfill importing pandas.
    executor=dg.in_process_executor,
    asset_checks=[checks.yellow_trips_quality],
    resources=resources_for_profile(os.environ.get("TAXI_PROFILE", "local")),
)
