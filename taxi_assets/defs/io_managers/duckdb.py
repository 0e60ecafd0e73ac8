"""DuckDB IO manager for the local profile: the warehouse table in a DuckDB file.

dagster-duckdb-pandas' DuckDBPandasIOManager already keeps column names as given and replaces a
partition with `DELETE ... WHERE partition_expr in window` before inserting. We subclass it to fix
three things that matter for a table that is rewritten partition by partition:

- its INSERT is positional (`insert into t select * from obj`): a DataFrame whose columns come in
  another order than the table's would land in the wrong columns. We insert `BY NAME`.
- its DELETE and INSERT are separate autocommitted statements: a failed insert leaves the
  partition empty. We run a whole write in one transaction.
- rows outside the partition's window are refused, as in the BigQuery IO manager.

Required asset metadata for partitioned assets: `partition_expr` = the name of a DATE or
TIMESTAMP column (naive pandas datetime64 becomes TIMESTAMP).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler
from pydantic import Field

from taxi_assets.tlc.batches import RowsPerDay, TripBatches
from taxi_assets.dagster_private import DbTypeHandler, TableSlice
from taxi_assets.defs.io_managers.partition_window import (
    WindowCheckedDbIOManager,
    counted,
    time_window_dimensions,
    wall_clock,
    written_metadata,
)
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.tlc.schema import to_pandas


# How long a run waits for another process to let go of the DuckDB file before it fails
# naming that process (Dagster's own client retries for about 100 s, saying nothing).
LOCK_WAIT_SECONDS = 10.0
_HOLDER = re.compile(r"Conflicting lock is held in (.*?)(?:\. See also|$)")


class WarehouseLocked(RuntimeError):
    """Another process holds the DuckDB file."""


def connect_waiting_for_lock(database: str, config: dict, log=None):
    """A read-write connection to the DuckDB file; while another process holds it, wait up to
    LOCK_WAIT_SECONDS (saying so once), then fail naming the file and the holder."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    said = False
    while True:
        try:
            return duckdb.connect(database=database, read_only=False, config=config)
        except duckdb.IOException as error:
            found = _HOLDER.search(str(error))
            if found is None:
                raise
            holder = found.group(1)
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    f"the DuckDB warehouse {database} is locked by another process: {holder}. "
                    "Nothing was written; stop that process (a notebook or a DuckDB shell on "
                    "the file, or another `make dev`), or move the warehouse with TAXI_HOME"
                ) from None
            if not said and log is not None:
                log(
                    f"the DuckDB warehouse {database} is locked by {holder}; waiting up to "
                    f"{LOCK_WAIT_SECONDS:.0f} s for it"
                )
                said = True
            time.sleep(0.5)


class DuckDBWarehouseClient(DuckDbClient):
    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        config = {"custom_user_agent": "dagster", **context.resource_config["connection_config"]}
        log = getattr(context, "log", None)
        conn = connect_waiting_for_lock(
            context.resource_config["database"], config, log.info if log else None
        )
        with contextlib.closing(conn):
            # DbIOManager deletes the partition and writes it on this one connection; commit
            # both or neither.
            conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @staticmethod
    def delete_table_slice(context, table_slice: TableSlice, connection) -> None:
        # The parent runs the DELETE and swallows "table does not exist"; inside a transaction
        # that error would abort it, so look first.
        exists = connection.execute(
            "select count(*) from information_schema.tables"
            " where table_schema = ? and table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchone()[0]
        if exists:
            DuckDbClient.delete_table_slice(context, table_slice, connection)


class DuckDBWarehousePandasTypeHandler(DuckDBPandasTypeHandler):
    """The stock pandas handler with a by-name insert, read back as Arrow-backed pandas."""

    def handle_output(
        self,
        context: dg.OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame | TripBatches,
        connection,
    ):
        table = _table(table_slice)
        if isinstance(obj, LakeDayFiles):
            if obj.local_files is None:  # a lake on GCS: its rows stream through
                return self._insert_stream(context, table_slice, obj.trips, connection)
            return self._insert_files(context, table_slice, obj, connection)
        if isinstance(obj, TripBatches):
            return self._insert_stream(context, table_slice, obj, connection)
        if obj.empty:
            # The partition's old rows are already deleted: an empty output means an empty partition.
            context.log.info(f"no rows to write to {table}")
        else:
            # `obj` is found by DuckDB's replacement scan of this frame's local variables.
            connection.execute(f"create table if not exists {table} as select * from obj limit 0")
            _add_new_columns(
                connection,
                table_slice,
                _duckdb_types(connection, pa.Schema.from_pandas(obj, preserve_index=False)),
            )
            connection.execute(f"insert into {table} by name select * from obj").fetchall()

        return written_metadata(context, obj, "duckdb")

    @staticmethod
    def _insert_stream(context, table_slice: TableSlice, trips: TripBatches, connection) -> dict:
        table = _table(table_slice)
        if not trips.schema.names:
            # No lake files for the days: their old rows are already deleted, and stay so.
            context.log.info(f"no rows to write to {table}")
            return written_metadata(context, trips, "duckdb", rows=0)
        # `empty` and `stream` are found by DuckDB's replacement scan of these local variables;
        # DuckDB pulls the stream batch by batch.
        empty = trips.schema.empty_table()  # noqa: F841
        connection.execute(f"create table if not exists {table} as select * from empty")
        _add_new_columns(connection, table_slice, _duckdb_types(connection, trips.schema))
        tally: dict = {}
        stream = counted(trips, tally).reader()  # noqa: F841
        connection.execute(f"insert into {table} by name select * from stream").fetchall()
        return written_metadata(context, trips, "duckdb", rows=tally["rows"])

    @staticmethod
    def _insert_files(context, table_slice: TableSlice, files: LakeDayFiles, connection) -> dict:
        """The days' rows straight from their Parquet files by DuckDB, in the write's
        transaction: no trip byte passes through this process."""
        table = _table(table_slice)
        if not files.local_files:
            # No lake files for the days: their old rows are already deleted, and stay so.
            context.log.info(f"no rows to write to {table}")
            return written_metadata(context, files.trips, "duckdb", rows=0)
        # The day is in the files' path only, and not a column: no hive partitioning.
        source = "read_parquet($files, union_by_name = true, hive_partitioning = false)"
        files_param = {"files": list(files.local_files)}
        types = connection.execute(
            f"select column_name, column_type from (describe select * from {source})", files_param
        ).fetchall()
        # The tutorial's names, made by SQL over the files' own names.
        rule = "lower(replace(name, ' ', '_'))" if files.normalised_names else "name"
        sources = [name for name, _ in types]
        [(targets,)] = connection.execute(
            f"select list_transform($names::varchar[], lambda name: {rule})", {"names": sources}
        ).fetchall()
        names = dict(zip(sources, targets, strict=True))
        columns = ", ".join(f"{quoted(name)} as {quoted(names[name])}" for name, _ in types)
        rows = f"select {columns} from {source}"
        _check_files_inside_windows(connection, rows, files_param, table_slice)
        connection.execute(f"create table if not exists {table} as {rows} limit 0", files_param)
        _add_new_columns(connection, table_slice, {names[name]: type_ for name, type_ in types})
        [(inserted,)] = connection.execute(
            f"insert into {table} by name {rows}", files_param
        ).fetchall()
        context.log.info(
            f"{inserted:,} rows loaded into {table} from {len(files.local_files)} files"
        )
        return written_metadata(context, files.trips, "duckdb", rows=inserted)

    @property
    def supported_types(self):
        return [pd.DataFrame, TripBatches, LakeDayFiles, RowsPerDay]

    def load_input(
        self, context: dg.InputContext, table_slice: TableSlice, connection
    ) -> pd.DataFrame | RowsPerDay:
        select = DuckDbClient.get_select_statement(table_slice)
        if context.dagster_type.typing_type is RowsPerDay:
            [day] = time_window_dimensions(table_slice.partition_dimensions)
            return RowsPerDay(
                connection.execute(
                    f"select cast(cast({day.partition_expr} as date) as varchar), count(*) "
                    f"from ({select}) group by 1"
                ).fetchall()
            )
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pd.DataFrame()
        # Through Arrow, as the BigQuery IO manager and the lake read: one dtype per column type
        # (fetchdf gives int64 for an integer column without NULLs, Int64 for one with them),
        # and a relation's Arrow result, unlike a DB-API cursor's, is not copied again.
        return to_pandas(connection.sql(select).to_arrow_table())


def _check_files_inside_windows(
    connection, rows: str, params: dict, table_slice: TableSlice
) -> None:
    """Raise, as check_rows_inside_windows does for a frame, if any of the files' rows has its
    partition column null or outside its partition's time window (DuckDB reads that column)."""
    for dim in time_window_dimensions(table_slice.partition_dimensions):
        column = quoted(dim.partition_expr)
        start, end = dim.partitions.start, dim.partitions.end  # type: ignore[union-attr]
        outside = (
            f"{column} is null or cast({column} as timestamp) < $lo "
            f"or cast({column} as timestamp) >= $hi"
        )
        bounds = {
            **params,
            "lo": wall_clock(start).to_pydatetime(),
            "hi": wall_clock(end).to_pydatetime(),
        }
        try:
            [(count, total, sample)] = connection.execute(
                f"select count(*) filter (where {outside}), count(*), "
                f"(list({column}) filter (where {outside}))[1:3] from ({rows})",
                bounds,
            ).fetchall()
        except duckdb.BinderException as error:
            raise ValueError(
                f"partition_expr {dim.partition_expr!r} must name a column of the output: {error}"
            ) from error
        if count:
            raise ValueError(
                f"{count} of {total} rows have {dim.partition_expr!r} outside the partition"
                f" window [{start}, {end}) (e.g. {sample}); rerunning the partition would not"
                " replace them. Filter the output to the partition's window."
            )


def _duckdb_types(connection, schema: pa.Schema) -> dict[str, str]:
    """Each column's DuckDB type, as DuckDB reads the Arrow schema."""
    empty = schema.empty_table()  # noqa: F841 - found by DuckDB's replacement scan
    return dict(
        connection.execute(
            "select column_name, column_type from (describe select * from empty)"
        ).fetchall()
    )


def _add_new_columns(connection, table_slice: TableSlice, types: dict[str, str]) -> None:
    """Columns the rows bring (`types`: name → DuckDB type) and the table lacks are added
    (empty for the old rows).

    Columns the table has and the rows lack are left NULL by the by-name insert.
    """
    held = {
        name
        for (name,) in connection.execute(
            "select column_name from information_schema.columns"
            " where table_schema = ? and table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchall()
    }
    for name in types:
        if name not in held:
            connection.execute(
                f"alter table {_table(table_slice)} add column {quoted(name)} {types[name]}"
            )


def quoted(identifier: str) -> str:
    """An identifier as DuckDB reads it back verbatim: double quotes, inner ones doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def _table(table_slice: TableSlice) -> str:
    return f"{quoted(table_slice.schema)}.{quoted(table_slice.table)}"


class DuckDBWarehouseIOManager(DuckDBPandasIOManager):
    """Reads and writes pandas DataFrames as DuckDB tables `{schema}.{asset name}`.

    Fields as DuckDBPandasIOManager: `database` (path of the DuckDB file), `schema`,
    `connection_config`.
    """

    # A day range streams through DuckDB, whose buffer pool would otherwise keep its pages up
    # to 80% of the machine's memory (measured: 220 MB more for a 7.7M-row month's days).
    connection_config: dict[str, Any] = Field(
        default={"memory_limit": "128MB"},
        description="DuckDB configuration options (https://duckdb.org/docs/sql/configuration).",
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DuckDBWarehousePandasTypeHandler()]

    def create_io_manager(self, context) -> WindowCheckedDbIOManager:
        return WindowCheckedDbIOManager(
            db_client=DuckDBWarehouseClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBWarehouseIOManager",
        )
