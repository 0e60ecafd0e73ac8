"""Running the real definitions against the suite's servers."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg

from taxi_assets.definitions import defs
from taxi_assets.io_managers.postgres import PostgresPandasIOManager
from taxi_assets.io_managers.staging import StagingParquetIOManager
from taxi_assets.resources import TaxiSourceResource

JANUARY = "2021-01-01"
POSTGRES_TABLE = "ny_taxi.yellow_cab_data"


def pipeline_resources(state: Path, source_url: str, postgres) -> dict:
    return {
        "taxi_source": TaxiSourceResource(base_url=source_url, landing_dir=str(state / "landing"),
                                          backoff_seconds=0.01),
        "io_manager": StagingParquetIOManager(base_dir=str(state / "staging")),
        "postgres_io_manager": PostgresPandasIOManager(postgres=postgres.resource()),
    }


def materialize(resources: dict, partition_key: str = JANUARY, selection=None,
                instance: dg.DagsterInstance | None = None, raise_on_error: bool = True):
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        partition_key=partition_key,
        resources=resources,
        selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def query(postgres, sql: str, *params):
    with psycopg.connect(postgres.uri, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def partition_state(postgres, month_start: str = JANUARY):
    """Row count and a checksum of one month in the Postgres sink, or None if never loaded."""
    exists = query(postgres, "SELECT to_regclass(%s)", POSTGRES_TABLE)[0][0]
    if exists is None:
        return None
    return query(
        postgres,
        f"SELECT count(*), sum(total_amount)::numeric(14,2), sum(passenger_count) "
        f"FROM {POSTGRES_TABLE} WHERE source_month = %s",
        month_start,
    )[0]
