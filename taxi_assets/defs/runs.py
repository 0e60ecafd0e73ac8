"""How every run executes, and the logger `python -m taxi_assets.cli run` prints with."""

import dagster as dg

from taxi_assets import console, run_health


@dg.definitions
def runs() -> dg.Definitions:
    return dg.Definitions(
        # One process per run, not per step: a run's steps are a chain over staged Parquet, and
        # with a process per step a 2-core machine spends most of a backfill importing pandas.
        # (Dagster's, saying which run holds the pool a step waits for.)
        executor=run_health.in_process_executor,
        # Chosen in the run config by `python -m taxi_assets.cli run`; other runs log as
        # Dagster does.
        loggers={console.LOGGER_NAME: console.terminal_logger},
    )
