"""Data-quality checks: Mage's block tests, as Dagster asset checks.

`no_zero_passenger_trips` and `no_shrink` block the sinks; the others warn, because real TLC
files break them every month (clock errors, new vendors) and the data is still worth loading.
"""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import monthly_partitions
from taxi_assets.schema import CANONICAL_COLUMNS, DROPOFF, PICKUP, to_pandas
from taxi_assets.shrink_guard import ALLOW_SHRINK_TAG, shrink_allowed, shrink_refusal

# The sinks that hold exactly the month's `yellow_trips`: what a shrunken month would replace.
MONTHLY_SINKS = (dg.AssetKey(["ny_taxi", "yellow_cab_data"]), dg.AssetKey("yellow_trips_parquet"))

KNOWN_VENDOR_IDS = {1, 2, 4, 5, 6, 7}  # the TLC data dictionary's vendors over the years


def _spec(name: str, **kwargs) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name, asset="yellow_trips", partitions_def=monthly_partitions, **kwargs
    )


yellow_trips_checks = [
    _spec(
        "no_zero_passenger_trips",
        blocking=True,
        description="No trip with zero or missing passengers reaches a sink.",
    ),
    _spec(
        "no_shrink",
        blocking=True,
        description="The month keeps at least half the rows its sinks last materialized "
        f"(run tag {ALLOW_SHRINK_TAG}=true to replace it anyway).",
    ),
    _spec("dropoff_not_before_pickup"),
    _spec("known_vendor_ids"),
    _spec(
        "pickups_near_file_month",
        description="Pickups fall in the file's month or the month before "
        "(late-filed trips); others land in no daily partition.",
    ),
    _spec(
        "only_known_columns",
        description="The month has no column beyond the canonical ones; a new one is "
        "carried to every sink, and named here.",
    ),
]


def _result(name: str, failures: int, severity=dg.AssetCheckSeverity.WARN, **metadata):
    return dg.AssetCheckResult(
        check_name=name,
        passed=failures == 0,
        severity=severity,
        metadata={"failing_rows": failures, **metadata},
    )


@dg.multi_asset_check(specs=yellow_trips_checks, can_subset=False)
def yellow_trips_quality(
    context: dg.AssetCheckExecutionContext, yellow_trips: TripBatches
) -> Iterator[dg.AssetCheckResult]:
    # Counted over every batch of the month, so a failure in any one of them is seen.
    month = pd.Timestamp(context.partition_key)
    earliest, end = month - pd.DateOffset(months=1), month + pd.DateOffset(months=1)
    zero_passengers = dropoff_before_pickup = unknown_vendor_rows = missing_vendors = 0
    outside_months = rows = 0
    unknown_ids: set[int] = set()
    pickups: list[pd.Timestamp] = []
    for batch in yellow_trips:
        trips = to_pandas(batch)
        rows += len(trips)
        zero_passengers += int((trips["passenger_count"].fillna(0) <= 0).sum())
        dropoff_before_pickup += int((trips[DROPOFF] < trips[PICKUP]).sum())
        vendors = trips["VendorID"]
        unknown = vendors.notna() & ~vendors.isin(KNOWN_VENDOR_IDS)
        unknown_vendor_rows += int(unknown.sum())
        missing_vendors += int(vendors.isna().sum())
        unknown_ids.update(int(v) for v in vendors[unknown].unique())
        outside = (trips[PICKUP] < earliest) | (trips[PICKUP] >= end)
        outside_months += int(outside.sum())
        pickups += [trips[PICKUP].min(), trips[PICKUP].max()]
    yield _result("no_zero_passenger_trips", zero_passengers, severity=dg.AssetCheckSeverity.ERROR)
    yield _no_shrink(context, rows)
    yield _result("dropoff_not_before_pickup", dropoff_before_pickup)
    yield _result(
        "known_vendor_ids",
        unknown_vendor_rows,
        missing_vendor_rows=missing_vendors,
        unknown_ids=sorted(unknown_ids),
    )
    pickups = pd.Series(pickups, dtype="datetime64[us]")
    yield _result(
        "pickups_near_file_month",
        outside_months,
        earliest_pickup=str(pickups.min()),
        latest_pickup=str(pickups.max()),
    )
    new_columns = [name for name in yellow_trips.schema.names if name not in CANONICAL_COLUMNS]
    yield dg.AssetCheckResult(
        check_name="only_known_columns",
        passed=not new_columns,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"new columns, carried to every sink: {', '.join(new_columns)}"
        if new_columns
        else None,
        metadata={"new_columns": new_columns},
    )


def _materialized_rows(instance: dg.DagsterInstance, partition: str) -> int | None:
    """The most rows any monthly sink's last materialization of `partition` recorded."""
    counts = []
    for key in MONTHLY_SINKS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        if records:
            count = records[0].asset_materialization.metadata.get("dagster/row_count")
            if count is not None:
                counts.append(int(count.value))
    return max(counts, default=None)


def _no_shrink(context: dg.AssetCheckExecutionContext, rows: int) -> dg.AssetCheckResult:
    materialized = _materialized_rows(context.instance, context.partition_key)
    refusal = shrink_refusal(f"yellow_trips {context.partition_key[:7]}", materialized, rows)
    allowed = shrink_allowed(context.run.tags)
    if refusal and allowed:
        context.log.warning(
            f"{refusal.split(';')[0]}; replacing it, as the tag {ALLOW_SHRINK_TAG} asks"
        )
    elif refusal:
        context.log.error(refusal)
    return dg.AssetCheckResult(
        check_name="no_shrink",
        passed=refusal is None or allowed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=refusal if not allowed else None,
        metadata={
            "rows": rows,
            "materialized_rows": materialized or 0,
            "allowed_by_tag": bool(refusal and allowed),
        },
    )
