"""Asset events recorded outside a step: a check evaluation for one partition of a range run,
tied to that partition's materialization; materializations reported without a run, many at once
(the bench's simulated history); and automation's run requests and on/off switch."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests
from dagster._core.events import DagsterEvent
from dagster._daemon.asset_daemon import set_auto_materialize_paused

from taxi_assets.materializations import latest_materialization

__all__ = [
    "automation_run_requests",
    "check_evaluation_for_partition",
    "record_runless_materializations",
    "set_auto_materialize_paused",
]


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
