"""The tutorial's GCS → BigQuery pipeline: the lake's trips, columns normalised, in a warehouse."""

import dataclasses

import dagster as dg
import pyarrow as pa

from taxi_assets.tlc.batches import RowsPerDay, TripBatches, rows_per_day
from taxi_assets.dagster_private import check_evaluation_for_partition
from taxi_assets.datasets import TripDataset
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.defs.partitions import daily_partitions

# Every step that opens the warehouse (each dataset's table and its check, the zones, dbt's
# models) takes this pool's one slot: while one process writes a DuckDB file, no other process
# can open it, not even to read.
WAREHOUSE_POOL = "warehouse"


def normalise_column_names(trips: TripBatches) -> TripBatches:
    """The tutorial's rule: spaces to underscores, lower case (`VendorID` → `vendorid`)."""
    names = [name.replace(" ", "_").lower() for name in trips.schema.names]
    # New names over the same column data.
    return trips.map(
        lambda batch: batch.rename_columns(names),
        pa.schema([field.with_name(name) for field, name in zip(trips.schema, names)]),
    )


def build_warehouse(dataset: TripDataset) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The dataset's warehouse table, and the check that it holds what the lake holds."""
    pickup, by_day = dataset.pickup, dataset.lake_by_day_asset

    @dg.asset(
        key=dataset.warehouse_asset,
        partitions_def=daily_partitions,
        ins={"trips": dg.AssetIn(by_day)},
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=dataset.group("warehouse"),
        kinds={"bigquery", "duckdb"},
        io_manager_key="warehouse_io_manager",
        metadata={"partition_expr": pickup.lower()},
        pool=WAREHOUSE_POOL,
        description=f"`{dataset.warehouse_table}`: the day-partitioned lake's "
        f"{dataset.title} trips, one warehouse partition a day.",
    )
    def warehouse_trips(trips: LakeDayFiles) -> LakeDayFiles:
        # The days' lake files, not their rows: the warehouse reads them where it can.
        return dataclasses.replace(
            trips, trips=normalise_column_names(trips.trips), normalised_names=True
        )

    @dg.asset_check(
        asset=warehouse_trips,
        name="warehouse_matches_lake",
        additional_ins={"lake_trips": dg.AssetIn(by_day, metadata={"columns": [pickup]})},
        partitions_def=daily_partitions,
        pool=WAREHOUSE_POOL,
        description="The warehouse holds exactly as many rows for each day as the lake does. "
        "Warns only: nothing is built from the warehouse table, so there is nothing to stop; "
        "a failed day says which sink to load again.",
    )
    def warehouse_matches_lake(
        context: dg.AssetCheckExecutionContext, warehouse_trips: RowsPerDay, lake_trips: TripBatches
    ) -> None:
        """One evaluation per day, each recorded against its own partition.

        A range of days runs as one run (single-run backfill), and an `AssetCheckResult` there
        can only be recorded without a partition, which leaves each day's planned evaluation
        without an outcome: the UI then shows the days as skipped and the check as passed at
        once. An evaluation that names its day settles that day's entry.
        """
        # Counted by the warehouse, and over the lake's pickup column batch by batch.
        warehouse_rows, lake_rows = warehouse_trips, rows_per_day(lake_trips, pickup)
        [check_key] = [spec.key for spec in context.check_specs]
        op_context = context.op_execution_context
        for day in op_context.partition_keys:
            in_warehouse, in_lake = warehouse_rows.get(day, 0), lake_rows.get(day, 0)
            op_context.log_event(
                check_evaluation_for_partition(
                    context.instance,
                    check_key,
                    day,
                    passed=in_warehouse == in_lake,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"warehouse_rows": in_warehouse, "lake_rows": in_lake},
                )
            )

    return warehouse_trips, warehouse_matches_lake
