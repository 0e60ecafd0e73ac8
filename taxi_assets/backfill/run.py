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

A day also reads the next month's file (late-filed trips; defs/partitions.py), so the range's last
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
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import dagster as dg

from taxi_assets.backfill.plan import BACKFILL_TAG, DATASET_TAG, DatasetPlan, plan_dataset
from taxi_assets.backfill.progress import (
    BACKFILL_ID_TAG,
    ProgressPrinter,
    Tracked,
    closing_table,
    progress_line,
    report_waiting_days,
)
from taxi_assets.dagster_private import AssetBackfill, BackfillDriver
from taxi_assets.datasets import TripDataset
from taxi_assets.materializations import latest_storage_ids
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.run_health import job_pools

POLL_SECONDS = 2.0
# The daemon writes a heartbeat every 30 s; older than this, it is taken to be down.
DAEMON_HEARTBEAT_FRESH_SECONDS = 75.0
DAEMONS_THAT_DRIVE = ("BACKFILL", "QUEUED_RUN_COORDINATOR")
CANCEL_TIMEOUT_SECONDS = 180.0

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
    except Exception:
        printer.end()  # the cause is printed below the progress line, not over it
        raise
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
