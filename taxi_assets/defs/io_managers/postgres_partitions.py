"""Trips into PostgreSQL, one list partition per Dagster partition, swapped atomically.

The rows land by binary COPY (ADBC `adbc_ingest`) in a staging table that nobody reads; the same
transaction then detaches the partition's old table and attaches the new one, a short last step
and the only one readers wait for. A reader sees the old rows or the new rows, never neither,
and a failed load, even one whose server dies midway, leaves the old rows and nothing else.

An asset naming its month's lake object (metadata "lake/month_object") has that object written
from the same batches during the COPY, staged under a hidden name, recorded by the swap's
transaction and published right after its commit: the month's two sinks switch together
(month_publishes.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.tlc.batches import TripBatches, prefetched
from taxi_assets.storage import month_versions as month_publishes
from taxi_assets.storage.lake_parquet import stage_month_object
from taxi_assets.defs.resources import LakeResource, PostgresResource
from taxi_assets.tlc.schema import to_pandas

# On a Postgres trips asset: the month object's lake name, written beside the partition, and
# a column the partition has that the object leaves out.
MONTH_OBJECT_METADATA_KEY = "lake/month_object"
MONTH_OBJECT_OMITS_METADATA_KEY = "lake/month_object_omits"
PROGRESS_EVERY_ROWS = 250_000


class TargetTableMismatch(ValueError):
    """The table the rows go to exists with a shape this project does not write."""


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


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

    The asset's `partition_column` metadata names the column that records which partition a
    row came from; the table is list-partitioned on it. With `lake`, an asset whose metadata
    names its month's lake object gets that object written beside the partition, one version.
    """

    postgres: PostgresResource
    lake: LakeResource | None = None

    @staticmethod
    def _table(key: dg.AssetKey) -> tuple[str, str]:
        return (key.path[-2] if len(key.path) > 1 else "public"), key.path[-1]

    @staticmethod
    def _partition_value(context: dg.OutputContext | dg.InputContext, key: str) -> str:
        window = context.asset_partitions_def.time_window_for_partition_key(key)
        return window.start.date().isoformat()

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        schema, table = self._table(context.asset_key)
        column = context.definition_metadata["partition_column"]
        value = self._partition_value(context, context.partition_key)
        trips = TripBatches.of(obj)
        target = f"{quote(schema)}.{quote(table)}"
        partition = f"{table}_{_slug(context.partition_key)}"
        staging = f"{partition}__{context.run_id[:8]}"
        progress = _Progress(context, target, trips.num_rows)
        uri, name = self.postgres.uri(), f"{schema}.{table}"
        object_name = context.definition_metadata.get(MONTH_OBJECT_METADATA_KEY)
        month_object = self._stage_month_object(context, object_name, name, value, trips)
        rows = self._with_partition_column(trips, column, value, progress, month_object)

        try:
            with adbc.connect(uri) as conn:
                month_publishes.create_table(conn)
                self._create_schema(conn, schema)
                self._check_target(conn, schema, table, column)
                # One transaction from the staging table's creation to the swap's commit: if
                # the run or the server dies at any point, the server discards it all, staging
                # included, and the month's staged lake object is never published.
                with rolled_back_on_failure(conn):
                    with conn.cursor() as cur:
                        # The driver sends the COPY with the GIL released while a thread reads
                        # and prepares the next batches: client and server work at once.
                        cur.adbc_ingest(
                            staging, rows.reader(), mode="create", db_schema_name=schema
                        )
                        # The constraint lets ATTACH skip its validating scan of the new rows.
                        cur.execute(
                            f"ALTER TABLE {quote(schema)}.{quote(staging)} ADD CONSTRAINT "
                            f"{quote(staging + '_partition')} CHECK ({quote(column)} IS NOT "
                            f"NULL AND {quote(column)} = DATE '{value}')"
                        )
                    if month_object is not None:
                        month_object.stage()
                    self._swap(conn, schema, table, column, staging, partition, value)
                    if object_name is not None:  # the version the month's object must hold
                        month_publishes.record_swap(
                            conn,
                            name,
                            value,
                            context.run_id,
                            month_object and month_object.hidden,
                            month_object and month_object.path,
                        )
                    conn.commit()  # the month's switch, in both sinks
        except BaseException:
            if month_object is not None:
                month_object.discard()
            raise

        if month_object is not None:
            self._publish_month_object(context, uri, name, value, month_object)
        context.log.info(
            f"{target}: partition {context.partition_key} replaced with {progress.sent:,} rows"
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
        self, context, object_name: str | None, name: str, month: str, trips: TripBatches
    ):
        """The month's lake object to write beside the partition, if the asset names one; a
        dead run's committed object is published first, so nothing overwrites it."""
        if self.lake is None or object_name is None:
            return None
        self.lake.check_reachable()  # fails fast, naming the settings, before any lake call
        month_publishes.settle(
            self.postgres.uri(), self.lake.filesystem(), name, month, context.log
        )
        omitted = context.definition_metadata.get(MONTH_OBJECT_OMITS_METADATA_KEY)
        schema = trips.schema
        if omitted in schema.names:
            schema = schema.remove(schema.get_field_index(omitted))
        return stage_month_object(
            self.lake.filesystem(), str(object_name), month, schema, context.run_id
        )

    def _publish_month_object(self, context, uri: str, name: str, month: str, month_object):
        try:
            month_publishes.settle(uri, self.lake.filesystem(), name, month)
        except Exception as error:  # committed: whoever touches the month next publishes it
            month_object.release()
            context.log.warning(
                f"{month}: {name} holds this run's version of the month; publishing the lake's "
                f"{month_object.path} failed ({error}): the month object's step, the check "
                "lake_month_matches_postgres or the month's next run publishes it"
            )
            return
        # Published, or superseded by a run of the month that committed after this one.
        month_object.discard()

    @staticmethod
    def _with_partition_column(
        trips: TripBatches, column: str, value: str, progress: _Progress, month_object=None
    ) -> TripBatches:
        schema = trips.schema.remove_metadata().append(pa.field(column, pa.date32()))
        day = pa.scalar(dt.date.fromisoformat(value), pa.date32())
        lake_columns = month_object and month_object.schema.names

        def batches():
            for batch in prefetched(trips):
                if month_object is not None:  # the same batch, to the month's lake object
                    month_object.append(batch.select(lake_columns))
                yield pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.repeat(day, batch.num_rows)], schema=schema
                )
                progress.add(batch)

        return TripBatches(schema, batches)

    @staticmethod
    def _create_schema(conn, schema: str) -> None:
        with conn.cursor() as cur:
            # Two first runs would both miss the schema and the second would fail creating it.
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))"
                % _literal(f"CREATE SCHEMA {quote(schema)}")
            )
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        conn.commit()

    @staticmethod
    def _check_target(conn, schema: str, table: str, column: str) -> None:
        """Refuse, before any row moves, a table of that name this project did not make."""
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.relkind, (SELECT string_agg(a.attname, ',') FROM pg_partitioned_table p"
                " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY(p.partattrs)"
                " WHERE p.partrelid = c.oid)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                f" WHERE n.nspname = {_literal(schema)} AND c.relname = {_literal(table)}"
            )
            found = cur.fetchone()
        conn.commit()
        if found is None:
            return
        kind, partition_key = found
        name = f"{schema}.{table}"
        fix = (
            f"Nothing was loaded. Keep its rows under another name (ALTER TABLE {name} "
            f"RENAME TO {table}_old) or drop it, then run again: the project creates {name} "
            f"itself, list-partitioned on {column}, one partition per month."
        )
        if kind != "p" or partition_key != column:
            what = (
                "a plain table"
                if kind == "r"
                else (f"partitioned on {partition_key}" if kind == "p" else f"of relkind {kind!r}")
            )
            raise TargetTableMismatch(
                f"{name} exists but is not the project's table ({what}, e.g. one the "
                f"tutorial's to_sql made). {fix}"
            )
        # Other columns than the rows' are the schema evolving (a new column, or a month without
        # one): _align_columns reconciles them in the swap, and refuses a changed type there.

    @staticmethod
    def _swap(conn, schema, table, column, staging, partition, value) -> None:
        """The staged rows become the partition; committed by the caller."""
        target = f"{quote(schema)}.{quote(table)}"
        with conn.cursor() as cur:
            # Runs writing the same table queue here rather than interleave their swaps.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))" % _literal(target))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {target} "
                f"(LIKE {quote(schema)}.{quote(staging)}) PARTITION BY LIST ({quote(column)})"
            )
            _align_columns(cur, schema, table, staging)
            cur.execute(
                "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE n.nspname = {_literal(schema)} AND c.relname = {_literal(partition)}"
            )
            if cur.fetchone():
                cur.execute(
                    f"ALTER TABLE {target} DETACH PARTITION {quote(schema)}.{quote(partition)}"
                )
                cur.execute(f"DROP TABLE {quote(schema)}.{quote(partition)}")
            cur.execute(
                f"ALTER TABLE {quote(schema)}.{quote(staging)} RENAME TO {quote(partition)}"
            )
            cur.execute(
                f"ALTER TABLE {target} ATTACH PARTITION {quote(schema)}.{quote(partition)} "
                f"FOR VALUES IN (DATE '{value}')"
            )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        schema, table = self._table(context.asset_key)
        column = context.upstream_output.definition_metadata["partition_column"]
        values = ", ".join(
            f"DATE '{self._partition_value(context, key)}'" for key in context.asset_partition_keys
        )
        with adbc.connect(self.postgres.uri()) as conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT * FROM {quote(schema)}.{quote(table)} WHERE {quote(column)} IN ({values})"
            )
            return to_pandas(cur.fetch_arrow_table())


def _columns(cur, schema: str, table: str) -> dict[str, str]:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = {_literal(schema)} AND c.relname = {_literal(table)} "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )
    return dict(cur.fetchall())


def _align_columns(cur, schema: str, table: str, staging: str) -> None:
    """Give the table the month's new columns, and the month the table's, so ATTACH fits.

    Adding a nullable column to the partitioned table adds it, empty, to every partition: a
    catalogue change, no rewrite. A column whose type differs is refused before any change.
    """
    held, loaded = _columns(cur, schema, table), _columns(cur, schema, staging)
    for name in [n for n in loaded if n in held]:
        if held[name] != loaded[name]:
            raise TypeError(
                f"{schema}.{table}: column {name!r} is {held[name]} in the table "
                f"but {loaded[name]} in this partition's rows"
            )
    for name in [n for n in loaded if n not in held]:
        cur.execute(
            f"ALTER TABLE {quote(schema)}.{quote(table)} ADD COLUMN {quote(name)} {loaded[name]}"
        )
    for name in [n for n in held if n not in loaded]:
        cur.execute(
            f"ALTER TABLE {quote(schema)}.{quote(staging)} ADD COLUMN {quote(name)} {held[name]}"
        )


@contextlib.contextmanager
def rolled_back_on_failure(conn) -> Iterator[None]:
    """Roll the connection's transaction back on any failure, and re-raise it."""
    try:
        yield
    except BaseException:
        try:
            conn.rollback()
        except adbc.Error:
            pass  # the connection is gone, and its transaction with it; report the cause
        raise


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
