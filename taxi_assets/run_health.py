"""Dead runs and pools: a run whose process is gone is marked failed and its pool slots freed;
a step waiting for a pool slot says which run holds it.

Dagster's run monitoring (the daemon, `dagster.yaml`) fails a run whose run launcher reports
its worker gone. The default launcher, which starts runs as local processes (`make dev`),
cannot tell, so a run killed by SIGKILL or the OOM killer stayed STARTED for ever, holding its
write step's pool slot, and the next writer of that table waited at that step indefinitely.
`LocalRunLauncher` answers the health check from the worker's process id, which every run
records in its RUN_START event. `make run` executes runs in its own process, with no daemon
watching, so it makes the same check itself before each job (`prepare_run`): it creates the
job's pools if they are new (`ensure_pools`), fails the dead runs and frees their slots, then, while a live run holds a pool the job writes through,
says which run and waits (asleep, so Ctrl-C stops it). In a run, Dagster's in-process executor
says only that a step is blocked on a pool, and waits for the slot polling without pause and
deaf to Ctrl-C; `in_process_executor` here is Dagster's with that wait sleeping, stopping on an
interrupt (dagster_private/executor.py names the defect), and saying at INFO which run holds
the slot. A run of it whose step failed ends by
saying which of its trip sinks it wrote and which it left as they were (`sinks_event`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import dagster as dg
import sqlalchemy.exc

from taxi_assets import console
from taxi_assets.dagster_private import (
    CheckRunHealthResult,
    PatientInProcessExecutor,
    WorkerStatus,
    engine_event,
    launcher_instance,
)
from taxi_assets.datasets import DATASETS

ACTIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]
ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
POLL_SECONDS = 2.0


def _process_start_time(pid: int) -> float | None:
    """When the process `pid` started (seconds since the epoch); None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22, after the parenthesised command name (which may hold spaces).
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return boot + started_ticks / os.sysconf("SC_CLK_TCK")


def run_worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process that started the run, and when; None before it started."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return None
    entry = records[0].event_log_entry
    return entry.dagster_event.pid, entry.timestamp


def worker_gone(worker: tuple[int, float] | None) -> str | None:
    """Why the run's process (`run_worker`) is known to be gone; None if it lives or has not
    started yet.

    A pid is reused once its process is gone: a process with that pid that started after the
    run did is another one.
    """
    if worker is None:
        return None
    pid, run_started = worker
    started = _process_start_time(pid)
    if started is None:
        return f"its process (pid {pid}) is gone"
    if started > run_started + 1:
        return f"its process (pid {pid}) is gone; that pid now belongs to another process"
    return None


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default launcher (a process per run), with a worker health check for run
    monitoring. For run workers on this machine, as `make dev` starts them."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = run_worker(launcher_instance(self), run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run has not started yet")
        gone = worker_gone(worker)
        if gone:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run {run.run_id}: {gone}")
        return CheckRunHealthResult(WorkerStatus.RUNNING)


def fail_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> list[str]:
    """Mark every started run whose process is gone as failed, freeing its pool slots; and free
    the slots an ended run's process held when it died."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE)):
        gone = worker_gone(run_worker(instance, run.run_id))
        if gone is None:
            continue
        message = f"run {run.run_id} ({run.job_name}) was still marked running, but {gone}"
        instance.report_run_failed(run, f"{message}: marked failed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(f"{message}: marked it failed and freed its pool slots")
        failed.append(run.run_id)
    _free_slots_of_ended_runs(instance, log)
    return failed


def _free_slots_of_ended_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> None:
    """A run marked ended while its process lived on (the process lost the Dagster database,
    and the next command failed the run) can claim a slot after that and die holding it. A
    process frees its slots as its steps end; once it is gone, nothing else does without the
    daemon's run monitoring. Its slots are freed here; a live process keeps its own."""
    holders = instance.event_log_storage.get_concurrency_run_ids()
    if not holders:
        return
    for run in instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(holders), statuses=ENDED)):
        worker = run_worker(instance, run.run_id)
        gone = worker_gone(worker) if worker else "it never started"
        if gone is None:
            continue
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(
            f"run {run.run_id} ({run.job_name}) had ended ({run.status.value}) but still held "
            f"pool slots, and {gone}: freed them"
        )


def _console(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def job_pools(job: dg.JobDefinition) -> set[str]:
    return {op.pool for op in job.graph.iterate_op_defs() if op.pool}


def busy_pools(instance: dg.DagsterInstance, pools: set[str]) -> dict[str, list[str]]:
    """Each of `pools` whose slots are all taken, with the runs holding them."""
    busy = {}
    for pool in sorted(pools):
        info = instance.event_log_storage.get_concurrency_info(pool)
        if info.limit is not None and len(info.claimed_slots) >= info.limit:
            busy[pool] = sorted(info.active_run_ids)
    return busy


def ensure_pools(instance: dg.DagsterInstance, pools: set[str]) -> None:
    """Give each pool its row at the instance's default limit, once, before a run claims it.

    Dagster creates a pool's row at the first claim of one of its steps: two runs that claim a
    new pool at the same moment both insert it, and one fails (UniqueViolation). Here, before
    the runs, a process that loses that race finds the row made by the other and goes on.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    for attempt in range(5):
        missing = sorted(pools - storage.get_concurrency_keys())
        if not missing:
            return
        for pool in missing:
            try:
                storage.initialize_concurrency_limit_to_default(pool)
            except sqlalchemy.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.1)  # another process is creating it: looked at again above


def prepare_run(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    log: Callable[[str], None] | None = None,
    *,
    runs_are_local: bool = True,
) -> None:
    """Before a job runs in this process: no dead run holds its pools, and no live one does.

    `runs_are_local`: every run of the instance ran on this machine (the local profile's own
    instance), so a pid not alive here is a dead run. An instance shared with a deployment
    elsewhere is left to that deployment's run monitoring.
    """
    log = log or _console
    if not instance.event_log_storage.supports_global_concurrency_limits:
        return
    ensure_pools(instance, job_pools(job))
    if runs_are_local:
        fail_dead_runs(instance, log)
    said = None
    while busy := busy_pools(instance, job_pools(job)):
        if busy != said:
            for pool, runs in busy.items():
                log(
                    f"{job.name} waits for the pool {pool}: its slot is held by run "
                    f"{', '.join(runs)}"
                )
            said = busy
        time.sleep(POLL_SECONDS)
        if runs_are_local:
            fail_dead_runs(instance, log)


class _PoolReportingExecutor(PatientInProcessExecutor):
    def before_steps(self, plan_context) -> None:
        # The job's pools made first, for runs no `make run` prepared (the daemon's, the UI's).
        ensure_pools(plan_context.instance, job_pools(plan_context.job.get_definition()))
        self.materialized: list[str] = []
        self.failed = False

    def after_event(self, plan_context, event) -> None:
        if event.is_step_materialization:
            self.materialized.append(event.asset_key.to_user_string())
        self.failed = self.failed or event.is_step_failure
        # Dagster's own notice of a step blocked on a pool (its first, then every 5 min).
        pool = (
            event.event_specific_data.metadata.get("pool")
            if (event.is_engine_event and event.step_key and event.event_specific_data)
            else None
        )
        if pool is not None:
            runs = busy_pools(plan_context.instance, {pool.value}).get(pool.value, [])
            held_by = f"run {', '.join(runs)}" if runs else "another run"
            plan_context.log.info(
                f"{event.step_key} waits for the pool {pool.value}: its slot is held by {held_by}"
            )

    def closing_events(self, plan_context, execution_plan):
        if self.failed and (
            said := sinks_event(
                plan_context, execution_plan.step_keys_to_execute, self.materialized
            )
        ):
            yield said


def sinks_event(plan_context, step_keys: list[str], materialized: list[str]):
    """What a run with a failed step says on its page: which of the trip sinks its steps write
    it wrote, from its own materializations, and which it left as they were (None: its steps
    write none). Its red is then not read as a failed write where nothing was written, nor as
    nothing written where half was."""
    sinks = [
        sink
        for dataset in DATASETS.values()
        for sink in dataset.sink_assets
        if dg.AssetKey.from_user_string(sink).to_python_identifier() in step_keys
    ]
    if not sinks:
        return None
    written = [sink for sink in sinks if sink in materialized]
    unchanged = [sink for sink in sinks if sink not in materialized]
    return engine_event(
        plan_context,
        console.sinks_sentence(written, unchanged),
        {"sinks_written": written, "sinks_unchanged": unchanged},
    )


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
def in_process_executor(init_context) -> PatientInProcessExecutor:
    """Dagster's in-process executor, saying which run holds the pool a step waits for, and,
    when a step failed, which sinks the run wrote."""
    standard = dg.in_process_executor.executor_creation_fn(init_context)
    return _PoolReportingExecutor(
        retries=standard.retries,
        step_dependency_config=standard.step_dependency_config,
        marker_to_close=standard.marker_to_close,
    )
