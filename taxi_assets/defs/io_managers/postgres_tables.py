"""PostgreSQL IO manager for small unpartitioned tables (the zone lookup): replaced whole.

The rows go to a staging table, which replaces the table in the same transaction: a reader
sees the old rows or the new ones, and a failed write leaves the old ones.
"""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.defs.io_managers.postgres_partitions import (
    PostgresPandasIOManager,
    _literal,
    quote,
    rolled_back_on_failure,
)
from taxi_assets.defs.resources import PostgresResource
from taxi_assets.tlc.schema import to_pandas


class PostgresTableIOManager(dg.ConfigurableIOManager):
    """Writes a DataFrame to the table `<key prefix>.<key name>`, replacing all its rows."""

    postgres: PostgresResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        schema, table = PostgresPandasIOManager._table(context.asset_key)
        target = f"{quote(schema)}.{quote(table)}"
        staging = f"{table}__{context.run_id[:8]}"
        rows = pa.Table.from_pandas(obj, preserve_index=False)
        with adbc.connect(self.postgres.uri()) as conn:
            PostgresPandasIOManager._create_schema(conn, schema)
            with rolled_back_on_failure(conn):
                with conn.cursor() as cur:
                    cur.adbc_ingest(staging, rows, mode="create", db_schema_name=schema)
                    # Runs replacing the same table queue here rather than interleave.
                    cur.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(target)}))")
                    cur.execute(f"DROP TABLE IF EXISTS {target}")
                    cur.execute(
                        f"ALTER TABLE {quote(schema)}.{quote(staging)} RENAME TO {quote(table)}"
                    )
                conn.commit()
        context.add_output_metadata(
            {"table": f"{schema}.{table}", "dagster/row_count": rows.num_rows}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        schema, table = PostgresPandasIOManager._table(context.asset_key)
        with adbc.connect(self.postgres.uri()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {quote(schema)}.{quote(table)}")
            return to_pandas(cur.fetch_arrow_table())
