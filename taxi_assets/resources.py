"""Resources: the source files and the PostgreSQL server (profiles.py chooses their settings)."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from taxi_assets import source
from taxi_assets.batches import TripBatches
from taxi_assets.schema import file_schema, trip_batches
from taxi_assets.schema_mapping import MappingPlan, map_batches, plan_mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_PG_PORT = 55432


def local_pg_port() -> int:
    """The port of the project's PostgreSQL on the local profile."""
    return int(os.environ.get("TAXI_PG_PORT") or LOCAL_PG_PORT)


def taxi_home() -> Path:
    """Where the local profile keeps its state (git-ignored)."""
    return Path(os.environ.get("TAXI_HOME", PROJECT_ROOT / ".local")).resolve()


@dataclass(frozen=True)
class SourceKind:
    """A publisher of monthly yellow-taxi files, and what is known about how it publishes."""

    description: str
    base_url: str
    file_pattern: str  # with {month} as YYYY-MM
    first_month: str
    last_month: str | None  # None: a new month keeps coming
    # An object the publisher always has, to tell its "not published" 403 from throttling
    # (relative to a file's URL); None when the publisher answers 404 for a missing file.
    published_probe: str | None = None
    # Months between a month's end and the day its file is (about) out.
    publication_lag_months: int = 0


SOURCE_KINDS = {
    # The tutorial's frozen CSV.gz mirror of the TLC files.
    "datatalks": SourceKind(
        "the DataTalksClub CSV.gz mirror",
        "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/yellow",
        "yellow_tripdata_{month}.csv.gz",
        "2019-01",
        "2021-07",
    ),
    # The TLC's own Parquet files, behind CloudFront, about two months after each month ends.
    "tlc": SourceKind(
        "the TLC's Parquet feed",
        "https://d37ci6vzurychx.cloudfront.net/trip-data",
        "yellow_tripdata_{month}.parquet",
        "2009-01",
        None,
        published_probe="../misc/taxi_zone_lookup.csv",
        publication_lag_months=2,
    ),
}


class MonthNotCarried(ValueError):
    """The chosen source does not carry this month at all."""


def _month_before(month: str, months: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class TaxiSourceResource(dg.ConfigurableResource):
    """The monthly yellow-taxi files of one source kind (`datatalks` or `tlc`).

    `base_url` overrides the kind's own: an HTTP(S) URL, `file://` URL or plain folder.
    """

    kind: str = "datatalks"
    base_url: str = ""
    landing_dir: str
    retries: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0
    # The ceiling on one file: the largest real months are ~15 M rows, ~2 GB of CSV.
    max_rows_per_file: int = Field(
        default=30_000_000, description="A file with more rows fails before any sink is written."
    )
    max_bytes_per_file: int = Field(
        default=8_000_000_000,
        description="A file that decompresses to more bytes fails before any sink is written.",
    )

    @property
    def _kind(self) -> SourceKind:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(
                f"TAXI_SOURCE={self.kind!r} is not a source; choose one of {sorted(SOURCE_KINDS)}"
            )
        return SOURCE_KINDS[self.kind]

    @property
    def url(self) -> str:
        return self.base_url or self._kind.base_url

    @property
    def published_probe(self) -> str | None:
        return self._kind.published_probe

    @property
    def is_closed(self) -> bool:
        """Whether the source holds a fixed range of months (a mirror), not a live feed."""
        return self._kind.last_month is not None

    def file_name(self, month: str) -> str:
        return self._kind.file_pattern.format(month=month)

    def months(self, today: dt.date | None = None) -> tuple[str, str]:
        """The first and last month the source can hold (the last finished month, if open)."""
        kind = self._kind
        last_finished = _month_before(f"{today or dt.date.today():%Y-%m}", 1)
        return kind.first_month, min(kind.last_month or last_finished, last_finished)

    def check_month(self, month: str) -> None:
        """Fail at once for a month the source cannot have: naming its range, or, for a month
        an open source has not finished yet, as not published."""
        kind = self._kind
        first, last = self.months()
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise MonthNotCarried(f"{month!r} is not a month: use YYYY-MM")
        if month < first or (kind.last_month and month > kind.last_month):
            raise MonthNotCarried(
                f"{month} is not a month of {kind.description} "
                f"(TAXI_SOURCE={self.kind}): it holds {first} to {last}"
            )
        if month > last:
            raise source.SourceNotPublished(
                f"{self.file_name(month)} is not published: {month} is not over yet"
            )

    def newest_expected_month(self, today: dt.date) -> str:
        """The newest month whose file the publication lag allows to be out on `today`."""
        first, last = self.months(today)
        return max(
            first, min(last, _month_before(f"{today:%Y-%m}", self._kind.publication_lag_months + 1))
        )

    def remote(self, month: str) -> source.SourceFile:
        """The month's file and its version at the source, by HEAD. Raises SourceNotPublished."""
        return source.remote_file(
            self.url,
            self.file_name(month),
            timeout=self.timeout_seconds,
            probe=self.published_probe,
        )

    def fetch(self, month: str, log) -> source.LandedFile:
        self.check_month(month)
        return source.download(
            self.url,
            self.file_name(month),
            Path(self.landing_dir),
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            timeout=self.timeout_seconds,
            probe=self.published_probe,
            log=log,
        )

    def trips(
        self, path: Path, known_types: dict[str, pa.DataType] | None = None
    ) -> tuple[MappingPlan, TripBatches]:
        """The file's trips as canonical columns, read and mapped batch by batch; and the
        mapping, planned from the file's schema before a row is read. `known_types`: the types
        the sinks hold for columns beyond the canonical ones."""
        plan = plan_mapping(path.name, file_schema(path), known_types)
        return plan, TripBatches(
            plan.schema,
            lambda: map_batches(
                plan,
                trip_batches(
                    path, max_rows=self.max_rows_per_file, max_bytes=self.max_bytes_per_file
                ),
            ),
        )


def configured_source() -> TaxiSourceResource:
    """The source TAXI_SOURCE names (default datatalks), at TAXI_SOURCE_URL when set."""
    return TaxiSourceResource(
        kind=os.environ.get("TAXI_SOURCE") or "datatalks",
        base_url=os.environ.get("TAXI_SOURCE_URL") or "",
        landing_dir=str(taxi_home() / "landing"),
    )


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
