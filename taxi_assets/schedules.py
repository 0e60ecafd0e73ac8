"""Jobs and schedules: the tutorial's triggers, one per partitioning.

A job holds every asset of one partitioning, so a month's file is downloaded, cleaned, checked
and written to every monthly sink in one run, and a range of days is one run (the daily assets'
single-run backfill policy). Both schedules are off by default, see README "Schedules and sensors".
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from taxi_assets.partitions import daily_partitions, monthly_partitions
from taxi_assets.resources import TaxiSourceResource
from taxi_assets.sensors import SOURCE_ASSET
from taxi_assets.source import SourceNotPublished

MONTHLY_JOB = "monthly_yellow_trips"
DAILY_JOB = "daily_yellow_trips"


def keys_partitioned_by(assets: Sequence[dg.AssetsDefinition], partitions_def) -> list[dg.AssetKey]:
    return [key for asset in assets if asset.partitions_def == partitions_def for key in asset.keys]


def partitioned_jobs(
    assets: Sequence[dg.AssetsDefinition],
) -> dict[str, dg.UnresolvedAssetJobDefinition]:
    """One job per partitioning that has assets (a job cannot mix monthly and daily assets)."""
    jobs = {}
    for name, partitions_def, description in (
        (
            MONTHLY_JOB,
            monthly_partitions,
            "A month: download, clean, check, and every monthly sink.",
        ),
        (DAILY_JOB, daily_partitions, "A range of days from the cleaned months, in one run."),
    ):
        keys = keys_partitioned_by(assets, partitions_def)
        if keys:
            # AssetSelection.assets also selects the checks of those assets, so the blocking
            # check gates the sinks in every run these jobs make.
            jobs[name] = dg.define_asset_job(
                name,
                selection=dg.AssetSelection.assets(*keys),
                description=description,
            )
    return jobs


def build_monthly_schedule(job) -> dg.ScheduleDefinition:
    # Off: each tick downloads a file, which nobody should get by merely opening the UI.
    @dg.schedule(
        name="monthly_yellow_trips_schedule",
        job=job,
        cron_schedule="0 6 2 * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="At 06:00 on the 2nd: the newest month the source's publication lag "
        "allows to be out (downloads the file), once it is published.",
    )
    def monthly_yellow_trips_schedule(
        context: dg.ScheduleEvaluationContext, taxi_source: TaxiSourceResource
    ):
        month = taxi_source.newest_expected_month(context.scheduled_execution_time.date())
        key = f"{month}-01"
        if key in context.instance.get_materialized_partitions(SOURCE_ASSET):
            return dg.SkipReason(f"{month}, the newest month the source can have out, is taken")
        # Either way the publish sensor takes the month once it is out.
        try:
            taxi_source.remote(month)
        except SourceNotPublished as error:
            return dg.SkipReason(f"{month} is not out yet: {error}")
        except OSError as error:  # throttled or unreachable: says nothing about the month
            return dg.SkipReason(f"the source did not answer for {month}: {error}")
        return dg.RunRequest(partition_key=key, run_key=f"scheduled-{month}")

    return monthly_yellow_trips_schedule


def partitioned_schedules(jobs: dict[str, dg.UnresolvedAssetJobDefinition]) -> list:
    schedules = []
    if MONTHLY_JOB in jobs:
        schedules.append(build_monthly_schedule(jobs[MONTHLY_JOB]))
    if DAILY_JOB in jobs:
        # Off: a day also reads the next month's file, which a daily tick cannot wait for; the
        # automation sensor builds days as their files arrive. This is the tutorial's daily
        # `execution_date` trigger, for a source that publishes every day.
        schedules.append(
            dg.build_schedule_from_partitioned_job(
                jobs[DAILY_JOB],
                name="daily_yellow_trips_schedule",
                hour_of_day=7,
                default_status=dg.DefaultScheduleStatus.STOPPED,
                description="Yesterday's daily lake outputs, every day.",
            )
        )
    return schedules
