"""What the instance recorded of an asset's latest materialization, of one partition or all."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.EventLogRecord | None:
    """The latest materialization of `key` (of its `partition`, when given); None if none."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=[partition] if partition is not None else None
        ),
        limit=1,
    ).records
    return records[0] if records else None


def latest_metadata_value(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    name: str,
    partition: str | None = None,
    former_key: dg.AssetKey | None = None,
):
    """The value of the metadata entry `name` of the latest materialization of `key` (of its
    `partition`, when given); None if there is no such materialization or it has no `name`.
    With `former_key` (the asset's key before a rename), an asset not materialized since the
    rename answers with what it recorded under that key."""
    record = latest_materialization(instance, key, partition)
    if record is None and former_key is not None:
        record = latest_materialization(instance, former_key, partition)
    entry = record.asset_materialization.metadata.get(name) if record else None
    return entry.value if entry is not None else None


def latest_storage_ids(
    instance: dg.DagsterInstance, key: dg.AssetKey, former_key: dg.AssetKey | None = None
) -> Mapping[str, int]:
    """Each partition's latest materialization, by storage id (one query for every partition).
    With `former_key` (the asset's key before a rename), a partition not materialized since the
    rename has its latest under that key."""
    storage = instance.event_log_storage
    latest = storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    if former_key is None:
        return latest
    former = storage.get_latest_storage_id_by_partition(
        former_key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    return {**former, **latest}
