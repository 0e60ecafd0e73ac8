"""Sensors: a new month at the source starts its run; materializations propagate downstream.

`new_month_published` asks the source (HTTP HEAD, no download) for the month after the newest
one taken, and requests that month's run once. Downstream propagation is declarative
automation: every asset below the cleaned trips carries `downstream_condition()`, evaluated by
`downstream_automation`, which is on by default because it never downloads anything.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from taxi_assets.partitions import monthly_partitions
from taxi_assets.resources import TaxiSourceResource
from taxi_assets.source import source_url

# The asset whose materialized months say which files have been taken from the source.
SOURCE_ASSET = dg.AssetKey("raw_yellow_trips")
# Where declarative automation starts: everything downstream of the checked, cleaned trips.
# yellow_trips itself is left to the jobs, so its blocking check always runs with it.
CLEANED_ASSET = dg.AssetKey("yellow_trips")
SOURCE_POLL_SECONDS = 3600
AUTOMATION_SENSOR = "downstream_automation"


class _KeepHead(urllib.request.HTTPRedirectHandler):
    """Follows redirects (GitHub release assets redirect to a CDN) without turning HEAD into GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def is_published(base_url: str, file_name: str, timeout: float) -> bool:
    """Whether the source has the file, without downloading it. Other HTTP errors raise."""
    url = source_url(base_url, file_name)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path)).is_file()
    opener = urllib.request.build_opener(_KeepHead)
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            return False
        raise


def next_month_to_take(instance: dg.DagsterInstance) -> tuple[str | None, str]:
    """The month after the newest one taken from the source, or None and why there is none."""
    taken = instance.get_materialized_partitions(SOURCE_ASSET)
    if not taken:
        # Following the source from its first month would download the whole release; a
        # user starts with `make run` or a backfill, and the sensor takes it from there.
        return None, ("no month has been taken from the source yet: materialize or backfill a "
                      "first month, and this sensor follows the months after it")
    keys = monthly_partitions.get_partition_keys()
    newest = max(taken)
    following = keys.index(newest) + 1
    if following == len(keys):
        return None, f"{newest[:7]} is the last month of the release; nothing follows it"
    return keys[following], ""


def build_publish_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_month_published",
        job=job,
        minimum_interval_seconds=SOURCE_POLL_SECONDS,
        # Off: a request downloads a month, which nobody should get by merely opening the UI.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="HEADs the source for the month after the newest one taken and, once it "
                    "is published, requests that month's run (once).",
    )
    def new_month_published(context: dg.SensorEvaluationContext, taxi_source: TaxiSourceResource):
        partition_key, why_not = next_month_to_take(context.instance)
        if partition_key is None:
            return dg.SkipReason(why_not)
        month = partition_key[:7]
        # The cursor holds the month already requested: while its run is queued, running or
        # failed, later ticks neither ask the source again nor request it twice.
        if context.cursor == month:
            return dg.SkipReason(f"{month} was requested already; waiting for its run")
        file_name = taxi_source.file_name(month)
        if not is_published(taxi_source.base_url, file_name, taxi_source.timeout_seconds):
            return dg.SkipReason(f"{file_name} is not published yet")
        context.log.info(f"{file_name} is published: requesting {month}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=partition_key, run_key=f"published-{month}")],
            cursor=month,
        )

    return new_month_published


def downstream_condition() -> dg.AutomationCondition:
    """eager() over every partition, held back while a blocking check upstream has failed.

    eager() alone looks at the latest time window only (July 2021 for this fixed release), so
    that part is dropped. Because eager() waits for missing dependencies, a day is built once
    both files it reads are in: its month's and the next month's (the release's last month
    needs only its own).
    """
    eager = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    # A blocking check that fails stops its run's downstream steps, but the asset itself is
    # still materialized; without this, automation would write the sinks on the next tick.
    upstream_check_failed = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_checks_match(
            dg.AutomationCondition.check_failed(), blocking_only=True)
    )
    return (eager & ~upstream_check_failed).with_label(
        "eager (all partitions), unless an upstream blocking check failed")


def with_downstream_automation(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets, with downstream_condition() on each below the cleaned trips that has none."""
    below = dg.AssetSelection.assets(CLEANED_ASSET).downstream(include_self=False).resolve(assets)

    def automate(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key in below and spec.automation_condition is None:
            return spec.replace_attributes(automation_condition=downstream_condition())
        return spec

    return list(dg.map_asset_specs(automate, assets))


automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.all(),
    # On: it only rebuilds from data already taken (staging), never downloads.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the sinks and the days whose months were (re)materialized.",
)


def all_sensors(jobs: dict) -> list[dg.SensorDefinition]:
    from taxi_assets.schedules import MONTHLY_JOB

    return [build_publish_sensor(jobs[MONTHLY_JOB]), automation_sensor]
