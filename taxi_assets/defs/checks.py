"""Data-quality checks on a dataset's cleaned trips: Mage's block tests, as Dagster asset checks.

Each drop rule's check (`no_zero_passenger_trips`, green's `no_zero_distance_trips`) and
`no_shrink` block the sinks, and so does `known_vendor_ids` where the dataset says so; the
others warn, because real TLC files break them every month (clock errors) and the data is
still worth loading.
"""

from collections.abc import Iterator

import dagster as dg

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.tlc.trip_quality import QUALITY_COUNTS_KEY, QualityCounts, counted
from taxi_assets.datasets import TripDataset
from taxi_assets.materializations import latest_metadata_value
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.shrink_guard import ALLOW_SHRINK_TAG, shrink_allowed, shrink_refusal


def _result(name: str, failures: int, severity=dg.AssetCheckSeverity.WARN, **metadata):
    return dg.AssetCheckResult(
        check_name=name,
        passed=failures == 0,
        severity=severity,
        metadata={"failing_rows": failures, **metadata},
    )


def monthly_sinks(dataset: TripDataset) -> list[dg.AssetKey]:
    """The sinks that hold exactly the month's cleaned trips: what a shrunken month replaces."""
    return [dataset.postgres_asset, dg.AssetKey(dataset.lake_month_asset)]


def build_quality_checks(dataset: TripDataset) -> dg.AssetChecksDefinition:
    vendor = dataset.column("VendorID")
    known_vendors = sorted(dataset.known_vendor_ids)

    def spec(name: str, description: str, why: str = "", blocking: bool = False):
        # The UI shows the description alone: it says what blocking means, or why it warns.
        consequence = (
            "Blocking: a failure stops the month's sinks from being written."
            if blocking
            else f"Warns only: {why}"
        )
        return dg.AssetCheckSpec(
            name,
            asset=dataset.cleaned_asset,
            partitions_def=monthly_partitions,
            blocking=blocking,
            description=f"{description} {consequence}",
        )

    specs = [
        *(
            spec(
                rule.check_name,
                blocking=True,
                description=f"No trip with {rule.what} reaches a sink.",
            )
            for rule in dataset.drop_rules
        ),
        spec(
            "no_shrink",
            blocking=True,
            description="The month keeps at least half the rows its sinks last materialized "
            f"(run tag {ALLOW_SHRINK_TAG}=true to replace it anyway).",
        ),
        spec(
            "dropoff_not_before_pickup",
            description="No trip is dropped off before it is picked up.",
            why="real TLC files break it every month (clock errors), and the trips are still "
            "worth loading.",
        ),
        *(
            [
                spec(
                    "known_vendor_ids",
                    blocking=dataset.vendor_check_blocks,
                    description=f"{vendor} is one of {known_vendors}; rows without one are "
                    "counted apart and pass.",
                    why="real files carry new vendors before the TLC's data dictionary names "
                    "them, and their trips are still worth loading.",
                )
            ]
            if known_vendors
            else []
        ),
        spec(
            "pickups_near_file_month",
            description="Pickups fall in the file's month or the month before "
            "(late-filed trips); others land in no daily partition.",
            why="such trips stay in Postgres and the monthly file; only the days miss them.",
        ),
        spec(
            "only_known_columns",
            description="The month has no column beyond the canonical ones; a new one is "
            "carried to every sink, and named here.",
            why="a new column loses nothing; it is news for the tables' readers.",
        ),
    ]
    known_columns = {dataset.column(name) for name in dataset.canonical_columns}
    vendor_severity = (
        dg.AssetCheckSeverity.ERROR if dataset.vendor_check_blocks else dg.AssetCheckSeverity.WARN
    )

    @dg.multi_asset_check(
        specs=specs,
        can_subset=False,
        name=f"{dataset.cleaned_asset}_quality",
        ins={"trips": dg.AssetIn(dataset.cleaned_asset)},
    )
    def quality(
        context: dg.AssetCheckExecutionContext, trips: TripBatches
    ) -> Iterator[dg.AssetCheckResult]:
        # Counted over every batch of the month, so a failure in any one of them is seen: by
        # the cleaning as its batches passed, kept in the staged file's footer; a file staged
        # without them is read here.
        stored = trips.metadata.get(QUALITY_COUNTS_KEY)
        counts = (
            QualityCounts.of(stored)
            if stored
            else counted(dataset, context.partition_key, trips.schema.names, trips)
        )
        for name, failures in counts.not_dropped.items():
            yield _result(name, failures, severity=dg.AssetCheckSeverity.ERROR)
        yield _no_shrink(context, dataset, counts.rows)
        yield _result("dropoff_not_before_pickup", counts.dropoff_before_pickup)
        if known_vendors:
            yield _result(
                "known_vendor_ids",
                counts.unknown_vendor_rows,
                severity=vendor_severity,
                missing_vendor_rows=counts.missing_vendors,
                unknown_ids=counts.unknown_ids,
            )
        yield _result(
            "pickups_near_file_month",
            counts.outside_months,
            earliest_pickup=counts.earliest_pickup,
            latest_pickup=counts.latest_pickup,
        )
        new_columns = [name for name in counts.columns if name not in known_columns]
        yield dg.AssetCheckResult(
            check_name="only_known_columns",
            passed=not new_columns,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"new columns, carried to every sink: {', '.join(new_columns)}"
            if new_columns
            else None,
            metadata={"new_columns": new_columns},
        )

    return quality


def _materialized_rows(
    instance: dg.DagsterInstance, sinks: list[dg.AssetKey], partition: str
) -> int | None:
    """The most rows any monthly sink's last materialization of `partition` recorded."""
    counts = (latest_metadata_value(instance, key, "dagster/row_count", partition) for key in sinks)
    return max((int(count) for count in counts if count is not None), default=None)


def _no_shrink(
    context: dg.AssetCheckExecutionContext, dataset: TripDataset, rows: int
) -> dg.AssetCheckResult:
    materialized = _materialized_rows(
        context.instance, monthly_sinks(dataset), context.partition_key
    )
    refusal = shrink_refusal(
        f"{dataset.cleaned_asset} {context.partition_key[:7]}", materialized, rows
    )
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
