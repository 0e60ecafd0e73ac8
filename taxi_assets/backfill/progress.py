"""What `make backfill` prints: the progress line while it runs, the closing table after."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from taxi_assets import console
from taxi_assets.backfill.plan import DatasetPlan, file_months
from taxi_assets.dagster_private import AssetBackfill

BACKFILL_ID_TAG = "dagster/backfill"  # Dagster's tag on each run of a backfill


@dataclass
class Tracked:
    """A dataset's plan, its backfill and what the console says of it."""

    plan: DatasetPlan
    backfill: AssetBackfill | None
    rows: int = 0
    cursor: int = 0  # the cleaned asset's materializations counted so far

    def months_done(self) -> set[str]:
        if self.backfill is None:
            return set()
        done = set(self.plan.to_run)
        for key in self.plan.monthly_assets:
            done &= self.backfill.materialized(key)
        return done

    def months_failed(self) -> set[str]:
        if self.backfill is None:
            return set()
        return set().union(*(self.backfill.failed(k) for k in self.plan.monthly_assets))

    def days_done(self) -> set[str]:
        if self.backfill is None:
            return set()
        done = set(self.plan.to_build)
        for key in self.plan.daily_assets:
            done &= self.backfill.materialized(key)
        return done

    def days_failed(self) -> set[str]:
        if self.backfill is None:
            return set()
        return set().union(*(self.backfill.failed(k) for k in self.plan.daily_assets))

    def count_rows(self, instance: dg.DagsterInstance) -> None:
        """Add the rows of the months materialized since the last count."""
        key = dg.AssetKey(self.plan.dataset.cleaned_asset)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=self.cursor), limit=1000
        ).records
        to_run = set(self.plan.to_run)
        for record in records:
            self.cursor = max(self.cursor, record.storage_id)
            if record.partition_key in to_run:
                rows = record.asset_materialization.metadata.get("dagster/row_count")
                self.rows += int(rows.value) if rows else 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(tracked: Sequence[Tracked], seconds: float) -> str:
    months = sum(len(t.plan.months) for t in tracked)
    skipped = sum(len(t.plan.up_to_date) for t in tracked)
    done = sum(len(t.months_done()) for t in tracked)
    failed = sum(len(t.months_failed()) + len(t.days_failed()) for t in tracked)
    to_run = sum(len(t.plan.to_run) for t in tracked)
    days = sum(len(t.plan.days) for t in tracked)
    days_done = sum(len(t.plan.built) + len(t.days_done()) for t in tracked)
    rows = sum(t.rows for t in tracked)
    rate = rows / seconds if seconds > 0 else 0.0
    # The pace so far, a month's days counted as a month of work.
    total = to_run + sum(len(t.plan.to_build) for t in tracked) / 30
    finished = done + sum(len(t.days_done()) for t in tracked) / 30
    failed_work = sum(len(t.months_failed()) + len(t.days_failed()) / 30 for t in tracked)
    left = total - finished - failed_work
    eta = _duration(seconds / finished * left) if finished and left > 0 else "-"
    return (
        f"months {done + skipped}/{months}"
        + (f" ({skipped} up to date)" if skipped else "")
        + f", days {days_done}/{days}, {rows:,} rows, {rate:,.0f} rows/s, ETA {eta}, "
        f"failures {failed}"
    )


class ProgressPrinter:
    """One line, rewritten in place on a terminal; a new line each time it changes otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.last = ""
        self.tty = self.stream.isatty()

    def show(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self.last)))
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def say(self, message: str) -> None:
        """A line of its own above the progress line."""
        if self.tty:
            self.stream.write("\r" + message.ljust(len(self.last)) + "\n" + self.last)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


# --- the closing table -----------------------------------------------------------------------


def failed_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[tuple[str, str, str]]:
    """Each failed run of the backfill: its partitions, its run id and its cause."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            tags={BACKFILL_ID_TAG: backfill_id}, statuses=[dg.DagsterRunStatus.FAILURE]
        )
    )
    failures = []
    for run in runs:
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if events:
            cause = console.failure_cause(events[0].dagster_event.event_specific_data)
        else:  # failed as a whole: a dead worker, a launch that never finished
            run_failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            cause = run_failures[-1].message if run_failures else "see the run's event log"
        partitions = run.tags.get("dagster/partition") or (
            f"{run.tags.get('dagster/asset_partition_range_start')}.."
            f"{run.tags.get('dagster/asset_partition_range_end')}"
        )
        failures.append((partitions, run.run_id, cause))
    return failures


def closing_table(
    instance: dg.DagsterInstance, tracked: Sequence[Tracked], seconds: float
) -> list[str]:
    header = (
        f"  {'dataset':7} {'months':>6} {'taken':>5} {'skipped':>7} {'failed':>6} "
        f"{'days':>5} {'built':>5} {'waiting':>7} {'failed':>6} {'rows':>12} {'rows/s':>8} "
        f"{'runs':>4}  backfill"
    )
    lines = [f"Backfill finished in {_duration(seconds)}:", header]
    notes = []
    for t in tracked:
        plan = t.plan
        backfill = t.backfill
        runs = (
            instance.get_runs_count(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill.backfill_id}))
            if backfill
            else 0
        )
        where = f"{backfill.backfill_id} {backfill.status}" if backfill else "none: nothing to do"
        rate = t.rows / seconds if seconds > 0 else 0
        lines.append(
            f"  {plan.dataset.name:7} {len(plan.months):>6} {len(t.months_done()):>5} "
            f"{len(plan.up_to_date):>7} {len(t.months_failed()):>6} {len(plan.days):>5} "
            f"{len(plan.built) + len(t.days_done()):>5} {len(plan.waiting):>7} "
            f"{len(t.days_failed()):>6} {t.rows:>12,} {rate:>8,.0f} {runs:>4}  {where}"
        )
        if plan.not_carried:
            notes.append(
                f"{plan.dataset.name}: only part of the range is taken: {plan.not_carried}."
            )
        if backfill:
            for partitions, run_id, cause in failed_runs(instance, backfill.backfill_id):
                notes.append(f"{plan.dataset.name} {partitions} failed (run {run_id}): {cause}")
        for day, why in sorted(plan.waiting.items()):
            notes.append(f"{plan.dataset.name} {day} waits: {why}.")
        unsettled = set(plan.to_build) - t.days_done() - t.days_failed()
        if backfill and unsettled:
            notes.append(
                f"{plan.dataset.name}: {len(unsettled)} days not built ({min(unsettled)}.."
                f"{max(unsettled)}): the backfill ended {backfill.status}."
            )
    if any(t.months_failed() or t.days_failed() for t in tracked):
        notes.append("Run the same command again: it retries what failed and skips what is done.")
    return lines + ["  " + note for note in notes]


def report_waiting_days(instance: dg.DagsterInstance, plan: DatasetPlan) -> None:
    """An observation on each waiting day of each daily asset, saying why it waits: the UI
    shows it on the day's partition."""
    for day, why in sorted(plan.waiting.items()):
        for key in plan.daily_assets:
            instance.report_runless_asset_event(
                dg.AssetObservation(
                    asset_key=key,
                    partition=day,
                    metadata={"waits_for": file_months(day)[-1][:7], "why": why},
                )
            )
