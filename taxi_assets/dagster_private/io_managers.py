"""What the IO managers take from Dagster's internals: the building blocks of the warehouse IO
managers (`DbIOManager` and its table types), and the running step an IO manager's context
has no public way to (its own day's window, its run's tags, its run's selection)."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.storage.db_io_manager import (
    DbIOManager,
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
    static_where_clause,
)

__all__ = [
    "DbIOManager",
    "ProjectMaintained",
    "DbTypeHandler",
    "TablePartitionDimension",
    "TableSlice",
    "running_step_job_writes",
    "running_step_run_tags",
    "running_step_time_window",
    "static_where_clause",
]


class ProjectMaintained:
    """For a subclass of an IO manager Dagster maintains: Dagster's telemetry, where it is on,
    then counts it as this project's, not as Dagster's own."""

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False


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
