"""The taxi_assets code location: every dataset's pipeline, and what they share."""

import dagster as dg

from taxi_assets import console, run_health, settings
from taxi_assets.defs import sensors
from taxi_assets.defs.analytics.dbt import analytics_definitions
from taxi_assets.datasets import DATASETS
from taxi_assets.defs.profiles import resources_for_profile
from taxi_assets.defs.trips import trip_dataset_definitions
from taxi_assets.defs.zones import taxi_zones_definitions

defs = dg.Definitions.merge(
    *(trip_dataset_definitions(dataset) for dataset in DATASETS.values()),
    taxi_zones_definitions(),
    analytics_definitions(),
    dg.Definitions(
        sensors=[sensors.automation_sensor],
        # One process per run, not per step: a run's steps are a chain over staged Parquet, and
        # with a process per step a 2-core machine spends most of a backfill importing pandas.
        # (Dagster's, saying which run holds the pool a step waits for.)
        executor=run_health.in_process_executor,
        resources=resources_for_profile(settings.profile()),
        # Chosen in the run config by `python -m taxi_assets.cli run`; other runs log as
        # Dagster does.
        loggers={console.LOGGER_NAME: console.terminal_logger},
    ),
)
