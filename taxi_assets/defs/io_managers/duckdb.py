"""DuckDB IO manager for the local profile: the warehouse table in a DuckDB file.

dagster-duckdb-pandas' DuckDBPandasIOManager already keeps column names as given and replaces a
partition with `DELETE ... WHERE partition_expr in window` before inserting. We subclass it to fix
three things that matter for a table that is rewritten partition by partition:

- its INSERT is positional (`insert into t select * from obj`): a DataFrame whose columns come in
  another order than the table's would land in the wrong columns. We insert `BY NAME`
  (storage/duckdb_tables.py).
- its DELETE and INSERT are separate autocommitted statements: a failed insert leaves the
  partition empty. We run a whole write in one transaction.
- rows outside the partition's window are refused, as in the BigQuery IO manager.

Required asset metadata for partitioned assets: `partition_expr` = the name of a DATE or
TIMESTAMP column (naive pandas datetime64 becomes TIMESTAMP). It stays metadata, per asset, as
Dagster's DbIOManager reads it there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd

from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler
from pydantic import Field

from taxi_assets.dagster_private import DbTypeHandler, ProjectMaintained, TableSlice
from taxi_assets.defs.io_managers.partition_window import (
    WindowCheckedDbIOManager,
    counted,
    time_window_dimensions,
    wall_clock,
    written_metadata,
)
from taxi_assets.storage import duckdb_tables
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.tlc.batches import RowsPerDay, TripBatches
from taxi_assets.tlc.schema import to_pandas


class DuckDBWarehouseClient(DuckDbClient):
    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        config = {"custom_user_agent": "dagster", **context.resource_config["connection_config"]}
        log = getattr(context, "log", None)
        conn = duckdb_tables.connect_waiting_for_lock(
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
        if duckdb_tables.table_exists(connection, table_slice.schema, table_slice.table):
            DuckDbClient.delete_table_slice(context, table_slice, connection)


class DuckDBWarehousePandasTypeHandler(DuckDBPandasTypeHandler):
    """The stock pandas handler with a by-name insert, read back as Arrow-backed pandas."""

    def handle_output(
        self,
        context: dg.OutputContext,
        table_slice: TableSlice,
        obj: pd.DataFrame | TripBatches | LakeDayFiles,
        connection,
    ):
        schema, table = table_slice.schema, table_slice.table
        name = f"{duckdb_tables.quoted(schema)}.{duckdb_tables.quoted(table)}"
        if isinstance(obj, LakeDayFiles) and obj.local_files is not None:
            return self._insert_files(context, table_slice, obj, connection)
        if isinstance(obj, LakeDayFiles):  # a lake on GCS: its rows stream through
            obj = obj.trips
        if isinstance(obj, TripBatches):
            if not obj.schema.names:
                # No lake files for the days: their old rows are already deleted, and stay so.
                context.log.info(f"no rows to write to {name}")
                return written_metadata(context, obj, "duckdb", rows=0)
            tally: dict = {}
            duckdb_tables.insert_stream(connection, schema, table, counted(obj, tally))
            return written_metadata(context, obj, "duckdb", rows=tally["rows"])
        if obj.empty:
            # The partition's old rows are already deleted: an empty output means an empty partition.
            context.log.info(f"no rows to write to {name}")
        else:
            duckdb_tables.insert_frame(connection, schema, table, obj)
        return written_metadata(context, obj, "duckdb")

    @staticmethod
    def _insert_files(context, table_slice: TableSlice, files: LakeDayFiles, connection) -> dict:
        """The days' rows straight from their Parquet files by DuckDB, in the write's
        transaction: no trip byte passes through this process."""
        schema, table = table_slice.schema, table_slice.table
        name = f"{duckdb_tables.quoted(schema)}.{duckdb_tables.quoted(table)}"
        if not files.local_files:
            # No lake files for the days: their old rows are already deleted, and stay so.
            context.log.info(f"no rows to write to {name}")
            return written_metadata(context, files.trips, "duckdb", rows=0)
        windows = [
            (
                dim.partition_expr,
                wall_clock(dim.partitions.start),  # type: ignore[union-attr]
                wall_clock(dim.partitions.end),  # type: ignore[union-attr]
                f"[{dim.partitions.start}, {dim.partitions.end})",  # type: ignore[union-attr]
            )
            for dim in time_window_dimensions(table_slice.partition_dimensions)
        ]
        inserted = duckdb_tables.insert_files(
            connection, schema, table, list(files.local_files), files.normalised_names, windows
        )
        context.log.info(
            f"{inserted:,} rows loaded into {name} from {len(files.local_files)} files"
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
            return RowsPerDay(duckdb_tables.rows_per_day(connection, select, day.partition_expr))
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pd.DataFrame()
        # Through Arrow, as the BigQuery IO manager and the lake read: one dtype per column type
        # (fetchdf gives int64 for an integer column without NULLs, Int64 for one with them),
        # and a relation's Arrow result, unlike a DB-API cursor's, is not copied again.
        return to_pandas(connection.sql(select).to_arrow_table())


class DuckDBWarehouseIOManager(ProjectMaintained, DuckDBPandasIOManager):
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
