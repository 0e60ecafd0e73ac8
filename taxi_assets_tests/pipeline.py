"""Running the real definitions against the suite's servers."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg

from taxi_assets.definitions import defs
from taxi_assets.defs.io_managers.duckdb import DuckDBWarehouseIOManager
from taxi_assets.defs.resources import LakeResource
from taxi_assets.defs.profiles import build_resources
from taxi_assets.defs.resources import TaxiSourceResource

JANUARY = "2021-01-01"
POSTGRES_TABLE = "ny_taxi.yellow_cab_data"


def pipeline_resources(
    state: Path,
    source_url: str,
    postgres,
    lake: LakeResource | None = None,
    warehouse_io_manager: dg.ConfigurableIOManager | None = None,
    source_kind: str = "datatalks",
) -> dict:
    """The resources of the local profile, pointed at the suite's servers and `state`."""
    return build_resources(
        taxi_source=TaxiSourceResource(
            kind=source_kind,
            base_url=source_url,
            landing_dir=str(state / "landing"),
            backoff_seconds=0.01,
        ),
        postgres=postgres.resource(),
        lake=lake or LakeResource(root=str(state / "lake")),
        warehouse_io_manager=warehouse_io_manager
        or DuckDBWarehouseIOManager(database=str(state / "warehouse.duckdb")),
        staging_dir=str(state / "staging"),
    )


MONTHLY = "raw_yellow_trips cleaned_yellow_trips ny_taxi/yellow_cab_data yellow_trips_parquet"
DAILY = "yellow_trips_by_day yellow_trips_daily_export ny_taxi/yellow_trips"


def _selection(names: str) -> list[dg.AssetKey]:
    return [dg.AssetKey.from_user_string(name) for name in names.split()]


def materialize(
    resources: dict,
    partition_key: str = JANUARY,
    selection=None,
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    tags: dict | None = None,
):
    """One run of the real definitions; by default the monthly assets of one month."""
    if selection is None:
        selection = _selection(MONTHLY)
    elif isinstance(selection, str):
        selection = _selection(selection)
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        partition_key=partition_key,
        resources=resources,
        selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
        tags=tags,
    )


def materialize_days(resources: dict, first: str, last: str, tags: dict | None = None, **kwargs):
    """The daily assets for first..last as one run, as a single-run backfill launches them."""
    return materialize(
        resources,
        partition_key=None,
        selection=kwargs.pop("selection", DAILY),
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
            **(tags or {}),
        },
        **kwargs,
    )


def failure_messages(result) -> list[str]:
    """Each failed step's error and its causes, without stack traces."""
    messages = []
    for failure in result.get_step_failure_events():
        error = failure.event_specific_data.error
        while error is not None:
            messages.append(error.message.strip())
            error = error.cause or error.context
    return messages


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
