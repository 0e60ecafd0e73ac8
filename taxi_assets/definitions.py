"""The taxi_assets code location: every asset, check, IO manager and trigger in one place."""

import dagster as dg

from taxi_assets import automation, checks, console, run_health, schedules, sensors
from taxi_assets.assets import clean, lake_outputs, postgres_table, raw_trips, warehouse
from taxi_assets.profiles import resources_for_profile
from taxi_assets.resources import configured_profile


assets = automation.with_downstream_automation(
    dg.load_assets_from_modules([raw_trips, clean, postgres_table, lake_outputs, warehouse])
)
jobs = schedules.partitioned_jobs(assets)

defs = dg.Definitions(
    assets=assets,
    jobs=list(jobs.values()),
    schedules=schedules.partitioned_schedules(jobs),
    sensors=sensors.all_sensors(jobs),
    # One process per run, not per step: a run's steps are a chain over staged Parquet, and
    # with a process per step a 2-core machine spends most of a backfill importing pandas.
    # (Dagster's, saying which run holds the pool a step waits for.)
    executor=run_health.in_process_executor,
    asset_checks=[checks.yellow_trips_quality, warehouse.warehouse_matches_lake],
    resources=resources_for_profile(configured_profile()),
    # Chosen in the run config by `python -m taxi_assets.cli run`; other runs log as Dagster does.
    loggers={console.LOGGER_NAME: console.terminal_logger},
)
