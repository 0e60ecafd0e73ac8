"""The bench's month generator: real rows, moved by whole days, written like the TLC file."""

from __future__ import annotations

import gzip
from collections import defaultdict
from datetime import date

import pandas as pd
import pytest

from bench.generate_month import DEFAULT_INPUTS, TEST_DATA, generate
from bench.tutorial import parse_dates, taxi_dtypes


def _blank_dates(line: bytes) -> tuple[bytes, int]:
    """The line with both dates blanked, and the dropoff's distance in days from the pickup."""
    vendor, rest = line.split(b",", 1)
    pickup, dropoff = (
        date.fromisoformat(rest[:10].decode()),
        date.fromisoformat(rest[20:30].decode()),
    )
    return vendor + b"," + rest[10:20] + rest[30:], (dropoff - pickup).days


def _lines(path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).split(b"\n")


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    out = tmp_path_factory.mktemp("month") / "yellow_tripdata_2021-02.csv.gz"
    return out, generate("2021-02", 40_000, out, seed=3)


def test_same_arguments_give_the_same_bytes(month, tmp_path):
    out, _ = month
    again = tmp_path / "again.csv.gz"
    generate("2021-02", 40_000, again, seed=3)
    assert again.read_bytes() == out.read_bytes()
    other_seed = tmp_path / "other.csv.gz"
    generate("2021-02", 40_000, other_seed, seed=4)
    assert other_seed.read_bytes() != out.read_bytes()


def test_every_byte_but_the_dates_is_a_real_row(month):
    out, summary = month
    source: dict[bytes, set[int]] = defaultdict(set)
    header = None
    for path in DEFAULT_INPUTS:
        lines = _lines(path)
        header = lines[0]
        for line in lines[1:]:
            if line:
                key, days = _blank_dates(line)
                source[key].add(days)
    lines = _lines(out)
    assert lines[0] == header and header.endswith(b"\r"), "same header, CRLF like the source"
    assert lines[-1] == b"", "ends with a line break"
    rows = lines[1:-1]
    assert len(rows) == summary["rows"] == 40_000
    for line in rows:
        key, days = _blank_dates(line)
        # Same trip, and the dropoff moved by as many days as the pickup.
        assert days in source.get(key, ()), line


def test_pickups_cover_the_month_with_a_few_stragglers(month):
    out, summary = month
    frame = pd.read_csv(
        out, sep=",", compression="gzip", dtype=taxi_dtypes, parse_dates=parse_dates
    )
    days = frame["tpep_pickup_datetime"].dt.date
    in_month = days[(days >= date(2021, 2, 1)) & (days < date(2021, 3, 1))]
    assert set(in_month) == {date(2021, 2, d) for d in range(1, 29)}
    assert in_month.value_counts().min() > 0.8 * len(in_month) / 28
    outside = len(frame) - len(in_month)
    assert outside == summary["outside_month"]
    assert 0 < outside < 0.01 * len(frame)
    # The 2020-01 sample's unknown-vendor rows keep their empty cells.
    assert frame["VendorID"].isna().any() and frame["passenger_count"].isna().any()
    assert not frame["PULocationID"].isna().any()


def test_a_cut_off_last_line_is_not_a_row(tmp_path):
    summary = generate(
        "2021-01",
        1_000,
        tmp_path / "m.csv.gz",
        seed=1,
        inputs=[TEST_DATA / "yellow_tripdata_2021-01.truncated_last_line.csv.gz"],
    )
    assert summary["dropped_source_lines"] == 1
    assert summary["source_rows"] == 28_401
