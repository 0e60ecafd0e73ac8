"""`python -m taxi_assets.cli backfill` (`make backfill`): a range of months, to completion.

Each dataset's range is one Dagster asset backfill, as the UI's *Launch backfill* makes one:
listed and cancellable under *Backfills*, its runs first-class runs of the code location. It
targets the dataset's monthly assets for the months to take, and its daily assets for the
days those months settle; the daily assets' single-run backfill policy builds the days of
whatever months are ready in one run, so a month's days (or more) per run, never a run a day.

Planned before anything runs, without downloading: a month already materialized through
every monthly asset from the file the source holds now (HEAD: same version) is skipped; a day
already built since its months were is skipped too. Run again after a failure or Ctrl-C, the
same command takes only what is missing: that is the resume.

A day also reads the next month's file (late-filed trips; partitions.py), so the range's last
day waits for the month after TO. The range does not pull that month in: it is a whole month's
download and load into every monthly sink, asked for by no one, to settle one day. The day is
named as waiting (closing table, the backfill's description, an observation on each daily
asset) and automation builds it once that month is taken (`make run`, a later backfill, or the
publish sensor).

`make dev`'s daemon drives the backfill when it is up (its heartbeats are fresh); otherwise
this process does what the daemon would (dagster_private.BackfillDriver), and takes over if
the daemon stops. Ctrl-C cancels the backfills as the UI's Cancel does and waits for their runs
to end, so none is left running or stuck: the next `make backfill` resumes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from taxi_assets import console
from taxi_assets.dagster_private import AssetBackfill, BackfillDriver
from taxi_assets.datasets import TripDataset
from taxi_assets.materializations import latest_metadata_value, latest_storage_ids
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.run_health import job_pools
from taxi_assets.tlc.source import SourceNotPublished

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
POLL_SECONDS = 2.0
# The daemon writes a heartbeat every 30 s; older than this, it is taken to be down.
DAEMON_HEARTBEAT_FRESH_SECONDS = 75.0
DAEMONS_THAT_DRIVE = ("BACKFILL", "QUEUED_RUN_COORDINATOR")
CANCEL_TIMEOUT_SECONDS = 180.0
BACKFILL_TAG = "taxi/backfill"  # "<dataset> <FROM>..<TO>"
DATASET_TAG = "taxi/dataset"
BACKFILL_ID_TAG = "dagster/backfill"  # Dagster's tag on each run of a backfill


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
    month_ids = {key: latest_storage_ids(instance, key) for key in monthly}
    for month in plan.months:
        ids = [month_ids[key].get(month) for key in monthly]
        # Every monthly asset materialized, none before the raw trips' latest (a write that
        # failed after a newer download leaves its sink older than the file).
        complete = all(ids) and min(ids) >= month_ids[raw][month]
        if complete and _same_file(instance, taxi_source, dataset, raw, month):
            plan.up_to_date.append(month)
        else:
            plan.to_run.append(month)

    cleaned = month_ids[dg.AssetKey(dataset.cleaned_asset)]
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


# --- progress --------------------------------------------------------------------------------


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


# --- driving ---------------------------------------------------------------------------------


def daemon_drives(instance: dg.DagsterInstance) -> bool:
    """Whether a `dagster-daemon` (`make dev`) is up to run backfills and launch queued runs."""
    beats = instance.get_daemon_heartbeats()
    now = time.time()
    return all(
        name in beats and now - beats[name].timestamp < DAEMON_HEARTBEAT_FRESH_SECONDS
        for name in DAEMONS_THAT_DRIVE
    )


def init_pools(instance: dg.DagsterInstance, dataset: TripDataset) -> None:
    """Create the dataset's pools' limit rows now, one at a time: two runs starting at once on
    a fresh instance would otherwise race to create them."""
    from taxi_assets.definitions import defs

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    pools = set().union(
        *(job_pools(defs.resolve_job_def(job)) for job in (dataset.monthly_job, dataset.daily_job))
    )
    # Only the missing ones: on PostgreSQL, Dagster's initialisation of an existing pool fails
    # (its fallback update runs in the transaction the failed insert aborted).
    for pool in sorted(pools - set(storage.get_concurrency_keys())):
        storage.initialize_concurrency_limit_to_default(pool)


@contextlib.contextmanager
def children_write_to(path) -> Iterator[None]:
    """Processes started meanwhile (the code server, and so the runs it launches) write their
    output to `path`, not to this terminal: their logs are in the UI, the console keeps the
    progress line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def fail_orphaned_launches(
    instance: dg.DagsterInstance, backfill_ids: Sequence[str], since: float, log
) -> None:
    """Fail the backfills' runs left STARTING by a terminal that was killed mid-launch.

    Such a run's worker never started, so no process id says it is dead; the daemon's run
    monitoring fails it after its start timeout. A run this process launched is STARTING for a
    few seconds only, so those launched before it began (`since`) are the orphans.
    """
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTING], tags={BACKFILL_ID_TAG: list(backfill_ids)}
        )
    )
    for record in records:
        if record.update_timestamp.timestamp() < since:
            message = (
                f"run {record.dagster_run.run_id} was left starting by a backfill driver that "
                "is gone"
            )
            instance.report_run_failed(record.dagster_run, f"{message}: marked failed")
            log(f"{message}: marked it failed")


class Interrupted(Exception):
    """Ctrl-C: the backfills were canceled (or left canceling, on a second Ctrl-C)."""


def drive(
    instance: dg.DagsterInstance,
    tracked: Sequence[Tracked],
    workspace_yaml,
    on_tick: Callable[[], None],
    log: Callable[[str], None],
    runs_log: Path,
    every_tick: Callable[[], None] = lambda: None,
) -> None:
    """Until every backfill is finished: iterate them here while no daemon does. Ctrl-C
    cancels them and waits, within CANCEL_TIMEOUT_SECONDS, for their runs to end."""
    ids = [t.backfill.backfill_id for t in tracked if t.backfill is not None]
    quiet = logging.getLogger("taxi_assets.backfill.driver")
    quiet.setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        driver: BackfillDriver | None = None
        interrupted_at: float | None = None
        while True:
            try:
                for t in tracked:
                    if t.backfill is not None:
                        t.backfill = AssetBackfill.get(instance, t.backfill.backfill_id)
                on_tick()
                if all(t.backfill is None or t.backfill.is_finished for t in tracked):
                    break
                if interrupted_at and time.monotonic() - interrupted_at > CANCEL_TIMEOUT_SECONDS:
                    raise Interrupted("runs still ending")
                if not daemon_drives(instance):
                    if driver is None:
                        log(
                            "No daemon is running (`make dev`): this terminal drives the "
                            f"backfill; its code server and runs log to {runs_log}"
                        )
                        with children_write_to(runs_log):
                            driver = stack.enter_context(
                                BackfillDriver.open(instance, workspace_yaml, quiet)
                            )
                    every_tick()
                    for error in driver.iterate(ids):
                        log(error.strip().splitlines()[-1])
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                if interrupted_at is not None:
                    raise Interrupted("left canceling") from None
                interrupted_at = time.monotonic()
                log(
                    "Interrupted: canceling the backfill (its runs end first; Ctrl-C again to leave)"
                )
                for t in tracked:
                    if t.backfill is not None:
                        t.backfill.cancel(instance)
    if interrupted_at is not None:
        raise Interrupted("canceled")


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


# --- the command -----------------------------------------------------------------------------


def _adopt(instance, plan: DatasetPlan, log) -> AssetBackfill | None:
    """The dataset's unfinished backfill of the same range, to carry on with; a canceling one
    of any range is seen to its end first. Exits naming one of another range in progress."""
    adopted = None
    for backfill in AssetBackfill.in_progress(instance, {DATASET_TAG: plan.dataset.name}):
        if backfill.status == "REQUESTED" and backfill.tags.get(BACKFILL_TAG) == plan.range_tag:
            adopted = backfill
        elif backfill.status == "REQUESTED":
            sys.exit(
                f"Backfill {backfill.backfill_id} ({backfill.tags.get(BACKFILL_TAG)}) is in "
                "progress: let it finish (make backfill with its range follows it), or cancel "
                "it under Backfills in the UI, then run this one."
            )
    return adopted


def _settle_canceling(instance, dataset: TripDataset, workspace_yaml, say, runs_log) -> None:
    """Carry a backfill left canceling (a second Ctrl-C) to its end before planning anew."""
    canceling = [
        b
        for b in AssetBackfill.in_progress(instance, {DATASET_TAG: dataset.name})
        if b.status != "REQUESTED"
    ]
    if canceling:
        say(f"Finishing the cancellation of {', '.join(b.backfill_id for b in canceling)} first.")
        plan = DatasetPlan(dataset, "", "", [], [])
        drive(
            instance,
            [Tracked(plan, b) for b in canceling],
            workspace_yaml,
            lambda: None,
            say,
            runs_log,
        )


def run_backfill(
    datasets: Sequence[TripDataset],
    first: str,
    last: str,
    *,
    taxi_source: TaxiSourceResource,
    workspace_yaml,
    webserver_url: str,
    runs_are_local: bool,
    runs_log: Path,
) -> int:
    """Plan, launch and follow each dataset's backfill; print the closing table. The exit code:
    0 when every month and buildable day is done, 1 when something failed, 130 on Ctrl-C."""
    from taxi_assets.definitions import defs
    from taxi_assets.run_health import fail_dead_runs

    started_at = time.time()
    instance = dg.DagsterInstance.get()
    asset_graph = defs.resolve_asset_graph()
    printer = ProgressPrinter()
    say = printer.say
    start = time.monotonic()
    tracked = []
    for dataset in datasets:
        _settle_canceling(instance, dataset, workspace_yaml, say, runs_log)
        plan = plan_dataset(instance, taxi_source, dataset, first, last, asset_graph)
        backfill = _adopt(instance, plan, say)
        if backfill is not None:
            plan.to_run = sorted(set(plan.months) & backfill.targeted(plan.monthly_assets[0]))
            plan.up_to_date = sorted(set(plan.months) - set(plan.to_run))
            plan.to_build = sorted(backfill.targeted(plan.daily_assets[0]))
            plan.built = sorted(set(plan.days) - set(plan.to_build) - set(plan.waiting))
            say(f"{plan.range_tag}: carrying on with backfill {backfill.backfill_id}")
        elif plan.has_work:
            init_pools(instance, dataset)
            backfill = AssetBackfill.create(
                instance,
                {
                    **{k: (monthly_partitions, plan.to_run) for k in plan.monthly_assets},
                    **{k: (daily_partitions, plan.to_build) for k in plan.daily_assets},
                },
                tags=plan.tags,
                title=f"{dataset.name} {first} to {last}",
                description=plan.description(),
            )
        report_waiting_days(instance, plan)
        cleaned_ids = latest_storage_ids(instance, dg.AssetKey(dataset.cleaned_asset))
        t = Tracked(plan, backfill, cursor=max(cleaned_ids.values(), default=0))
        tracked.append(t)
        say(
            f"{plan.range_tag}: {len(plan.to_run)} of {len(plan.months)} months to take "
            f"({len(plan.up_to_date)} up to date, not downloaded), {len(plan.to_build)} of "
            f"{len(plan.days)} days to build, {len(plan.waiting)} waiting"
            + (
                f"; backfill {backfill.backfill_id}: {webserver_url}/runs/b/{backfill.backfill_id}"
                if backfill
                else ""
            )
        )

    def tick() -> None:
        for t in tracked:
            t.count_rows(instance)
        printer.show(progress_line(tracked, time.monotonic() - start))

    def every_tick() -> None:
        fail_dead_runs(instance, say)
        ids = [t.backfill.backfill_id for t in tracked if t.backfill is not None]
        fail_orphaned_launches(instance, ids, started_at, say)

    code = 0
    try:
        drive(
            instance,
            tracked,
            workspace_yaml,
            tick,
            say,
            runs_log,
            every_tick=every_tick if runs_are_local else lambda: None,
        )
    except Interrupted as stopped:
        code = 130
        printer.end()
        say(
            f"Interrupted: the backfill is {stopped}. Run the same command again to resume: "
            "it skips what is done."
        )
    printer.end()
    for line in closing_table(instance, tracked, time.monotonic() - start):
        print(line)
    if code == 0 and any(
        t.months_failed()
        or t.days_failed()
        or (t.backfill and t.backfill.status not in ("COMPLETED", "COMPLETED_SUCCESS"))
        for t in tracked
    ):
        code = 1
    return code
