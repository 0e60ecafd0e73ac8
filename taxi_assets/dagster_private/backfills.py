"""Asset backfills from the terminal (`make backfill`, backfill/): a backfill of chosen
partitions per asset, as the UI launches one, and the daemon's own backfill and run-queue
iterations, run from this process when no daemon is up."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.execution.backfill import (
    BulkActionsFilter,
    BulkActionStatus,
    PartitionBackfill,
)
from dagster._core.utils import make_new_backfill_id
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.backfill import execute_backfill_jobs
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

__all__ = ["AssetBackfill", "BackfillDriver"]

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
            # The daemons log a caught error with its traceback; in a terminal, one line each.
            for daemon_logger in (queue._logger, logger):
                daemon_logger.addFilter(_one_line_errors)
            try:
                yield cls(context, queue, logger)
            finally:
                for daemon_logger in (queue._logger, logger):
                    daemon_logger.removeFilter(_one_line_errors)

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


def _one_line_errors(record: logging.LogRecord) -> bool:
    """A record's exception as the last line of its message, without the traceback."""
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        cause = (str(error).strip().splitlines() or [""])[-1]
        record.msg, record.args = f"{record.getMessage()}: {type(error).__name__}: {cause}", ()
        record.exc_info = record.exc_text = None
    return True
