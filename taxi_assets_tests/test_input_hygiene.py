"""Input hygiene: a byte-order mark before the header is not part of a name, an empty file is
called empty (not a header missing every column), and trips picked up on days their month's
file cannot feed are counted and dated, not taken for late-filed ones."""

from __future__ import annotations

import datetime
import gzip

import pytest

from taxi_assets import console
from taxi_assets.datasets import YELLOW
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import materialize, materialize_days, pipeline_resources
from taxi_assets_tests.test_faults import failure_message

SAMPLE = "yellow_tripdata_2021-01.csv.gz"
SAMPLE_ROWS = 28_401


def test_a_header_after_a_utf8_byte_order_mark_loads(tmp_path, http_source, postgres):
    # As Excel's "CSV UTF-8" saves a file: the mark, then the TLC's header and rows unchanged.
    text = gzip.decompress(sample(SAMPLE).read_bytes())
    http_source.publish_bytes("2021-01", gzip.compress(b"\xef\xbb\xbf" + text))
    resources = pipeline_resources(tmp_path, http_source.url, postgres)

    result = materialize(resources, selection="raw_yellow_trips cleaned_yellow_trips")

    [materialization] = result.asset_materializations_for_node("cleaned_yellow_trips")
    assert materialization.metadata[ROWS_READ_KEY].value == SAMPLE_ROWS


@pytest.mark.parametrize(
    "content", [b"", gzip.compress(b"")], ids=["zero-byte file", "gzip of nothing"]
)
def test_an_empty_file_is_called_empty(tmp_path, http_source, postgres, content):
    http_source.publish_bytes("2021-01", content)
    resources = pipeline_resources(tmp_path, http_source.url, postgres)

    result = materialize(resources, selection="raw_yellow_trips", raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "yellow_tripdata_2021-01.csv.gz: is empty: it holds no header and no rows" in message
    assert "missing" not in message


def with_pickups_moved(text: bytes, pickups: list[str]) -> bytes:
    """The sample with the first trips carrying riders picked up (and dropped off ten minutes
    later) at `pickups`, as real files carry trips from 2002 and 2088."""
    header, *lines = text.decode().splitlines(keepends=True)
    moved = iter(pickups)
    for index, line in enumerate(lines):
        cells = line.split(",")
        if cells[3] in ("", "0"):
            continue
        pickup = next(moved, None)
        if pickup is None:
            break
        cells[1] = pickup
        cells[2] = str(datetime.datetime.fromisoformat(pickup) + datetime.timedelta(minutes=10))
        lines[index] = ",".join(cells)
    return (header + "".join(lines)).encode()


def test_trips_outside_the_days_a_month_feeds_are_counted_and_dated_apart_from_late_filed(
    tmp_path, http_source, postgres
):
    text = gzip.decompress(sample(SAMPLE).read_bytes())
    http_source.publish_bytes(
        "2021-01",
        gzip.compress(with_pickups_moved(text, ["2002-12-31 23:00:00", "2088-01-24 10:00:00"])),
    )
    resources = pipeline_resources(tmp_path, http_source.url, postgres)

    results = [
        materialize(resources),
        materialize_days(resources, "2021-01-01", "2021-01-31"),
    ]

    [cleaned] = results[0].asset_materializations_for_node("cleaned_yellow_trips")
    assert cleaned.metadata["outside_window_rows"].value == 2
    assert cleaned.metadata["outside_window_pickups"].value == "2002-12-31 … 2088-01-24"
    closing = console.closing_table(
        "2021-01", console.landed(results), 1.0, [YELLOW], console.outside_window(results)
    )
    assert (
        "The yellow taxi month: 2 trips were picked up outside the days this file can feed "
        "(2020-12-01 to 2021-01-31), on 2002-12-31 … 2088-01-24: they stay in Postgres and "
        "the monthly file, in no day."
    ) in closing
    # The late-filed trips (December's, in January's file) are told apart, as before.
    assert any(line.startswith("The yellow taxi days hold 16 fewer trips") for line in closing)
