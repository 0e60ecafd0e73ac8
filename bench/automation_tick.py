"""What one tick of the automation sensor costs over years of history.

`python -m bench.automation_tick [--years N] [--datasets yellow,green]` records a simulated
history in a Dagster instance (every partition of every asset of the datasets materialized,
by `report_runless_asset_event`, as a backfill of those years would leave it), takes a first
tick (which only records where things stand), then materializes three new months' cleaned
trips and times the tick that must request their sinks and days. Without --instance-home the
instance is an in-memory one; with it, that DAGSTER_HOME's (e.g. the project's PostgreSQL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Iterable, Sequence

import dagster as dg

from taxi_assets.backfill.plan import dataset_assets
from taxi_assets.dagster_private import record_runless_materializations
from taxi_assets.datasets import DATASETS, TripDataset
from taxi_assets.definitions import defs
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions

NEW_MONTHS = 3


def month_keys(first: str, count: int) -> list[str]:
    start = dt.datetime.fromisoformat(first).replace(tzinfo=dt.timezone.utc)
    keys = monthly_partitions.get_partition_keys(
        current_time=dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    )
    index = keys.index(f"{start:%Y-%m-%d}")
    return keys[index : index + count]


def days_between(first_month: str, end_month: str) -> list[str]:
    """The day keys from first_month's first day up to end_month's first day (excluded)."""
    window = dg.TimeWindow(
        dt.datetime.fromisoformat(first_month).replace(tzinfo=dt.timezone.utc),
        dt.datetime.fromisoformat(end_month).replace(tzinfo=dt.timezone.utc),
    )
    return daily_partitions.get_partition_keys_in_time_window(window)


def report(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey], partitions: Sequence[str]):
    record_runless_materializations(
        instance,
        [dg.AssetMaterialization(asset_key=k, partition=p) for k in keys for p in partitions],
    )


def record_history(
    instance: dg.DagsterInstance, datasets: Sequence[TripDataset], first: str, months: int
) -> list[str]:
    """Every asset of the datasets materialized for `months` months from `first` (and their
    days, but for the last one's final day, which waits for the next file); returns the months."""
    history = month_keys(first, months + 1)
    for dataset in datasets:
        monthly, daily = dataset_assets(defs.resolve_asset_graph(), dataset)
        report(instance, monthly, history[:-1])
        report(instance, daily, days_between(history[0], history[-1])[:-1])
    return history[:-1]


def take_new_months(
    instance: dg.DagsterInstance, datasets: Sequence[TripDataset], months: Sequence[str]
) -> None:
    """The new months' file taken and cleaned, as a monthly run's first two steps leave them."""
    for dataset in datasets:
        report(
            instance, [dg.AssetKey(dataset.raw_asset), dg.AssetKey(dataset.cleaned_asset)], months
        )


def timed_ticks(instance, datasets, first: str, months: int) -> dict[str, float]:
    started = time.perf_counter()
    history = record_history(instance, datasets, first, months)
    recorded = time.perf_counter() - started
    started = time.perf_counter()
    initial = dg.evaluate_automation_conditions(defs, instance)
    first_tick = time.perf_counter() - started
    new = month_keys(history[-1], NEW_MONTHS + 1)[1:]
    take_new_months(instance, datasets, new)
    started = time.perf_counter()
    result = dg.evaluate_automation_conditions(defs, instance, cursor=initial.cursor)
    tick = time.perf_counter() - started
    started = time.perf_counter()
    dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    quiet_tick = time.perf_counter() - started
    return {
        "months": months,
        "record_s": recorded,
        "first_tick_s": first_tick,
        "tick_with_new_months_s": tick,
        "quiet_tick_s": quiet_tick,
        "requested": result.total_requested,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.automation_tick")
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--first", default="2009-01-01", help="the history's first month")
    parser.add_argument("--datasets", default="yellow", help="comma-separated: yellow,green")
    parser.add_argument("--instance-home", default=None, help="a DAGSTER_HOME to record into")
    args = parser.parse_args(argv)
    datasets = [DATASETS[name] for name in args.datasets.split(",")]
    if args.instance_home:
        with dg.DagsterInstance.from_config(args.instance_home) as instance:
            print(timed_ticks(instance, datasets, args.first, args.years * 12))
        return
    with dg.DagsterInstance.ephemeral() as instance:
        print(timed_ticks(instance, datasets, args.first, args.years * 12))


if __name__ == "__main__":
    main()
