"""Profiles choose where everything goes: our answer to Mage's `io_config.yaml`.

`local` (the default) needs no setup: an embedded PostgreSQL, and the lake and a DuckDB
warehouse in folders under TAXI_HOME. `gcp` takes every address and secret from the
environment, secrets through `dg.EnvVar` so they never land in run config or logs.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from taxi_assets import settings
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.defs.io_managers.duckdb import DuckDBWarehouseIOManager
from taxi_assets.defs.analytics.dbt import warehouse_dbt
from taxi_assets.defs.io_managers.lake_writers import (
    DailyDatasetIOManager,
    DailyExportIOManager,
    LakeObjectIOManager,
    MonthlyParquetIOManager,
)
from taxi_assets.defs.io_managers.postgres_partitions import PostgresPandasIOManager
from taxi_assets.defs.io_managers.postgres_tables import PostgresTableIOManager
from taxi_assets.defs.io_managers.staging import StagingParquetIOManager
from taxi_assets.defs.resources import LakeResource
from taxi_assets.defs.resources import (
    SOURCE_RESOURCE_KEY,
    PostgresResource,
    TaxiSourceResource,
    configured_source,
    local_pg_port,
)


def build_resources(
    *,
    taxi_source: TaxiSourceResource,
    postgres: PostgresResource,
    lake: LakeResource,
    warehouse_io_manager: dg.ConfigurableIOManager,
    staging_dir: str,
) -> dict:
    """Every resource key the assets name, from the settings a profile (or a test) chooses."""
    return {
        SOURCE_RESOURCE_KEY: taxi_source,
        "io_manager": StagingParquetIOManager(base_dir=staging_dir),
        "postgres_io_manager": PostgresPandasIOManager(postgres=postgres, lake=lake),
        "lake_monthly_io_manager": MonthlyParquetIOManager(lake=lake, postgres=postgres),
        "lake_by_day_io_manager": DailyDatasetIOManager(lake=lake),
        "lake_export_io_manager": DailyExportIOManager(lake=lake),
        "warehouse_io_manager": warehouse_io_manager,
        # The zone lookup's sinks, and dbt over the warehouse (its chart and a failed build's
        # artifacts in `analytics` beside the staging folder).
        "postgres_table_io_manager": PostgresTableIOManager(postgres=postgres),
        "lake_object_io_manager": LakeObjectIOManager(lake=lake),
        "dbt": warehouse_dbt(warehouse_io_manager, str(Path(staging_dir).parent / "analytics")),
    }


def local_resources() -> dict:
    home = settings.taxi_home()
    return build_resources(
        taxi_source=configured_source(),
        postgres=PostgresResource(port=local_pg_port()),
        lake=LakeResource(root=str(home / "lake")),
        warehouse_io_manager=DuckDBWarehouseIOManager(database=str(home / "warehouse.duckdb")),
        staging_dir=str(home / "staging"),
    )


def gcp_resources() -> dict:
    # dg.EnvVar fails at launch when unset: optional settings are passed only when present.
    optional = {
        field: dg.EnvVar(name)
        for field, name in (("location", "TAXI_BQ_LOCATION"), ("api_endpoint", "TAXI_BQ_ENDPOINT"))
        if settings.is_set(name)
    }
    return build_resources(
        taxi_source=configured_source(),
        postgres=PostgresResource(
            host=dg.EnvVar("TAXI_PG_HOST"),
            port=dg.EnvVar.int("TAXI_PG_PORT"),
            user=dg.EnvVar("TAXI_PG_USER"),
            password=dg.EnvVar("TAXI_PG_PASSWORD"),
            database=dg.EnvVar("TAXI_PG_DB"),
        ),
        # The bucket name is no secret, and a gs:// root cannot be assembled from an EnvVar.
        lake=LakeResource(
            root=f"gs://{settings.value('TAXI_GCS_BUCKET') or 'set-TAXI_GCS_BUCKET'}",
            endpoint=settings.value("TAXI_GCS_ENDPOINT") or None,
            # The client's default is to retry for ~15 minutes while GCS is unreachable.
            retry_time_limit_seconds=300,
        ),
        warehouse_io_manager=BigQueryWarehouseIOManager(
            project=dg.EnvVar("TAXI_BQ_PROJECT"),
            dataset=settings.value("TAXI_BQ_DATASET"),
            **optional,
        ),
        staging_dir=str(settings.taxi_home() / "staging"),
    )


PROFILES = {"local": local_resources, "gcp": gcp_resources}


def resources_for_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(
            f"TAXI_PROFILE={profile!r} is not a profile; choose one of {sorted(PROFILES)}"
        )
    return PROFILES[profile]()


@dg.definitions
def profile_resources() -> dg.Definitions:
    """The resources of the profile TAXI_PROFILE names."""
    return dg.Definitions(resources=resources_for_profile(settings.profile()))
