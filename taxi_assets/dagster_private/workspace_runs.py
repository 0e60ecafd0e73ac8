"""Runs of workspace.yaml's code location from the terminal, and their workers' health.

Dagster 1.13 has no public API for: a run created from the terminal as the UI creates one (a
run of the workspace's code location, which the UI can list under its job and re-execute) but
executed in this process rather than handed to a run launcher; pooled storage connections for
a process that executes runs itself, as the webserver has them; run logs in a folder of their
own (`dagster.yaml` names `RunLogs`); and a run launcher's worker health check (run_health.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import (
    CodeLocationOrigin,
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._utils.hosted_user_process import recon_job_from_origin

__all__ = [
    "CheckRunHealthResult",
    "launcher_instance",
    "RunLogs",
    "WorkerStatus",
    "WorkspaceLocation",
    "execute_in_process",
    "pooled_storage_connections",
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


def launcher_instance(launcher: dg.RunLauncher) -> dg.DagsterInstance:
    """The instance a run launcher belongs to: a launcher holds it, but only privately."""
    return launcher._instance  # noqa: SLF001
