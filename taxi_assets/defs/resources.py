"""Resources: the trip files at their source, the PostgreSQL server and the Parquet lake
(profiles.py chooses their settings)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import Field

from taxi_assets import settings
from taxi_assets.tlc import source
from taxi_assets.tlc.download import LandedFile, download
from taxi_assets.tlc.batches import TripBatches
from taxi_assets.datasets import TripDataset

from taxi_assets.google_credentials import check_key_file
from taxi_assets.tlc.source_kinds import SOURCE_KINDS, SourceKind
from taxi_assets.tlc.landed_trips import ReadRecipe, mapped_trips
from taxi_assets.tlc.schema_mapping import MappingPlan

PROJECT_ROOT = settings.PROJECT_ROOT
LOCAL_PG_PORT = int(settings.BY_NAME["TAXI_PG_PORT"].default)
SOURCE_RESOURCE_KEY = "taxi_source"


def local_pg_port() -> int:
    """The port of the project's PostgreSQL on the local profile."""
    return int(settings.value("TAXI_PG_PORT"))


class MonthNotCarried(ValueError):
    """The chosen source does not carry this month (or dataset) at all."""


def _month_before(month: str, months: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class TaxiSourceResource(dg.ConfigurableResource):
    """The monthly trip files of one source kind (`datatalks` or `tlc`), every dataset's.

    `base_url` overrides the kind's own: an HTTP(S) URL, `file://` URL or plain folder, where
    `{dataset}` stands for the dataset's name (without it, all datasets' files side by side).
    """

    kind: str = "datatalks"
    base_url: str = ""
    landing_dir: str = Field(default="", description="Where files land; default TAXI_HOME/landing.")
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

    def url(self, dataset: TripDataset) -> str:
        return (self.base_url or self._kind.base_url).replace("{dataset}", dataset.name)

    @property
    def published_probe(self) -> str | None:
        return self._kind.published_probe

    @property
    def is_closed(self) -> bool:
        """Whether the source holds a fixed range of months (a mirror), not a live feed."""
        return self._kind.last_month is not None

    def file_name(self, dataset: TripDataset, month: str) -> str:
        return dataset.file_name(month, self._kind.suffix)

    def months(self, dataset: TripDataset, today: dt.date | None = None) -> tuple[str, str]:
        """The first and last month the source can hold of the dataset (the last finished
        month, if open). Raises MonthNotCarried for a dataset the source does not carry."""
        kind = self._kind
        if dataset.name not in kind.first_months:
            raise MonthNotCarried(
                f"{kind.description} (TAXI_SOURCE={self.kind}) has no {dataset.title} files; "
                f"it carries {', '.join(kind.first_months)}"
            )
        last_finished = _month_before(f"{today or dt.date.today():%Y-%m}", 1)
        return kind.first_months[dataset.name], min(kind.last_month or last_finished, last_finished)

    def check_month(self, dataset: TripDataset, month: str) -> None:
        """Fail at once for a month the source cannot have: naming its range, or, for a month
        an open source has not finished yet, as not published."""
        kind = self._kind
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise MonthNotCarried(f"{month!r} is not a month: use YYYY-MM")
        first, last = self.months(dataset)
        if month < first or (kind.last_month and month > kind.last_month):
            raise MonthNotCarried(
                f"{month} is not a month of {kind.description} (TAXI_SOURCE={self.kind}): "
                f"it holds {first} to {last} of the {dataset.title} files"
            )
        if month > last:
            raise source.SourceNotPublished(
                f"{self.file_name(dataset, month)} is not published: {month} is not over yet"
            )

    def newest_expected_month(self, dataset: TripDataset, today: dt.date) -> str:
        """The newest month whose file the publication lag allows to be out on `today`."""
        first, last = self.months(dataset, today)
        lag = self._kind.publication_lag_months
        return max(first, min(last, _month_before(f"{today:%Y-%m}", lag + 1)))

    def remote(self, dataset: TripDataset, month: str) -> source.SourceFile:
        """The month's file and its version at the source, by HEAD. Raises SourceNotPublished."""
        return source.remote_file(
            self.url(dataset),
            self.file_name(dataset, month),
            timeout=self.timeout_seconds,
            probe=self.published_probe,
        )

    @property
    def landing_path(self) -> Path:
        return Path(self.landing_dir or settings.taxi_home() / "landing")

    def fetch(self, dataset: TripDataset, month: str, log) -> LandedFile:
        self.check_month(dataset, month)
        return download(
            self.url(dataset),
            self.file_name(dataset, month),
            self.landing_path,
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            timeout=self.timeout_seconds,
            probe=self.published_probe,
            log=log,
        )

    def recipe(
        self, dataset: TripDataset, path: Path, known_types: dict[str, pa.DataType] | None = None
    ) -> ReadRecipe:
        """How to read the landed file at `path` under this source's ceilings. `known_types`:
        the types the sinks hold for columns beyond the canonical ones."""
        return ReadRecipe.of(
            dataset.name,
            path.name,
            max_rows=self.max_rows_per_file,
            max_bytes=self.max_bytes_per_file,
            known_types=known_types,
        )

    def trips(
        self, dataset: TripDataset, path: Path, known_types: dict[str, pa.DataType] | None = None
    ) -> tuple[MappingPlan, TripBatches]:
        """The file's trips as the dataset's canonical columns, read and mapped batch by batch;
        and the mapping, planned from the file's schema before a row is read."""
        return mapped_trips(path, self.recipe(dataset, path, known_types))


def configured_source() -> TaxiSourceResource:
    """The source TAXI_SOURCE names (default datatalks), at TAXI_SOURCE_URL when set."""
    return TaxiSourceResource(
        kind=settings.value("TAXI_SOURCE"),
        base_url=settings.value("TAXI_SOURCE_URL"),
        landing_dir=str(settings.taxi_home() / "landing"),
    )


def source_run_config(source: TaxiSourceResource) -> dict:
    """The run config that records where a run's files come from (`kind` and `base_url` of the
    `taxi_source` resource), so its re-executions and retries read the same files whatever
    environment launches them. A plain folder is recorded as an absolute path."""
    base_url = source.base_url
    if base_url and "://" not in base_url:
        base_url = str(Path(base_url).expanduser().resolve())
    return {
        "resources": {SOURCE_RESOURCE_KEY: {"config": {"kind": source.kind, "base_url": base_url}}}
    }


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


REACH_SECONDS = 10


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives: `root` is a local folder, `gs://bucket` or `gs://bucket/prefix`.

    Real GCS credentials come from GOOGLE_APPLICATION_CREDENTIALS or the default chain, which
    pyarrow's GcsFileSystem resolves itself; with `endpoint` set (an emulator) access is
    anonymous over the endpoint's scheme.
    """

    root: str = Field(description="Local folder, gs://bucket or gs://bucket/prefix.")
    endpoint: str | None = Field(
        default=None, description="GCS endpoint override for emulators, e.g. http://127.0.0.1:4443."
    )
    retry_time_limit_seconds: int | None = Field(
        default=None,
        description="How long GCS calls retry transient errors; None keeps the client default "
        "(about 15 minutes), which a run would spend hanging when the endpoint is down.",
    )

    @property
    def is_gcs(self) -> bool:
        return self.root.startswith("gs://")

    def _base(self, retry_seconds: int | None = None) -> tuple[pafs.FileSystem, str]:
        if not self.is_gcs:
            folder = self.root.removeprefix("file://")
            return pafs.LocalFileSystem(), Path(folder).expanduser().resolve().as_posix()
        bucket_and_prefix = self.root.removeprefix("gs://").strip("/")
        if not bucket_and_prefix:
            raise ValueError(f"lake root {self.root!r} names no bucket")
        options: dict = {}
        if not self.endpoint:
            check_key_file()
        if self.endpoint:
            scheme, _, host = self.endpoint.rstrip("/").rpartition("://")
            options.update(anonymous=True, scheme=scheme or "https", endpoint_override=host)
        retry_seconds = retry_seconds or self.retry_time_limit_seconds
        if retry_seconds is not None:
            options["retry_time_limit"] = dt.timedelta(seconds=retry_seconds)
        return pafs.GcsFileSystem(**options), bucket_and_prefix

    def filesystem(self) -> pafs.FileSystem:
        """The lake as a filesystem whose paths are relative to `root` ("a/b.parquet")."""
        base_fs, base_path = self._base()
        return pafs.SubTreeFileSystem(base_path, base_fs)

    def check_reachable(self) -> None:
        """Fail before any data moves when the lake cannot be reached, naming what sets it.

        Within REACH_SECONDS of retries: an endpoint that answers nothing in that time is
        down or wrong, and the run says so rather than wait out the writes' longer limit.
        """
        base_fs, base_path = self._base(retry_seconds=REACH_SECONDS)
        try:
            base_fs.get_file_info(base_path)
        except OSError as error:
            settings = (
                "TAXI_GCS_BUCKET, TAXI_GCS_ENDPOINT and the credentials"
                if self.is_gcs
                else "TAXI_HOME"
            )
            raise OSError(
                f"the lake {self.root} cannot be reached ({error}); nothing was "
                f"written. Check {settings}"
            ) from error

    def uri(self, path: str = "") -> str:
        """`gs://…` or `file://…` for a lake-relative path, for metadata and logs."""
        path = path.strip("/")
        if self.is_gcs:
            return "/".join(filter(None, [self.root.rstrip("/"), path]))
        _, base_path = self._base()
        return Path(base_path, path).as_uri()
