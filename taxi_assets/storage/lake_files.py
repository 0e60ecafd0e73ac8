"""A range of the lake's days as the files that hold them, for a sink that reads files itself."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from taxi_assets.tlc.batches import TripBatches


@dataclass(frozen=True)
class LakeDayFiles:
    """The current files of a range of days (as the layout's manifest names them).

    `local_files` are their absolute paths when the lake is on this machine's disk (None on
    GCS): a sink that reads Parquet itself (DuckDB's `read_parquet`) loads them without a trip
    byte passing through this process. `trips` streams the same rows, read only when iterated,
    for a sink that cannot; its schema comes from the files' footers.
    `gcs_uris` are their `gs://` URIs when the lake is on Cloud Storage (None on disk): BigQuery
    loads them itself.
    `normalised_names`: the sink is to name the columns by the tutorial's rule (spaces to
    underscores, lower case); `trips` already carries those names. `file_schema` keeps the
    files' own names and types (by default `trips`' schema as given), column for column with
    `trips`' schema, for a sink that reads the files and renames in its own SQL.
    """

    trips: TripBatches
    local_files: tuple[str, ...] | None
    normalised_names: bool = False
    gcs_uris: tuple[str, ...] | None = None
    file_schema: pa.Schema | None = None

    def __post_init__(self):
        if self.file_schema is None:
            # Frozen: set once here; dataclasses.replace carries it over.
            object.__setattr__(self, "file_schema", self.trips.schema)
