"""Trips into PostgreSQL, one list partition per Dagster partition, swapped atomically.

The IO manager says where a partition goes (`<key prefix>.<key name>`, the partition named by
the month, list-partitioned on `partition_column`); storage/postgres_swap.py loads it by binary
COPY into a staging table and swaps it in by one transaction: a reader sees the old rows or the
new rows, never neither, and a failed load leaves the old rows and nothing else.

An asset whose metadata names its month's lake object (`MonthObject.as_metadata`) has that
object written from the same batches during the COPY, staged under a hidden name, recorded by
the swap's transaction and published right after its commit: the month's two sinks switch
together (storage/month_versions.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.defs.resources import LakeResource, PostgresResource
from taxi_assets.storage import month_versions, postgres_swap
from taxi_assets.storage.lake_parquet import ParquetObject, stage_month_object
from taxi_assets.tlc.batches import TripBatches, prefetched
from taxi_assets.tlc.schema import to_pandas

PROGRESS_EVERY_ROWS = 250_000
MONTH_OBJECT_METADATA_KEY = "lake/month_object"


@dataclasses.dataclass(frozen=True)
class MonthObject:
    """The month's lake object a Postgres trips asset writes beside each partition."""

    name: str  # its lake name: `{name}/{YYYY-MM}.parquet`
    omits: str | None = None  # a column the partition has and the object leaves out

    def as_metadata(self) -> dict:
        """The asset metadata that has the asset write this object beside its partitions."""
        named = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {MONTH_OBJECT_METADATA_KEY: named}


def table_of(key: dg.AssetKey) -> tuple[str, str]:
    """The asset's table: `<key prefix>.<key name>` (schema defaults to `public`)."""
    return (key.path[-2] if len(key.path) > 1 else "public"), key.path[-1]


def _slug(partition_key: str) -> str:
    return re.sub(r"\W", "_", partition_key)


class _Progress:
    """Rows sent so far, logged every PROGRESS_EVERY_ROWS; keeps the first rows for a preview."""

    def __init__(self, context: dg.OutputContext, target: str, total: int | None):
        self.context, self.target, self.total = context, target, total
        self.sent = self.reported = 0
        self.head: pa.RecordBatch | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if self.head is None:
            self.head = batch.slice(0, 5)
        self.sent += batch.num_rows
        if self.sent - self.reported >= PROGRESS_EVERY_ROWS or self.sent == self.total:
            of = f" of {self.total:,}" if self.total is not None else ""
            self.context.log.info(f"{self.target}: {self.sent:,}{of} rows loaded")
            self.reported = self.sent


class PostgresPandasIOManager(dg.ConfigurableIOManager):
    """Writes an asset to the table `<key prefix>.<key name>` (schema defaults to `public`).

    `partition_column` is the column that records which partition a row came from; the table
    is list-partitioned on it, the same for every table. With `lake`, an asset whose metadata
    names its month's lake object gets that object written beside the partition, one version.
    """

    postgres: PostgresResource
    lake: LakeResource | None = None
    partition_column: str = "source_month"

    def _partition_value(self, context: dg.OutputContext | dg.InputContext, key: str) -> str:
        window = context.asset_partitions_def.time_window_for_partition_key(key)
        return window.start.date().isoformat()

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        schema, table = table_of(context.asset_key)
        column, name = self.partition_column, f"{schema}.{table}"
        partition = postgres_swap.Partition(
            schema,
            table,
            column,
            self._partition_value(context, context.partition_key),
            name=f"{table}_{_slug(context.partition_key)}",
        )
        trips = TripBatches.of(obj)
        progress = _Progress(context, partition.target, trips.num_rows)
        named = context.definition_metadata.get(MONTH_OBJECT_METADATA_KEY)
        month_object = MonthObject(**named) if named else None
        staged = self._stage_month_object(context, month_object, name, partition.value, trips)
        rows = self._with_partition_column(trips, column, partition.value, progress, staged)

        def record_swap(conn) -> None:
            # The version the month's object must hold, committed with the swap.
            month_versions.record_swap(
                conn,
                name,
                partition.value,
                context.run_id,
                staged and staged.hidden,
                staged and staged.path,
            )

        try:
            with adbc.connect(self.postgres.uri()) as conn:
                month_versions.create_table(conn)
                postgres_swap.replace_partition(
                    conn,
                    partition,
                    f"{partition.name}__{context.run_id[:8]}",
                    rows.reader(),
                    before_swap=staged.stage if staged is not None else lambda: None,
                    with_swap=record_swap if month_object is not None else lambda conn: None,
                )
        except BaseException:
            if staged is not None:
                staged.discard()
            raise

        if staged is not None:
            self._publish_month_object(context, name, partition.value, staged)
        context.log.info(
            f"{partition.target}: partition {context.partition_key} replaced with "
            f"{progress.sent:,} rows"
        )
        context.add_output_metadata(
            {
                "dagster/row_count": progress.sent,
                "table": name,
                "rows_loaded": progress.sent,
                "preview": dg.MetadataValue.md(
                    to_pandas(progress.head or trips.schema.empty_table()).to_markdown(index=False)
                ),
            }
        )

    def _stage_month_object(
        self, context, month_object: MonthObject | None, name: str, month: str, trips: TripBatches
    ) -> ParquetObject | None:
        """The month's lake object to write beside the partition, if the asset has one; a
        dead run's committed object is published first, so nothing overwrites it."""
        if self.lake is None or month_object is None:
            return None
        self.lake.check_reachable()  # fails fast, naming the settings, before any lake call
        month_versions.settle(self.postgres.uri(), self.lake.filesystem(), name, month, context.log)
        schema = trips.schema
        if month_object.omits in schema.names:
            schema = schema.remove(schema.get_field_index(month_object.omits))
        return stage_month_object(
            self.lake.filesystem(), month_object.name, month, schema, context.run_id
        )

    def _publish_month_object(self, context, name: str, month: str, staged: ParquetObject):
        try:
            month_versions.settle(self.postgres.uri(), self.lake.filesystem(), name, month)
        except Exception as error:  # committed: whoever touches the month next publishes it
            staged.release()
            context.log.warning(
                f"{month}: {name} holds this run's version of the month; publishing the lake's "
                f"{staged.path} failed ({error}): the month object's step, the check "
                "lake_month_matches_postgres or the month's next run publishes it"
            )
            return
        # Published, or superseded by a run of the month that committed after this one.
        staged.discard()

    @staticmethod
    def _with_partition_column(
        trips: TripBatches,
        column: str,
        value: str,
        progress: _Progress,
        staged: ParquetObject | None,
    ) -> TripBatches:
        schema = trips.schema.remove_metadata().append(pa.field(column, pa.date32()))
        day = pa.scalar(dt.date.fromisoformat(value), pa.date32())
        lake_columns = staged and staged.schema.names

        def batches():
            for batch in prefetched(trips):
                if staged is not None:  # the same batch, to the month's lake object
                    staged.append(batch.select(lake_columns))
                yield pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.repeat(day, batch.num_rows)], schema=schema
                )
                progress.add(batch)

        return TripBatches(schema, batches)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        schema, table = table_of(context.asset_key)
        values = [self._partition_value(context, key) for key in context.asset_partition_keys]
        return postgres_swap.read_rows(
            self.postgres.uri(), schema, table, self.partition_column, values
        )
