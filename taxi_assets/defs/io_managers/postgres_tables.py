"""PostgreSQL IO manager for small unpartitioned tables (the zone lookup): replaced whole.

The rows go to a staging table, which replaces the table in the same transaction
(storage/postgres_swap.py): a reader sees the old rows or the new ones, and a failed write
leaves the old ones.
"""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.defs.io_managers.postgres_partitions import table_of
from taxi_assets.defs.resources import PostgresResource
from taxi_assets.storage import postgres_swap


class PostgresTableIOManager(dg.ConfigurableIOManager):
    """Writes a DataFrame to the table `<key prefix>.<key name>`, replacing all its rows."""

    postgres: PostgresResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        schema, table = table_of(context.asset_key)
        rows = pa.Table.from_pandas(obj, preserve_index=False)
        with adbc.connect(self.postgres.uri()) as conn:
            postgres_swap.replace_table(conn, schema, table, rows, f"{table}__{context.run_id[:8]}")
        context.add_output_metadata(
            {"table": f"{schema}.{table}", "dagster/row_count": rows.num_rows}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        return postgres_swap.read_rows(self.postgres.uri(), *table_of(context.asset_key))
