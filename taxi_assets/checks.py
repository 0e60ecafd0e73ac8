"""Data-quality checks: Mage's block tests, as Dagster asset checks.

Only `no_zero_passenger_trips` blocks the sinks; the others warn, because real TLC files break
them every month (clock errors, new vendors) and the data is still worth loading.
"""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import monthly_partitions
from taxi_assets.schema import CANONICAL_COLUMNS, DROPOFF, PICKUP, to_pandas

KNOWN_VENDOR_IDS = {1, 2, 4, 5, 6, 7}  # the TLC data dictionary's vendors over the years

def _spec(name: str, **kwargs) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset="yellow_trips", partitions_def=monthly_partitions, **kwargs)


yellow_trips_checks = [
    _spec("no_zero_passenger_trips", blocking=True,
          description="No trip with zero or missing passengers reaches a sink."),
    _spec("dropoff_not_before_pickup"),
    _spec("known_vendor_ids"),
    _spec("pickups_near_file_month",
          description="Pickups fall in the file's month or the month before "
                      "(late-filed trips); others land in no daily partition."),
    _spec("only_known_columns",
          description="The month has no column beyond the canonical ones; a new one is "
                      "carried to every sink, and named here."),
]


def _result(name: str, failures: int, severity=dg.AssetCheckSeverity.WARN, **metadata):
    return dg.AssetCheckResult(
        check_name=name, passed=failures == 0, severity=severity,
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
    outside_months = 0
    unknown_ids: set[int] = set()
    pickups: list[pd.Timestamp] = []
    for batch in yellow_trips:
        trips = to_pandas(batch)
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
    yield _result("no_zero_passenger_trips", zero_passengers,
                  severity=dg.AssetCheckSeverity.ERROR)
    yield _result("dropoff_not_before_pickup", dropoff_before_pickup)
    yield _result("known_vendor_ids", unknown_vendor_rows,
                  missing_vendor_rows=missing_vendors, unknown_ids=sorted(unknown_ids))
    pickups = pd.Series(pickups, dtype="datetime64[us]")
    yield _result("pickups_near_file_month", outside_months,
                  earliest_pickup=str(pickups.min()), latest_pickup=str(pickups.max()))
    new_columns = [name for name in yellow_trips.schema.names if name not in CANONICAL_COLUMNS]
    yield dg.AssetCheckResult(
        check_name="only_known_columns", passed=not new_columns,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"new columns, carried to every sink: {', '.join(new_columns)}"
        if new_columns else None,
        metadata={"new_columns": new_columns},
    )
