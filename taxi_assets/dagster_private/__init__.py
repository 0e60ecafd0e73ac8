"""The one place that imports Dagster's private API (`dagster._…`), for the needs Dagster 1.13
has no public API for, each in a module of its own: runs of the workspace's code location
executed from the terminal (workspace_runs), what the IO managers need (io_managers), asset
events recorded outside a step (asset_events), backfills from the terminal (backfills) and the
in-process executor's wait for a pool slot (executor). The rest of the package imports them
from here."""

from taxi_assets.dagster_private.asset_events import (
    automation_run_requests,
    check_evaluation_for_partition,
    record_runless_materializations,
    set_auto_materialize_paused,
)
from taxi_assets.dagster_private.backfills import AssetBackfill, BackfillDriver
from taxi_assets.dagster_private.executor import (
    InstanceConcurrencyContext,
    PatientInProcessExecutor,
    engine_event,
)
from taxi_assets.dagster_private.io_managers import (
    DbIOManager,
    ProjectMaintained,
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
    running_step_job_writes,
    running_step_run_tags,
    running_step_time_window,
    static_where_clause,
)
from taxi_assets.dagster_private.workspace_runs import (
    CheckRunHealthResult,
    RunLogs,
    WorkerStatus,
    WorkspaceLocation,
    execute_in_process,
    launcher_instance,
    pooled_storage_connections,
)

__all__ = [
    "AssetBackfill",
    "BackfillDriver",
    "CheckRunHealthResult",
    "DbIOManager",
    "ProjectMaintained",
    "DbTypeHandler",
    "InstanceConcurrencyContext",
    "PatientInProcessExecutor",
    "RunLogs",
    "TablePartitionDimension",
    "TableSlice",
    "WorkerStatus",
    "WorkspaceLocation",
    "automation_run_requests",
    "check_evaluation_for_partition",
    "engine_event",
    "execute_in_process",
    "launcher_instance",
    "pooled_storage_connections",
    "record_runless_materializations",
    "running_step_job_writes",
    "running_step_run_tags",
    "running_step_time_window",
    "set_auto_materialize_paused",
    "static_where_clause",
]
