"""BigQuery IO manager for pandas DataFrames that keeps column names as the asset wrote them.

Built on dagster-gcp's DbIOManager machinery (table = `{dataset}.{asset name}`, `partition_expr`
metadata, partition ranges from single-run backfills), with three changes:

- names: dagster-gcp-pandas upper-cases every column on write (`VENDORID`) and lower-cases on
  read; we write and read the names unchanged, so the asset decides (ours are lowercase).
- partitions: the table is created DAY-partitioned on the `partition_expr` column, and a
  partition is replaced with `DELETE ... WHERE col >= start AND col < end` plus an INSERT of the
  new rows, using literals typed after the column (DATE, DATETIME or TIMESTAMP), never
  `table$YYYYMMDD` decorators. Rows outside the partition's window are refused (see
  partition_window.py).
- emulators: `api_endpoint` points the client at e.g. bqemulator, with anonymous credentials.

A load job cannot take part in a transaction, so a partition's new rows are first loaded into a
staging table (dropped afterwards, by the next write if the run dies first, and expiring by
itself in a day); then one multi-statement transaction deletes the old rows and inserts the new.
A failed load or transaction, or a run killed anywhere in between, leaves the old rows.

Required asset metadata for partitioned assets: `partition_expr` = the name of a DATE, DATETIME
(naive pandas datetime64) or TIMESTAMP (tz-aware datetime64) column.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_gcp import BigQueryIOManager
from dagster_gcp.bigquery.io_manager import BigQueryClient
from google.api_core.exceptions import GoogleAPIError, NotFound
from google.cloud import bigquery
from pydantic import Field

from taxi_assets.tlc.batches import RowsPerDay, TripBatches, rebatched
from taxi_assets.dagster_private import (
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
    static_where_clause,
)
from taxi_assets.google_credentials import check_key_file
from taxi_assets.defs.io_managers.partition_window import (
    WindowCheckedDbIOManager,
    counted,
    time_window_dimensions,
    wall_clock,
    written_metadata,
)
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.tlc.schema import to_pandas


# Rows per load job: about 60 MB of Parquet for trips, well inside a load job's limits, and
# all the worker holds of a day range at once.
LOAD_JOB_ROWS = 1_000_000


def bigquery_client(
    project: str | None, location: str | None = None, api_endpoint: str | None = None
) -> bigquery.Client:
    """A BigQuery client; with `api_endpoint` (an emulator) it sends no credentials."""
    if not api_endpoint:
        # Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server).
        check_key_file()
        return bigquery.Client(project=project, location=location)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=api_endpoint),
    )


def quoted(identifier: str) -> str:
    """An identifier in BigQuery's backticks, its backslashes and backticks escaped."""
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _table_id(table_slice: TableSlice) -> str:
    return f"{table_slice.database}.{table_slice.schema}.{table_slice.table}"


# -- SQL for a partition ---------------------------------------------------------------------


def _time_literal(value, column_type: str | None) -> str:
    """A literal for a partition boundary, typed after the partition column.

    DATE and DATETIME hold wall-clock values, compared with the boundary's wall clock in the
    partition's timezone; TIMESTAMP is an instant, so the boundary keeps its UTC offset.
    """
    ts = pd.Timestamp(value)
    if column_type == "DATE":
        if ts != ts.normalize():
            raise ValueError(f"a DATE partition column can't hold a window starting at {ts}")
        return f"DATE '{ts:%Y-%m-%d}'"
    if column_type == "DATETIME":
        return f"DATETIME '{wall_clock(ts):%Y-%m-%d %H:%M:%S}'"
    if column_type == "TIMESTAMP":
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return f"TIMESTAMP '{ts.isoformat(sep=' ')}'"
    # Type unknown (only for the "Query" metadata of a table's first write): a plain string,
    # which BigQuery coerces to the column's type; date-only strings coerce to all three types.
    wall = wall_clock(ts)
    return f"'{wall:%Y-%m-%d}'" if wall == wall.normalize() else f"'{wall:%Y-%m-%d %H:%M:%S}'"


def _where_clause(
    dimensions: Sequence[TablePartitionDimension], column_types: Mapping[str, str]
) -> str:
    clauses = []
    for dim in dimensions:
        if isinstance(dim.partitions, dg.TimeWindow):
            column_type = column_types.get(dim.partition_expr.lower())
            start = _time_literal(dim.partitions.start, column_type)
            end = _time_literal(dim.partitions.end, column_type)
            clauses.append(f"{dim.partition_expr} >= {start} AND {dim.partition_expr} < {end}")
        else:
            clauses.append(static_where_clause(dim))
    return " AND\n".join(clauses)


def _column_types(table: bigquery.Table) -> dict[str, str]:
    # Column names are case-insensitive in BigQuery.
    return {f.name.lower(): f.field_type for f in table.schema}


def _select_statement(table_slice: TableSlice, column_types: Mapping[str, str]) -> str:
    columns = ", ".join(map(quoted, table_slice.columns)) if table_slice.columns else "*"
    query = f"SELECT {columns} FROM `{_table_id(table_slice)}`"
    if table_slice.partition_dimensions:
        query += " WHERE\n" + _where_clause(table_slice.partition_dimensions, column_types)
    return query


# -- Table creation --------------------------------------------------------------------------


def _bigquery_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):  # pandas Categorical, dictionary-encoded ArrowDtype
        return _bigquery_type(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_floating(arrow_type):
        return "FLOAT64"
    if pa.types.is_decimal(arrow_type):
        return "NUMERIC" if arrow_type.precision <= 38 and arrow_type.scale <= 9 else "BIGNUMERIC"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "STRING"
    if pa.types.is_null(arrow_type):  # an all-null object column
        return "STRING"
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    ):
        return "BYTES"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP" if arrow_type.tz is not None else "DATETIME"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_time(arrow_type):
        return "TIME"
    raise TypeError(f"no BigQuery column type for Arrow type {arrow_type}")


def bigquery_schema(obj: pd.DataFrame | pa.Schema) -> list[bigquery.SchemaField]:
    """The table schema for a DataFrame (or Arrow schema): names unchanged, every column NULLABLE.

    Takes numpy, pandas-nullable (`Int64`, `string`) and Arrow-backed (`int64[pyarrow]`) columns
    alike, through the Arrow type each converts to.
    """
    arrow_schema = (
        obj if isinstance(obj, pa.Schema) else pa.Schema.from_pandas(obj, preserve_index=False)
    )
    fields = []
    for field in arrow_schema:
        try:
            fields.append(bigquery.SchemaField(field.name, _bigquery_type(field.type)))
        except TypeError as exc:
            raise TypeError(f"column {field.name!r}: {exc}") from exc
    return fields


# The Arrow type a load writes for each BigQuery column type (as the client library maps them).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
}


def parquet_for_table(
    obj: pd.DataFrame | pa.Table, schema: Sequence[bigquery.SchemaField]
) -> io.BytesIO:
    """`obj` as Parquet whose columns have the table's order and types.

    Order, because some servers (bqemulator) match a Parquet file's columns by position. Types,
    because the frame's may be narrower or wider than the table's (int32, nanosecond
    timestamps): cast safely, so a value the column can't hold fails the write.
    """
    present = obj.column_names if isinstance(obj, pa.Table) else list(obj.columns)
    names = [f.name for f in schema if f.name in present]
    # Columns the table lacks stay, for the load job to refuse by name.
    names += [c for c in present if c not in names]
    table = (
        obj.select(names)
        if isinstance(obj, pa.Table)
        else pa.Table.from_pandas(obj[names], preserve_index=False)
    )
    field_types = {f.name: f.field_type for f in schema}
    columns = []
    for name, column in zip(table.column_names, table.columns):
        target = _ARROW_TYPES.get(field_types.get(name, ""))
        if target is None or column.type == target:
            columns.append(column)
            continue
        if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(target):
            if (column.type.tz is None) != (target.tz is None):
                # Arrow would read naive times as UTC, or drop a zone keeping the UTC wall clock.
                raise TypeError(
                    f"column {name!r}: {column.type} values can't go into a"
                    f" {field_types[name]} column (naive vs time-zone aware)"
                )
        try:
            columns.append(column.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TypeError(
                f"column {name!r}: {column.type} values don't fit the table's"
                f" {field_types[name]} column: {exc}"
            ) from exc
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns, names=table.column_names), buffer)
    buffer.seek(0)
    return buffer


# -- Replacing a partition -------------------------------------------------------------------


def _load(connection: bigquery.Client, parquet: io.BytesIO, schema, destination, config) -> None:
    connection.load_table_from_file(
        parquet,
        destination,
        # With the size known, a small file goes in one multipart request, as
        # load_table_from_dataframe sent it, rather than a resumable upload session.
        size=parquet.getbuffer().nbytes,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            # The file is checked against the table's types rather than ones inferred
            # from the Parquet.
            schema=schema,
        ),
        location=config.get("location"),
        timeout=config.get("timeout"),
    ).result()


def _staging_prefix(table: bigquery.Table) -> str:
    return f"{table.table_id}__load_"


def _drop_dead_staging_tables(connection: bigquery.Client, table: bigquery.Table) -> None:
    """Drop the staging tables a killed run left (they would expire in a day anyway).

    Writers of one table take turns (its asset's concurrency pool), so any staging table of
    `table` that exists before a write belongs to a run that is gone. Nobody reads them.
    """
    for listed in connection.list_tables(f"{table.project}.{table.dataset_id}"):
        if listed.table_id.startswith(_staging_prefix(table)):
            connection.delete_table(listed.reference, not_found_ok=True)


@contextmanager
def _staging_table(connection: bigquery.Client, table: bigquery.Table) -> Iterator[bigquery.Table]:
    """An empty table shaped like `table`, for one load; dropped after, expiring if we die first."""
    _drop_dead_staging_tables(connection, table)
    staging = bigquery.Table(
        f"{table.project}.{table.dataset_id}.{_staging_prefix(table)}{uuid.uuid4().hex[:12]}",
        schema=table.schema,
    )
    staging.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    staging = connection.create_table(staging)
    try:
        yield staging
    finally:
        connection.delete_table(staging.reference, not_found_ok=True)


def _partition_delete(table_slice: TableSlice, table: bigquery.Table) -> str:
    where = _where_clause(table_slice.partition_dimensions, _column_types(table))
    return f"DELETE FROM `{_table_id(table_slice)}` WHERE\n{where}"


# -- Dagster plumbing ------------------------------------------------------------------------


class BigQueryWarehouseClient(BigQueryClient):
    """DbClient: connects through `api_endpoint` when set; replaces partitions with typed DELETEs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Filled by delete_table_slice, so the "Query" metadata that DbIOManager attaches after a
        # write carries the same typed literals the IO manager really used.
        self._column_types: dict[str, dict[str, str]] = {}

    @staticmethod
    @contextmanager
    def connect(context, table_slice) -> Iterator[bigquery.Client]:
        config = context.resource_config or {}
        client = bigquery_client(
            project=config.get("project"),
            location=config.get("location"),
            api_endpoint=config.get("api_endpoint"),
        )
        try:
            yield client
        finally:
            client.close()

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        # Through the datasets API rather than `CREATE SCHEMA`, so the dataset gets the
        # configured location (and emulators register it in their catalog).
        config = context.resource_config or {}
        dataset = bigquery.Dataset(f"{table_slice.database}.{table_slice.schema}")
        if config.get("location"):
            dataset.location = config["location"]
        try:
            # The first call of a write: an unreachable warehouse fails here, before any data
            # moves, and after 20 s of retrying rather than the client's ten minutes.
            connection.create_dataset(
                dataset, exists_ok=True, retry=bigquery.DEFAULT_RETRY.with_deadline(20)
            )
        except (GoogleAPIError, OSError) as error:  # requests' connection errors are OSErrors
            where = config.get("api_endpoint") or "BigQuery"
            raise ConnectionError(
                f"the warehouse {where} (dataset {dataset.dataset_id} in project "
                f"{dataset.project}) cannot be reached ({error}); nothing was written. Check "
                f"TAXI_BQ_PROJECT, TAXI_BQ_ENDPOINT and the credentials"
            ) from error

    def delete_table_slice(self, context, table_slice: TableSlice, connection) -> None:
        """For a partition, only checks: its rows are replaced in the type handler's transaction."""
        if not table_slice.partition_dimensions:
            BigQueryClient.delete_table_slice(context, table_slice, connection)
            return
        try:
            table = connection.get_table(_table_id(table_slice))
        except NotFound:
            return  # first write: nothing to replace
        column_types = _column_types(table)
        self._column_types[_table_id(table_slice)] = column_types
        for dim in time_window_dimensions(table_slice.partition_dimensions):
            if dim.partition_expr.lower() not in column_types:
                raise ValueError(
                    f"partition_expr {dim.partition_expr!r} is not a column of"
                    f" {_table_id(table_slice)}"
                )

    def get_select_statement(self, table_slice: TableSlice) -> str:
        return _select_statement(table_slice, self._column_types.get(_table_id(table_slice), {}))


class BigQueryWarehousePandasTypeHandler(DbTypeHandler[pd.DataFrame]):
    """Stores and loads pandas DataFrames with their column names untouched."""

    def handle_output(
        self,
        context: dg.OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame | TripBatches | LakeDayFiles,
        connection,
    ):
        config = context.resource_config or {}
        if isinstance(obj, LakeDayFiles):
            obj = obj.trips  # the days' rows, streamed from the lake into load jobs
        trips = TripBatches.of(obj)
        if not trips.schema.names or (isinstance(obj, pd.DataFrame) and obj.empty):
            # An empty output means an empty partition.
            context.log.info(f"no rows to write to {_table_id(table_slice)}")
            if table_slice.partition_dimensions:
                try:
                    table = connection.get_table(_table_id(table_slice))
                except NotFound:
                    table = None  # no table, no rows to delete
                if table is not None:
                    # One statement, atomic by itself.
                    connection.query(
                        _partition_delete(table_slice, table),
                        location=config.get("location"),
                        timeout=config.get("timeout"),
                    ).result()
            return written_metadata(context, obj, "bigquery", rows=0)
        table = self._ensure_table(table_slice, trips.schema, connection)
        # Parquet written here rather than by load_table_from_dataframe, which is deprecated
        # in favour of pandas-gbq.
        schema = [
            # Name and type only, as load_table_from_dataframe sent them: descriptions and
            # policy tags belong to the table, not to a load.
            bigquery.SchemaField(f.name, f.field_type, mode=f.mode, fields=f.fields)
            for f in table.schema
            if f.name in trips.schema.names
        ]
        tally: dict = {}
        if not table_slice.partition_dimensions:
            self._load_in_parts(counted(trips, tally), schema, table.reference, connection, config)
        else:
            with _staging_table(connection, table) as staging:
                self._load_in_parts(
                    counted(trips, tally), schema, staging.reference, connection, config
                )
                columns = ", ".join(quoted(field.name) for field in schema)
                connection.query(
                    f"BEGIN TRANSACTION;\n{_partition_delete(table_slice, table)};\n"
                    f"INSERT INTO `{_table_id(table_slice)}` ({columns})\n"
                    f"SELECT {columns} FROM "
                    f"`{staging.project}.{staging.dataset_id}.{staging.table_id}`;\n"
                    "COMMIT TRANSACTION;",
                    location=config.get("location"),
                    timeout=config.get("timeout"),
                ).result()

        return written_metadata(context, obj, "bigquery", rows=tally["rows"])

    @staticmethod
    def _load_in_parts(trips: TripBatches, schema, destination, connection, config) -> None:
        """One load job per LOAD_JOB_ROWS rows: the worker holds one part's Parquet at a time."""
        for part in rebatched(trips, LOAD_JOB_ROWS):
            _load(connection, parquet_for_table(part, schema), schema, destination, config)

    @staticmethod
    def _ensure_table(
        table_slice: TableSlice, arrow_schema: pa.Schema, connection
    ) -> bigquery.Table:
        # Created up front rather than by the load job: emulators ignore a load job's
        # time partitioning, and our explicit schema keeps naive datetimes as DATETIME.
        wanted = bigquery_schema(arrow_schema)
        table = bigquery.Table(_table_id(table_slice), schema=wanted)
        windows = time_window_dimensions(table_slice.partition_dimensions)
        if windows:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=windows[0].partition_expr
            )
        table = connection.create_table(table, exists_ok=True)
        held = {field.name.lower() for field in table.schema}
        added = [field for field in wanted if field.name.lower() not in held]
        if added:
            # Field addition, the one schema change BigQuery allows in place: old rows get NULL.
            table.schema = [*table.schema, *added]
            table = connection.update_table(table, ["schema"])
            # A no-op on BigQuery, where the patch added the columns; emulators record a
            # patch without applying it to the stored rows, and need the DDL too.
            columns = ", ".join(
                f"ADD COLUMN IF NOT EXISTS {quoted(field.name)} {field.field_type}"
                for field in added
            )
            connection.query(f"ALTER TABLE `{_table_id(table_slice)}` {columns}").result()
        return table

    def load_input(
        self, context: dg.InputContext, table_slice: TableSlice, connection
    ) -> pd.DataFrame | RowsPerDay:
        config = context.resource_config or {}
        count = context.dagster_type.typing_type is RowsPerDay
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return RowsPerDay() if count else pd.DataFrame()
        column_types = {}
        if table_slice.partition_dimensions:
            column_types = _column_types(connection.get_table(_table_id(table_slice)))
        select = _select_statement(table_slice, column_types)
        if count:
            [day] = time_window_dimensions(table_slice.partition_dimensions)
            select = (
                f"SELECT CAST(CAST({day.partition_expr} AS DATE) AS STRING), COUNT(*) "
                f"FROM ({select}) GROUP BY 1"
            )
        job = connection.query(
            select, location=config.get("location"), timeout=config.get("timeout")
        )
        if count:
            return RowsPerDay((row[0], row[1]) for row in job.result())
        # Arrow rather than to_dataframe, which is deprecated in favour of pandas-gbq. An
        # emulator serves no Storage Read API; real BigQuery uses it when it is installed.
        return to_pandas(job.to_arrow(create_bqstorage_client=not config.get("api_endpoint")))

    @property
    def supported_types(self):
        return [pd.DataFrame, TripBatches, LakeDayFiles, RowsPerDay]


class BigQueryWarehouseIOManager(BigQueryIOManager):
    """Reads and writes pandas DataFrames as BigQuery tables `{dataset}.{asset name}`.

    Unlike dagster-gcp-pandas' BigQueryPandasIOManager it keeps column names as written, creates
    partitioned assets' tables DAY-partitioned on `partition_expr`, replaces a partition (or a
    backfill's partition range) with a typed DELETE plus an append, and can talk to an emulator.

    Fields (besides dagster-gcp's project, dataset, location, gcp_credentials, timeout,
    write_mode): `api_endpoint`, e.g. `http://127.0.0.1:9050`, for a BigQuery emulator.
    """

    api_endpoint: str | None = Field(
        default=None,
        description=(
            "Base URL of a BigQuery API emulator, e.g. http://127.0.0.1:9050. When set the"
            " client sends anonymous credentials. Leave unset for real BigQuery."
        ),
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [BigQueryWarehousePandasTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pd.DataFrame

    def create_io_manager(self, context) -> WindowCheckedDbIOManager:
        return WindowCheckedDbIOManager(
            db_client=BigQueryWarehouseClient(
                write_mode=self.write_mode, gcp_credentials=self.gcp_credentials
            ),
            io_manager_name="BigQueryWarehouseIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )
