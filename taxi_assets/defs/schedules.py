"""Schedules: the tutorial's triggers, one per dataset and partitioning, each running its job
(jobs.py). They are off by default, see README "Schedules and sensors".
"""

from __future__ import annotations

import dagster as dg

from taxi_assets.datasets import TripDataset
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.tlc.source import SourceNotPublished


def build_monthly_schedule(dataset: TripDataset, job) -> dg.ScheduleDefinition:
    # Off: each tick downloads a file, which nobody should get by merely opening the UI.
    @dg.schedule(
        name=f"{dataset.monthly_job}_schedule",
        job=job,
        cron_schedule="0 6 2 * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="At 06:00 on the 2nd: the newest month the source's publication lag "
        "allows to be out (downloads the file), once it is published.",
    )
    def monthly_schedule(context: dg.ScheduleEvaluationContext, taxi_source: TaxiSourceResource):
        month = taxi_source.newest_expected_month(dataset, context.scheduled_execution_time.date())
        key = f"{month}-01"
        if key in context.instance.get_materialized_partitions(dg.AssetKey(dataset.raw_asset)):
            return dg.SkipReason(f"{month}, the newest month the source can have out, is taken")
        # Either way the publish sensor takes the month once it is out.
        try:
            taxi_source.remote(dataset, month)
        except SourceNotPublished as error:
            return dg.SkipReason(f"{month} is not out yet: {error}")
        except OSError as error:  # throttled or unreachable: says nothing about the month
            return dg.SkipReason(f"the source did not answer for {month}: {error}")
        return dg.RunRequest(partition_key=key, run_key=f"scheduled-{month}")

    return monthly_schedule


def build_daily_schedule(dataset: TripDataset, job) -> dg.ScheduleDefinition:
    # Off: a day also reads the next month's file, which a daily tick cannot wait for; the
    # automation sensor builds days as their files arrive. This is the tutorial's daily
    # `execution_date` trigger, for a source that publishes every day.
    return dg.build_schedule_from_partitioned_job(
        job,
        name=f"{dataset.daily_job}_schedule",
        hour_of_day=dataset.daily_schedule_hour,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Yesterday's daily {dataset.title} lake outputs, every day at "
        f"{dataset.daily_schedule_hour:02d}:00 UTC.",
    )
