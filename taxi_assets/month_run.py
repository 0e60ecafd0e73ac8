"""`make run`: a month of each chosen dataset, its monthly job then its days' job, and for all of
them the zones before and the dbt models after. Each run is a run of workspace.yaml's code
location, created as the UI creates one, but executed in this process: `make dev` lists them
under their job and re-executes them."""

from __future__ import annotations

import http.client
import sys

import dagster as dg
import pyarrow as pa

from taxi_assets import console, settings
from taxi_assets.datasets import DATASETS, TripDataset
from taxi_assets.defs.resources import PROJECT_ROOT
from taxi_assets.dev_server import ui_url

LOCATION_NAME = "taxi_assets"  # the code location: workspace.yaml's, and the `dg` project's


def month_partitions(dataset: TripDataset, month: str) -> tuple[str, list[str]]:
    """The month's partition key and its days; exits naming --month when it is not one."""
    from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
    from taxi_assets.defs.resources import MonthNotCarried, configured_source
    from taxi_assets.tlc.source import SourceNotPublished

    key = f"{month}-01"
    try:
        configured_source().check_month(dataset, month)
    except (MonthNotCarried, SourceNotPublished) as error:
        sys.exit(f"--month {month}: {error}")
    days = daily_partitions.get_partition_keys_in_time_window(
        monthly_partitions.time_window_for_partition_key(key)
    )
    return key, days


def range_tags(days: list[str]) -> dict[str, str]:
    """A run over `days`, as a single-run backfill launches it."""
    return {
        "dagster/asset_partition_range_start": days[0],
        "dagster/asset_partition_range_end": days[-1],
    }


def check_published(dataset: TripDataset, month: str) -> None:
    """Exit, before any run is created, when the source answers that it lacks the month's file:
    a month not published is no failed run in the UI, and no sink was touched. A source that
    does not answer is left to the run, whose download retries and says why."""
    from taxi_assets.defs.resources import configured_source
    from taxi_assets.tlc.source import SourceNotPublished

    try:
        configured_source().remote(dataset, month)
    except SourceNotPublished as error:
        sys.exit(
            f"--month {month}: {error}\nNothing was run; every sink is as it was.\n"
            f"Setting that fixes it: {console.SETTING_FOR_ERROR['URLError']}"
        )
    except (OSError, ValueError, http.client.HTTPException):
        pass


def run(
    month: str,
    datasets: list[TripDataset],
    daily_assets: list[str] | None = None,
    level: str = "INFO",
) -> list[dg.ExecutionResult]:
    """For each dataset, the month's monthly job, then its days as one single-run backfill of
    the daily job; for all of them, the zones before and the dbt models after.

    Each run is created as a UI launch creates it and executed here, in one process (the
    in-process executor), without keeping outputs in memory. `daily_assets` (of one dataset's
    day run; the bench's) narrows the day runs to those assets (default: all of them). Returns the (closed) results; when a run
    fails, ends with its cause and exits.
    """
    from taxi_assets.dagster_private import (
        WorkspaceLocation,
        execute_in_process,
        pooled_storage_connections,
    )
    from taxi_assets.defs.resources import configured_source, source_run_config
    from taxi_assets.run_health import prepare_run

    planned = [(dataset, *month_partitions(dataset, month)) for dataset in datasets]
    for dataset in datasets:
        check_published(dataset, month)
    day_selection = [dg.AssetKey.from_user_string(a) for a in daily_assets or []] or None
    runs = [
        run
        for dataset, key, days in planned
        for run in (
            (dataset.monthly_job, {"dagster/partition": key}, None),
            (dataset.daily_job, range_tags(days), day_selection),
        )
    ]
    if daily_assets is None and len(datasets) == len(DATASETS):
        # Every dataset: the zones first, and the dbt models over the month's days last.
        from taxi_assets.defs.analytics.dbt import ANALYTICS_JOB
        from taxi_assets.defs.zones import ZONES_JOB

        days = planned[0][2]
        runs = [(ZONES_JOB, {}, None), *runs, (ANALYTICS_JOB, range_tags(days), None)]
    instance = dg.DagsterInstance.get()
    results = []
    with (
        pooled_storage_connections(instance),
        WorkspaceLocation.open(
            PROJECT_ROOT / "workspace.yaml", LOCATION_NAME, instance
        ) as location,
    ):
        # The module the location has just loaded: the job's pools, for prepare_run.
        from taxi_assets.definitions import defs

        for job, tags, selection in runs:
            prepare_run(
                instance, defs.resolve_job_def(job), runs_are_local=settings.profile() == "local"
            )  # see run_health
            dagster_run = location.create_run(
                instance,
                job,
                tags=tags,
                asset_selection=selection,
                # The source goes with the run: a re-execution from the UI reads the same files.
                run_config=console.run_config(level) | source_run_config(configured_source()),
            )
            print(console.run_line(dagster_run), flush=True)
            with execute_in_process(dagster_run, instance) as result:
                results.append(result)
            # Hand the run's freed buffers back to the OS before the next run, so a backfill of
            # many months in one process stays at one month's peak.
            pa.default_memory_pool().release_unused()
            if not result.success:
                print(
                    "\n" + "\n".join(console.failure_summary(result, ui_url(), results[:-1])),
                    flush=True,
                )
                sys.exit(1)
    return results


def print_locations(month: str, datasets: list[TripDataset], results: list, seconds: float) -> None:
    table = console.closing_table(
        month, console.landed(results), seconds, datasets, console.outside_window(results)
    )
    print("\n" + "\n".join(table))
    ui = ui_url()
    if settings.profile() == "local":
        server = settings.value("DAGSTER_PG_URL").split("?")[0]
        print(f"PostgreSQL: {server} (psql it); the runs: `make dev`, then {ui}")
    for dataset in datasets:
        print(
            f"The {dataset.title} month in the UI: {ui}/assets/{dataset.cleaned_asset}"
            f"?view=partitions&partition={month}-01"
        )
