"""The taxi_assets code location: every asset, check, IO manager and trigger in one place."""

import os

import dagster as dg

from taxi_assets import checks
from taxi_assets.assets import clean, postgres, source
from taxi_assets.io_managers.postgres import PostgresPandasIOManager
from taxi_assets.io_managers.staging import StagingParquetIOManager
from taxi_assets.resources import gcp_resources, local_resources

PROFILES = {"local": local_resources, "gcp": gcp_resources}


def resources_for_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"TAXI_PROFILE={profile!r} is not a profile; choose one of {sorted(PROFILES)}")
    settings = PROFILES[profile]()
    return {
        "taxi_source": settings["taxi_source"],
        "io_manager": StagingParquetIOManager(base_dir=settings["staging_dir"]),
        "postgres_io_manager": PostgresPandasIOManager(postgres=settings["postgres"]),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([source, clean, postgres]),
    asset_checks=[checks.yellow_trips_quality],
    resources=resources_for_profile(os.environ.get("TAXI_PROFILE", "local")),
)
