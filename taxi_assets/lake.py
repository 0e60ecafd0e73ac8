"""The Parquet lake's root: a local folder or a GCS bucket, seen through one pyarrow filesystem.

Everything that reads or writes the lake goes through `LakeResource.filesystem()`, a
`SubTreeFileSystem` rooted at `root`, so the same relative paths and the same code serve both
profiles; only the base filesystem differs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs
from pydantic import Field

from taxi_assets.google_credentials import check_key_file


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

    def _base(self) -> tuple[pafs.FileSystem, str]:
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
        if self.retry_time_limit_seconds is not None:
            options["retry_time_limit"] = dt.timedelta(seconds=self.retry_time_limit_seconds)
        return pafs.GcsFileSystem(**options), bucket_and_prefix

    def filesystem(self) -> pafs.FileSystem:
        """The lake as a filesystem whose paths are relative to `root` ("a/b.parquet")."""
        base_fs, base_path = self._base()
        return pafs.SubTreeFileSystem(base_path, base_fs)

    def check_reachable(self) -> None:
        """Fail before any data moves when the lake cannot be reached, naming what sets it."""
        base_fs, base_path = self._base()
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
