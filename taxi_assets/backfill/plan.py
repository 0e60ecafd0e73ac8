"""A backfill's plan: the range of months, and which months and days it takes (none downloaded
to decide)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import dagster as dg

from taxi_assets.datasets import TripDataset
from taxi_assets.materializations import latest_metadata_value, latest_storage_ids
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.tlc.source import SourceNotPublished

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
BACKFILL_TAG = "taxi/backfill"  # "<dataset> <FROM>..<TO>"
DATASET_TAG = "taxi/dataset"


class BackfillRangeError(ValueError):
    """FROM or TO is not a range of months: the message names the setting."""


def month_range(first: str, last: str) -> list[str]:
    """The monthly partition keys FROM..TO (both included)."""
    for name, value in (("FROM", first), ("TO", last)):
        if not MONTH.fullmatch(value or ""):
            raise BackfillRangeError(f"{name}={value!r} (--{name.lower()}) is not a month: YYYY-MM")
    if first > last:
        raise BackfillRangeError(f"FROM={first} is after TO={last}")
    window = dg.TimeWindow(
        dt.datetime.fromisoformat(f"{first}-01").replace(tzinfo=dt.timezone.utc),
        dt.datetime.fromisoformat(f"{_next_month(last)}-01").replace(tzinfo=dt.timezone.utc),
    )
    return monthly_partitions.get_partition_keys_in_time_window(window)


def _next_month(month: str) -> str:
    year, number = int(month[:4]), int(month[5:7])
    return f"{year + number // 12}-{number % 12 + 1:02d}"


def days_of(month_key: str) -> list[str]:
    return daily_partitions.get_partition_keys_in_time_window(
        monthly_partitions.time_window_for_partition_key(month_key)
    )


def file_months(day: str) -> list[str]:
    """The month keys whose files a day reads: its own, and the next on a month's last day."""
    month = f"{day[:7]}-01"
    next_day = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    if next_day.month != int(day[5:7]):
        return [month, f"{next_day:%Y-%m}-01"]
    return [month]


# --- the plan --------------------------------------------------------------------------------


@dataclass
class DatasetPlan:
    """What the backfill of one dataset's range takes, skips and leaves waiting."""

    dataset: TripDataset
    first: str  # FROM and TO as asked
    last: str
    monthly_assets: list[dg.AssetKey]
    daily_assets: list[dg.AssetKey]
    months: list[str] = field(default_factory=list)  # the range's keys the source carries
    to_run: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    days: list[str] = field(default_factory=list)  # every day of `months`
    to_build: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # already built from their months
    waiting: dict[str, str] = field(default_factory=dict)  # day -> why
    not_carried: str = ""  # why the source carries none (or only part) of the range

    @property
    def range_tag(self) -> str:
        return f"{self.dataset.name} {self.first}..{self.last}"

    @property
    def tags(self) -> dict[str, str]:
        return {BACKFILL_TAG: self.range_tag, DATASET_TAG: self.dataset.name}

    @property
    def has_work(self) -> bool:
        return bool(self.to_run or self.to_build)

    def description(self) -> str:
        lines = [
            f"{self.dataset.title} {self.first}..{self.last} (make backfill): "
            f"{len(self.to_run)} months to take, {len(self.up_to_date)} already taken from the "
            f"source's current files; {len(self.to_build)} days to build, "
            f"{len(self.built)} already built."
        ]
        lines += [f"{day} waits: {why}" for day, why in sorted(self.waiting.items())]
        return "\n".join(lines)


def dataset_assets(
    asset_graph, dataset: TripDataset
) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    """The dataset's own monthly and daily assets, from its raw trips down. The models below
    every dataset (analytics) are not one dataset's: automation builds them once all are in."""
    keys = {
        key
        for key in dg.AssetSelection.assets(dataset.raw_asset).downstream().resolve(asset_graph)
        if (asset_graph.get(key).group_name or "").startswith(dataset.group(""))
    }
    by_partitions = {
        partitions_def: sorted(
            k for k in keys if asset_graph.get(k).partitions_def == partitions_def
        )
        for partitions_def in (monthly_partitions, daily_partitions)
    }
    return by_partitions[monthly_partitions], by_partitions[daily_partitions]


def plan_dataset(
    instance: dg.DagsterInstance,
    taxi_source: TaxiSourceResource,
    dataset: TripDataset,
    first: str,
    last: str,
    asset_graph,
) -> DatasetPlan:
    monthly, daily = dataset_assets(asset_graph, dataset)
    plan = DatasetPlan(dataset, first, last, monthly, daily)
    carried_first, carried_last = taxi_source.months(dataset)
    asked = month_range(first, last)
    plan.months = [k for k in asked if carried_first <= k[:7] <= carried_last]
    if len(plan.months) < len(asked):
        plan.not_carried = (
            f"the source holds {carried_first}..{carried_last} of the {dataset.title} files"
        )

    raw = dg.AssetKey(dataset.raw_asset)
    # An instance from before the cleaned trips' rename holds their months under the former key.
    cleaned_key = dg.AssetKey(dataset.cleaned_asset)
    former = {cleaned_key: dg.AssetKey(dataset.former_cleaned_asset)}
    month_ids = {key: latest_storage_ids(instance, key, former.get(key)) for key in monthly}
    for month in plan.months:
        ids = [month_ids[key].get(month) for key in monthly]
        # Every monthly asset materialized, none before the raw trips' latest (a write that
        # failed after a newer download leaves its sink older than the file).
        complete = all(ids) and min(ids) >= month_ids[raw][month]
        if complete and _same_file(instance, taxi_source, dataset, raw, month):
            plan.up_to_date.append(month)
        else:
            plan.to_run.append(month)

    cleaned = month_ids[cleaned_key]
    day_ids = {key: latest_storage_ids(instance, key) for key in daily}
    in_range = set(plan.months)
    for month in plan.months:
        for day in days_of(month):
            plan.days.append(day)
            needs = file_months(day)
            missing = [m for m in needs if m not in in_range and m not in cleaned]
            if missing:
                plan.waiting[day] = waiting_reason(missing[0], first, last)
                continue
            newest_file = max(cleaned.get(m, 0) for m in needs)
            current = all(day_ids[key].get(day, 0) > newest_file for key in daily)
            if current and not any(m in plan.to_run for m in needs):
                plan.built.append(day)
            else:
                plan.to_build.append(day)
    return plan


def _same_file(instance, taxi_source, dataset, raw, month: str) -> bool:
    """Whether the source's file for the month is the one taken (a HEAD, no download)."""
    taken = latest_metadata_value(instance, raw, "source_version", month)
    if taken is None:
        return False
    try:
        return taxi_source.remote(dataset, month[:7]).version == taken
    except SourceNotPublished:
        return True  # withdrawn at the source: what was taken stays
    # OSError (unreachable): raised, the plan cannot be made without the source.


def waiting_reason(month_key: str, first: str, last: str) -> str:
    month = month_key[:7]
    return (
        f"it also reads {month}'s file (trips filed late), which is outside {first}..{last} "
        f"and not taken yet; automation builds the day once {month} is taken "
        f"(make backfill FROM={month} TO={month}, make run MONTH={month}, or the publish sensor)"
    )
