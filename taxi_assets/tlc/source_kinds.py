"""The publishers of the trip files `TAXI_SOURCE` chooses from, and how each publishes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceKind:
    """A publisher of monthly trip files, and what is known about how it publishes."""

    description: str
    base_url: str  # {dataset} is the dataset's name
    suffix: str  # the files' format: `{prefix}_{YYYY-MM}{suffix}`
    first_months: Mapping[str, str]  # by dataset; a dataset not named is not carried
    last_month: str | None  # None: a new month keeps coming
    # An object the publisher always has, to tell its "not published" 403 from throttling
    # (relative to a file's URL); None when the publisher answers 404 for a missing file.
    published_probe: str | None = None
    # Months between a month's end and the day its file is (about) out.
    publication_lag_months: int = 0


SOURCE_KINDS = {
    # The tutorial's frozen CSV.gz mirror of the TLC files, one release per dataset.
    "datatalks": SourceKind(
        "the DataTalksClub CSV.gz mirror",
        "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/{dataset}",
        ".csv.gz",
        {"yellow": "2019-01", "green": "2019-01"},
        "2021-07",
    ),
    # The TLC's own Parquet files, behind CloudFront, about two months after each month ends.
    "tlc": SourceKind(
        "the TLC's Parquet feed",
        "https://d37ci6vzurychx.cloudfront.net/trip-data",
        ".parquet",
        {"yellow": "2009-01", "green": "2013-08"},
        None,
        published_probe="../misc/taxi_zone_lookup.csv",
        publication_lag_months=2,
    ),
}
