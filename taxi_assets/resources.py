"""Resources: the source files and the PostgreSQL server (profiles.py chooses their settings)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from taxi_assets import source
from taxi_assets.batches import TripBatches
from taxi_assets.schema import TRIP_SCHEMA, trip_batches

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATATALKS_RELEASE = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/yellow"
LOCAL_PG_PORT = 55432


def local_pg_port() -> int:
    """The port of the project's PostgreSQL on the local profile."""
    return int(os.environ.get("TAXI_PG_PORT") or LOCAL_PG_PORT)


def taxi_home() -> Path:
    """Where the local profile keeps its state (git-ignored)."""
    return Path(os.environ.get("TAXI_HOME", PROJECT_ROOT / ".local")).resolve()


class TaxiSourceResource(dg.ConfigurableResource):
    """The monthly yellow-taxi files: a base URL, `file://` URL or plain folder."""

    base_url: str = DATATALKS_RELEASE
    landing_dir: str
    retries: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0
    # The ceiling on one file: the largest real months are ~15 M rows, ~2 GB of CSV.
    max_rows_per_file: int = Field(
        default=30_000_000, description="A file with more rows fails before any sink is written.")
    max_bytes_per_file: int = Field(
        default=8_000_000_000,
        description="A file that decompresses to more bytes fails before any sink is written.")

    def file_name(self, month: str) -> str:
        return f"yellow_tripdata_{month}.csv.gz"

    def fetch(self, month: str, log) -> Path:
        return source.download(
            self.base_url,
            self.file_name(month),
            Path(self.landing_dir),
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            timeout=self.timeout_seconds,
            log=log,
        )

    def trips(self, path: Path) -> TripBatches:
        """The file's trips under the column contract, parsed batch by batch as they are read."""
        return TripBatches(TRIP_SCHEMA, lambda: trip_batches(
            path, max_rows=self.max_rows_per_file,
            max_bytes=self.max_bytes_per_file))


class PostgresResource(dg.ConfigurableResource):
    host: str = "127.0.0.1"
    port: int = LOCAL_PG_PORT
    user: str = "postgres"
    password: str = ""
    database: str = "postgres"

    def uri(self) -> str:
        """A libpq URI. It carries the password: never log it."""
        from urllib.parse import quote

        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}"
