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

The rows reach staging one of two ways. The lake's day files on Cloud Storage (`LakeDayFiles`
with `gcs_uris`) are loaded by BigQuery itself, `load_table_from_uri` over their gs:// URIs,
into a staging table with the files' own columns, which the transaction renames; nothing passes
through the worker. Anything else (a DataFrame, a stream, a lake on local disk) is uploaded from
the worker as Parquet, LOAD_JOB_ROWS rows a load job.

Required asset metadata for partitioned assets: `partition_expr` = the name of a DATE, DATETIME
(naive pandas datetime64) or TIMESTAMP (tz-aware datetime64) column.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster as dg
import pandas as pd
import pyarrow as pa

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
from taxi_assets.defs.io_managers.partition_window import (
    WindowCheckedDbIOManager,
    counted,
    time_window_dimensions,
    wall_clock,
    written_metadata,
)
from taxi_assets.storage.bigquery_tables import (
    bigquery_client,
    bigquery_schema,
    count_outside,
    parquet_for_table,
    quoted,
    replace_rows,
    staged_objects,
    staging_table,
)
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.tlc.schema import to_pandas


# Rows per load job: about 60 MB of Parquet for trips, well inside a load job's limits, and
# all the worker holds of a day range at once.
LOAD_JOB_ROWS = 1_000_000


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


def _partition_delete(table_slice: TableSlice, table: bigquery.Table) -> str:
    where = _where_clause(table_slice.partition_dimensions, _column_types(table))
    return f"DELETE FROM `{_table_id(table_slice)}` WHERE\n{where}"


def _replace_from_storage(
    context: dg.OutputContext,
    table_slice: TableSlice,
    table: bigquery.Table,
    files: LakeDayFiles,
    connection: bigquery.Client,
    config: Mapping,
) -> int:
    """The range's rows from the lake's Cloud Storage objects, by BigQuery's own load jobs into
    staging, then the one transaction; returns the rows. Rows outside the range are refused
    before the table changes, as check_rows_inside_windows refuses them in a frame."""
    inside = _where_clause(table_slice.partition_dimensions, _column_types(table))
    options = {"location": config.get("location"), "timeout": config.get("timeout")}
    names = files.trips.schema.names  # the table's name for each of the files' columns
    staging = staged_objects(connection, table, files.gcs_uris, files.file_schema, names, **options)
    with staging as (staged, jobs):
        # Counted here: bqemulator's outputRows is the table's count, not the job's.
        outside, rows = count_outside(connection, staged, inside, **options)
        if outside:
            raise ValueError(
                f"{outside} of {rows} rows of the lake's files have their partition column"
                f" outside the partition window ({inside}); rerunning the partition would not"
                " replace them. Rewrite the lake's days for this range."
            )
        replace_rows(connection, _table_id(table_slice), inside, names, staged, **options)
    context.log.info(
        f"{rows:,} rows loaded into {_table_id(table_slice)} from {len(files.gcs_uris):,} lake"
        f" objects in {jobs} load job(s)"
    )
    return rows


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
        files = obj if isinstance(obj, LakeDayFiles) else None
        if files is not None:
            # The days' rows, streamed into load jobs unless BigQuery reads the files itself.
            obj = files.trips
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
        if table_slice.partition_dimensions and files and files.gcs_uris is not None:
            rows = _replace_from_storage(context, table_slice, table, files, connection, config)
            return written_metadata(context, obj, "bigquery", rows=rows)
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
            with staging_table(connection, table) as staging:
                self._load_in_parts(
                    counted(trips, tally), schema, staging.reference, connection, config
                )
                columns = ", ".join(quoted(field.name) for field in schema)
                replace_rows(
                    connection,
                    _table_id(table_slice),
                    _where_clause(table_slice.partition_dimensions, _column_types(table)),
                    [field.name for field in schema],
                    f"SELECT {columns} FROM "
                    f"`{staging.project}.{staging.dataset_id}.{staging.table_id}`",
                    location=config.get("location"),
                    timeout=config.get("timeout"),
                )

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
