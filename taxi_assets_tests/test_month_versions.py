"""One version of a month in its monthly sinks: a failed Postgres load (the server restarted
mid-COPY, a DDL clash) leaves the month's Parquet object as the last good run left it, byte for
byte, beside the last good partition; the next good run replaces both.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import MONTHLY, materialize, pipeline_resources, query
from taxi_assets_tests.test_faults import (  # noqa: F401 - fixtures
    DURING_COPY,
    JANUARY_FILE,
    StopServerWhen,
    assert_no_strays,
    failure_message,
    fault_postgres,
    pg,
    sink_state,
)

pytestmark = pytest.mark.faults
COPIES = 20  # rows enough for the COPY to be caught under way


def january_repeated(copies: int) -> bytes:
    with gzip.open(sample(JANUARY_FILE), "rb") as text:
        header, rows = text.readline(), text.read()
    if not rows.endswith(b"\n"):
        rows += b"\r\n"
    return gzip.compress(header + rows * copies, compresslevel=1)


def month_object(state: Path) -> str:
    return hashlib.sha256((state / "lake/nyc_taxi_data/2021-01.parquet").read_bytes()).hexdigest()


@pytest.fixture
def good_month(tmp_path, http_source, pg):  # noqa: F811
    """January loaded by a good run; the next file of January is
    COPIES times as long."""
    resources = pipeline_resources(tmp_path, http_source.url, pg)
    http_source.publish("2021-01", JANUARY_FILE)
    assert materialize(resources, selection=MONTHLY).success
    http_source.publish_bytes("2021-01", january_repeated(COPIES))
    return resources, pg, tmp_path


def test_postgres_restarted_mid_copy_leaves_the_months_object_at_the_last_good_version(good_month):
    resources, postgres, state = good_month
    before = (sink_state(postgres), month_object(state))
    stopper = StopServerWhen(postgres, DURING_COPY)
    stopper.start()
    try:
        result = materialize(resources, selection=MONTHLY, raise_on_error=False)
    finally:
        stopper.done.set()
        stopper.join()
    postgres.server.start()

    assert stopper.seen, "the server should have been stopped during the COPY"
    assert not result.success
    assert (sink_state(postgres), month_object(state)) == before
    assert_no_strays(postgres)
    # The next run switches both to the new file.
    assert materialize(resources, selection=MONTHLY).success
    [(rows,)] = query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data")
    assert rows == COPIES * before[0]["2021-01-01"][0]
    assert month_object(state) != before[1]


def test_a_ddl_clash_in_postgres_leaves_the_months_object_at_the_last_good_version(good_month):
    resources, postgres, state = good_month
    # Someone changed a column's type in the table: the month's rows no longer fit it.
    query(postgres, "ALTER TABLE ny_taxi.yellow_cab_data ALTER COLUMN fare_amount TYPE numeric")
    before = (sink_state(postgres), month_object(state))

    result = materialize(resources, selection=MONTHLY, raise_on_error=False)

    assert not result.success
    assert "column 'fare_amount' is numeric in the table" in failure_message(result)
    assert (sink_state(postgres), month_object(state)) == before
    assert_no_strays(postgres)
