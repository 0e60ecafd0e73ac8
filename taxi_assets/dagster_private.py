"""The one module that imports Dagster's private API (`dagster._core`).

Five needs have no public API in Dagster 1.13: the building blocks of the warehouse IO
managers (`DbIOManager` and its table types, re-exported here); a run created from the terminal
as the UI creates one, i.e. a run of the workspace's code location, which the UI can list under
its job and re-execute, but executed in this process rather than handed to a run launcher; a
check evaluation for one partition of a range run, tied to that partition's materialization;
run logs in a folder of their own (`dagster.yaml` names `RunLogs`); and, for dead runs and
pools (run_health.py), a run launcher's worker health check and the in-process executor's
wait for a pool slot; and, for `make backfill` (backfill/), an asset backfill of chosen
partitions per asset, and the daemon's own backfill and run-queue iterations, run from the
terminal when no daemon is up; and the switch the UI's "Auto-materialize on/off" headers read,
which only the sensorless automation daemon obeys; and pooled storage connections for a
process that executes runs itself, as the webserver has them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable, execute_run
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.backfill import (
    BulkActionsFilter,
    BulkActionStatus,
    PartitionBackfill,
)
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import (
    CodeLocationOrigin,
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.storage.db_io_manager import (
    DbIOManager,
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
    static_where_clause,
)
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.utils import make_new_backfill_id
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.asset_daemon import set_auto_materialize_paused
from dagster._daemon.backfill import execute_backfill_jobs
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._utils.interrupts import pop_captured_interrupt

from taxi_assets.materializations import latest_materialization

__all__ = [
    "automation_run_requests",
    "record_runless_materializations",
    "AssetBackfill",
    "BackfillDriver",
    "running_step_run_tags",
    "running_step_time_window",
    "CheckRunHealthResult",
    "DagsterEvent",
    "DbIOManager",
    "DbTypeHandler",
    "EngineEventData",
    "ExecuteRunWithPlanIterable",
    "InProcessExecutor",
    "InstanceConcurrencyContext",
    "JobExecutionResult",
    "PlanExecutionContextManager",
    "RunLogs",
    "TablePartitionDimension",
    "TableSlice",
    "WorkspaceLocation",
    "check_evaluation_for_partition",
    "WorkerStatus",
    "execute_in_process",
    "inner_plan_execution_iterator",
    "pop_captured_interrupt",
    "set_auto_materialize_paused",
    "static_where_clause",
]


class WorkspaceLocation:
    """A code location of `workspace.yaml`, loaded in this process, that records its runs with
    the origin the webserver's own launches carry (the workspace's, not an in-process one)."""

    def __init__(self, origin: CodeLocationOrigin, location: CodeLocation):
        self.origin = origin
        self._location = location

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, workspace_yaml: Path, location_name: str, instance: dg.DagsterInstance
    ) -> Iterator[WorkspaceLocation]:
        origins = {
            o.location_name: o for o in location_origins_from_yaml_paths([str(workspace_yaml)])
        }
        if location_name not in origins:
            raise ValueError(
                f"{workspace_yaml} has no code location {location_name!r}: it has {sorted(origins)}"
            )
        origin = origins[location_name]
        target = getattr(origin, "loadable_target_origin", None)
        if target is None:
            raise ValueError(
                f"code location {location_name!r} in {workspace_yaml} is served by "
                "a gRPC server; runs from the terminal need one loaded from Python"
            )
        in_process = InProcessCodeLocationOrigin(target, location_name=location_name)
        with in_process.create_location(instance) as location:
            yield cls(origin, location)

    def create_run(
        self,
        instance: dg.DagsterInstance,
        job_name: str,
        *,
        tags: Mapping[str, str],
        run_config: Mapping | None = None,
        asset_selection: Sequence[dg.AssetKey] | None = None,
    ) -> dg.DagsterRun:
        """A NOT_STARTED run of `job_name`, made as the UI's launch makes one
        (`create_valid_pipeline_run` in dagster-graphql)."""
        (repository,) = self._location.get_repositories().values()
        selector = JobSubsetSelector(
            location_name=self._location.name,
            repository_name=repository.name,
            job_name=job_name,
            op_selection=None,
            asset_selection=list(asset_selection) if asset_selection else None,
        )
        remote_job = self._location.get_job(selector)
        plan = self._location.get_execution_plan(
            remote_job,
            run_config or {},
            step_keys_to_execute=None,
            known_state=None,
            instance=instance,
        ).execution_plan_snapshot
        origin = RemoteJobOrigin(
            repository_origin=RemoteRepositoryOrigin(self.origin, repository.name),
            job_name=job_name,
        )
        return instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=run_config or {},
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={**remote_job.tags, **tags},
            op_selection=None,
            resolved_op_selection=None,
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            asset_check_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            root_run_id=None,
            parent_run_id=None,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=origin,
            job_code_origin=remote_job.get_python_origin(),
            asset_graph=repository.asset_graph,
        )


def execute_in_process(run: dg.DagsterRun, instance: dg.DagsterInstance) -> JobExecutionResult:
    """Execute a created run here, as a run worker (`dagster api execute_run`) would."""
    return execute_run(recon_job_from_origin(run.job_code_origin), run, instance)


@contextlib.contextmanager
def pooled_storage_connections(instance: dg.DagsterInstance) -> Iterator[None]:
    """The instance's PostgreSQL storages keep their connections while this process executes
    runs, as the webserver's do, instead of opening one per query: a run of an empty month
    opened about 250 of them. Closed at the end, so a process does not hold them after."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)
    try:
        yield
    finally:
        for storage in (
            instance.run_storage,
            instance.event_log_storage,
            instance.schedule_storage,
        ):
            engine = getattr(storage, "_engine", None)
            if engine is not None:
                engine.dispose()


class RunLogs(LocalComputeLogManager):
    """Dagster's local compute logs, in `<base_dir>/storage` beside its other run artifacts
    (`LocalArtifactStorage`'s folder) rather than one folder per run at the top of base_dir."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> RunLogs:
        config = dict(config_value)
        config["base_dir"] = os.path.join(config["base_dir"], "storage")
        return cls(inst_data=inst_data, **config)


def check_evaluation_for_partition(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, partition: str, **fields
) -> dg.AssetCheckEvaluation:
    """An evaluation of `check_key` for one partition, about that partition's latest
    materialization, as an `AssetCheckResult` of a single-partition run records it. Without
    that link the UI takes the result for a stale one and shows the partition unchecked."""
    latest = latest_materialization(instance, check_key.asset_key, partition)
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            run_id=latest.event_log_entry.run_id,
            storage_id=latest.storage_id,
            timestamp=latest.timestamp,
        )
        if latest
        else None
    )
    return dg.AssetCheckEvaluation(
        asset_key=check_key.asset_key,
        check_name=check_key.name,
        partition=partition,
        target_materialization_data=target,
        **fields,
    )


def running_step_time_window(context: dg.InputContext) -> dg.TimeWindow:
    """The time window of the step that loads an input. `InputContext` exposes the upstream
    partitions' window only; a day reading its months needs its own day's window."""
    return context.step_context.partition_time_window


def running_step_run_tags(context: dg.OutputContext) -> Mapping[str, str]:
    """The tags of the run writing an output: an IO manager's context has no public way to them."""
    return context.step_context.run_tags


def running_step_job_writes(context: dg.OutputContext, key: dg.AssetKey) -> bool:
    """Whether the run writing an output also materializes asset `key`: an IO manager's context
    has no public way to the run's selection."""
    return key in context.step_context.job_def.asset_layer.selected_asset_keys


def automation_run_requests(result, asset_graph) -> list[dg.RunRequest]:
    """What an automation sensor's tick requests for the result of
    `dg.evaluate_automation_conditions`, as the sensor builds it (emitting a backfill when more
    than one partition is requested, as `AutomationConditionSensorDefinition` does by default)."""
    return list(
        build_run_requests(result._requested_subsets, asset_graph, None, emit_backfills=True)
    )


def record_runless_materializations(
    instance: dg.DagsterInstance, materializations: Sequence[dg.AssetMaterialization]
) -> None:
    """`report_runless_asset_event` for many at once: one insert per batch where the storage
    supports it (PostgreSQL), for the bench's simulated years of history."""
    from dagster._core.events import StepMaterializationData
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    entries = [
        dg.EventLogEntry(
            user_message="",
            level=logging.INFO,
            job_name=RUNLESS_JOB_NAME,
            run_id=RUNLESS_RUN_ID,
            error_info=None,
            timestamp=time.time(),
            step_key=None,
            dagster_event=DagsterEvent(
                event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
                event_specific_data=StepMaterializationData(materialization),
                job_name=RUNLESS_JOB_NAME,
            ),
        )
        for materialization in materializations
    ]
    for start in range(0, len(entries), 1000):
        instance.event_log_storage.store_event_batch(entries[start : start + 1000])


# --- asset backfills from the terminal (backfill/) --------------------------------------------

BACKFILL_IN_PROGRESS = ("REQUESTED", "CANCELING", "FAILING")


class AssetBackfill:
    """An asset backfill in the instance, as the UI's *Backfills* page lists it: what it
    targets, what is done and what failed, by asset key, in partition keys."""

    def __init__(self, backfill: PartitionBackfill):
        self._backfill = backfill

    @classmethod
    def create(
        cls,
        instance: dg.DagsterInstance,
        partitions: Mapping[dg.AssetKey, tuple[dg.PartitionsDefinition, Sequence[str]]],
        *,
        tags: Mapping[str, str],
        title: str,
        description: str,
    ) -> AssetBackfill:
        """A REQUESTED backfill of exactly these partitions of these assets, as the UI launches
        one for a partition selection (`PartitionBackfill.from_asset_graph_subset`)."""
        subset = AssetGraphSubset(
            partitions_subsets_by_asset_key={
                key: partitions_def.subset_with_partition_keys(keys)
                for key, (partitions_def, keys) in partitions.items()
                if keys
            }
        )
        backfill = PartitionBackfill.from_asset_graph_subset(
            backfill_id=make_new_backfill_id(),
            backfill_timestamp=time.time(),
            tags=tags,
            dynamic_partitions_store=instance,
            asset_graph_subset=subset,
            title=title,
            description=description,
            run_config=None,
        )
        instance.add_backfill(backfill)
        return cls(backfill)

    @classmethod
    def get(cls, instance: dg.DagsterInstance, backfill_id: str) -> AssetBackfill:
        backfill = instance.get_backfill(backfill_id)
        if backfill is None:
            raise ValueError(f"no backfill {backfill_id} in this instance")
        return cls(backfill)

    @classmethod
    def in_progress(cls, instance: dg.DagsterInstance, tags: Mapping[str, str]) -> list:
        """The backfills with these tags that are not finished (requested, canceling)."""
        statuses = [BulkActionStatus[name] for name in BACKFILL_IN_PROGRESS]
        found = instance.get_backfills(filters=BulkActionsFilter(statuses=statuses, tags=tags))
        return [cls(backfill) for backfill in found]

    @property
    def backfill_id(self) -> str:
        return self._backfill.backfill_id

    @property
    def status(self) -> str:
        return self._backfill.status.value

    @property
    def tags(self) -> Mapping[str, str]:
        return self._backfill.tags

    @property
    def is_finished(self) -> bool:
        return self.status not in BACKFILL_IN_PROGRESS

    def _keys(self, subset_name: str, key: dg.AssetKey) -> set[str]:
        data = self._backfill.asset_backfill_data
        subset = getattr(data, subset_name) if data else None
        if subset is None or key not in subset.partitions_subsets_by_asset_key:
            return set()
        return set(subset.get_partitions_subset(key).get_partition_keys())

    def targeted(self, key: dg.AssetKey) -> set[str]:
        return self._keys("target_subset", key)

    def materialized(self, key: dg.AssetKey) -> set[str]:
        return self._keys("materialized_subset", key)

    def failed(self, key: dg.AssetKey) -> set[str]:
        """Partitions that failed, or were not run because one they need failed."""
        return self._keys("failed_and_downstream_subset", key)

    def cancel(self, instance: dg.DagsterInstance) -> None:
        """Ask for the backfill to stop, as the UI's Cancel does: its runs are terminated (by
        whoever drives it) and it ends CANCELED."""
        current = instance.get_backfill(self.backfill_id)
        if current is not None and current.status == BulkActionStatus.REQUESTED:
            instance.update_backfill(current.with_status(BulkActionStatus.CANCELING))


class BackfillDriver:
    """What `dagster-daemon` does for backfills, done from this process: the backfill daemon's
    iteration (requests the runs whose partitions are ready) and the run queue's (launches
    queued runs within the instance's run limits, through its run launcher, from a code server
    of workspace.yaml this driver starts)."""

    def __init__(
        self,
        context: WorkspaceProcessContext,
        queue: QueuedRunCoordinatorDaemon,
        logger: logging.Logger,
    ):
        self._context = context
        self._queue = queue
        self._logger = logger

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, instance: dg.DagsterInstance, workspace_yaml: Path, logger: logging.Logger
    ) -> Iterator[BackfillDriver]:
        target = WorkspaceFileTarget(paths=[str(workspace_yaml)])
        with (
            WorkspaceProcessContext(instance, target) as context,
            QueuedRunCoordinatorDaemon(interval_seconds=0) as queue,
        ):
            yield cls(context, queue, logger)

    def iterate(self, backfill_ids: Sequence[str]) -> list[str]:
        """One iteration over these backfills and the run queue; the errors, as messages."""
        instance = self._context.instance
        backfills = [instance.get_backfill(backfill_id) for backfill_id in backfill_ids]
        errors = [
            error.to_string()
            for error in execute_backfill_jobs(
                self._context, self._logger, [b for b in backfills if b is not None]
            )
            if error is not None
        ]
        for _ in self._queue.run_iteration(self._context):
            pass
        return errors
