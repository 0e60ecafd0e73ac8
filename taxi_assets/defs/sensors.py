"""Sensors: a new or re-uploaded month at the source starts its run; materializations propagate.

Per dataset, `new_<dataset>_month_published` asks the source (HTTP HEAD, no download) for the
month after the newest one taken, and requests that month's run once.
`<dataset>_source_file_changed` HEADs the months already taken and requests a month again when
its file's version (ETag, or Last-Modified and size) is no longer the one its last run took.
Downstream propagation is declarative automation (automation.py), evaluated by
`downstream_automation`, which is on by default because it never downloads anything.
"""

from __future__ import annotations

import hashlib

import dagster as dg

from taxi_assets.datasets import TripDataset
from taxi_assets.materializations import latest_metadata_value
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.tlc.source import SourceNotPublished

SOURCE_POLL_SECONDS = 3600
# Re-uploads are rare (the TLC re-issued its archive once, in 2022) and checking one HEADs
# every month taken: once a day is enough.
REUPLOAD_POLL_SECONDS = 24 * 3600
AUTOMATION_SENSOR = "downstream_automation"


def next_month_to_take(
    instance: dg.DagsterInstance, taxi_source: TaxiSourceResource, dataset: TripDataset
) -> tuple[str | None, str]:
    """The month after the newest one taken from the source, or None and why there is none."""
    # The raw asset's materialized months say which files have been taken from the source.
    taken = instance.get_materialized_partitions(dg.AssetKey(dataset.raw_asset))
    if not taken:
        # Following the source from its first month would download the whole release; a
        # user starts with `make run` or a backfill, and the sensor takes it from there.
        return None, (
            "no month has been taken from the source yet: materialize or backfill a "
            "first month, and this sensor follows the months after it"
        )
    newest = max(taken)[:7]
    _, last = taxi_source.months(dataset)
    if newest >= last:
        if taxi_source.is_closed:
            return None, f"{newest} is the last month of the release; nothing follows it"
        return None, f"{newest} is the newest month that is over; nothing follows it yet"
    return monthly_partitions.get_next_partition_key(f"{newest}-01"), ""


def build_publish_sensor(dataset: TripDataset, job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"new_{dataset.name}_month_published",
        job=job,
        minimum_interval_seconds=SOURCE_POLL_SECONDS,
        # Off: a request downloads a month, which nobody should get by merely opening the UI.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"HEADs the source for the {dataset.title} month after the newest one "
        "taken and, once it is published, requests that month's run (once).",
    )
    def new_month_published(context: dg.SensorEvaluationContext, taxi_source: TaxiSourceResource):
        partition_key, why_not = next_month_to_take(context.instance, taxi_source, dataset)
        if partition_key is None:
            return dg.SkipReason(why_not)
        month = partition_key[:7]
        # The cursor holds the month already requested: while its run is queued, running or
        # failed, later ticks neither ask the source again nor request it twice.
        if context.cursor == month:
            return dg.SkipReason(f"{month} was requested already; waiting for its run")
        file_name = taxi_source.file_name(dataset, month)
        try:
            taxi_source.remote(dataset, month)
        except SourceNotPublished:
            return dg.SkipReason(f"{file_name} is not published yet")
        except OSError as error:  # throttled or unreachable: says nothing about the month
            return dg.SkipReason(
                f"{file_name}: the source did not answer ({error}); asking again at the next tick"
            )
        context.log.info(f"{file_name} is published: requesting {month}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=partition_key, run_key=f"published-{month}")],
            cursor=month,
        )

    return new_month_published


def taken_versions(instance: dg.DagsterInstance, dataset: TripDataset) -> dict[str, str | None]:
    """Each month taken from the source, with the file version its latest run took."""
    raw = dg.AssetKey(dataset.raw_asset)
    return {
        key: latest_metadata_value(instance, raw, "source_version", key)
        for key in sorted(instance.get_materialized_partitions(raw))
    }


def build_reupload_sensor(dataset: TripDataset, job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{dataset.name}_source_file_changed",
        job=job,
        minimum_interval_seconds=REUPLOAD_POLL_SECONDS,
        # Off: a re-upload of the whole archive requests every month, each a download.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"HEADs the source for every {dataset.title} month taken and requests a "
        "month again when its file's version changed (a re-upload); the automation then rebuilds "
        "its days and sinks.",
    )
    def source_file_changed(context: dg.SensorEvaluationContext, taxi_source: TaxiSourceResource):
        requests, unversioned, unanswered = [], [], []
        for partition_key, taken in taken_versions(context.instance, dataset).items():
            month = partition_key[:7]
            if taken is None:
                unversioned.append(month)  # taken before versions were recorded
                continue
            try:
                now = taxi_source.remote(dataset, month).version
            except SourceNotPublished as error:  # withdrawn: nothing to take again
                unanswered.append(f"{month} ({error})")
                continue
            except OSError as error:
                # Throttled or unreachable: the months after would only wait out their timeouts.
                unanswered.append(f"{month} and the months after it ({error})")
                break
            if now != taken:
                context.log.info(
                    f"{taxi_source.file_name(dataset, month)} changed at the source "
                    f"({taken} → {now}): requesting {month} again"
                )
                digest = hashlib.sha256(now.encode()).hexdigest()[:16]
                requests.append(
                    dg.RunRequest(partition_key=partition_key, run_key=f"reupload-{month}-{digest}")
                )
        unchecked = f"; not checked, asked again next tick: {unanswered}" if unanswered else ""
        if unversioned:
            context.log.info(f"taken without a recorded version, not compared: {unversioned}")
        if not requests:
            return dg.SkipReason(f"no file taken from the source has changed there{unchecked}")
        if unanswered:
            context.log.warning(unchecked[2:])
        return dg.SensorResult(run_requests=requests)

    return source_file_changed


automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.all(),
    # On: it only rebuilds from data already taken (staging), never downloads.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the sinks and the days whose months were (re)materialized.",
)
