"""One version of a month in its monthly sinks: a failed Postgres load (the server restarted
mid-COPY, a DDL clash) leaves the month's Parquet object as the last good run left it, byte for
byte, beside the last good partition, and discards the new object staged beside the load; the
next good run replaces both. A month whose object is not its partition's version is reported
by the object's check. (Kills between the commit and the publish: test_killed_runs.py.)
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pyarrow.parquet as pq
import pytest

from taxi_assets.storage.month_versions import create_table, versions

from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import JANUARY, MONTHLY, materialize, pipeline_resources, query
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
MONTH_CHECK = "lake_month_matches_postgres"


def january_repeated(copies: int) -> bytes:
    with gzip.open(sample(JANUARY_FILE), "rb") as text:
        header, rows = text.readline(), text.read()
    if not rows.endswith(b"\n"):
        rows += b"\r\n"
    return gzip.compress(header + rows * copies, compresslevel=1)


def staged_objects(state: Path) -> list[Path]:
    return list((state / "lake/nyc_taxi_data").glob(".*"))


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
    assert staged_objects(state) == []
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
    assert staged_objects(state) == []


def month_check(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == MONTH_CHECK]
    return evaluation


def test_a_month_object_written_without_its_postgres_table_is_reported_by_its_check(good_month):
    resources, postgres, state = good_month
    uri = resources["postgres_io_manager"].postgres.uri()
    good = versions(uri, "ny_taxi.yellow_cab_data", JANUARY)
    assert good.lake_run == good.postgres_run
    [(good_rows,)] = query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data")

    # The new file's month into the lake alone: the object is no longer Postgres's version.
    lake_only = materialize(
        resources, selection="raw_yellow_trips cleaned_yellow_trips yellow_trips_parquet"
    )

    evaluation = month_check(lake_only)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == (
        f"2021-01-01: ny_taxi.yellow_cab_data holds run {good.postgres_run}'s version of the "
        f"month, the lake's monthly object run {lake_only.run_id}'s"
    )
    assert evaluation.metadata["months_behind"].value == ["2021-01-01"]

    # The month's next run writes both: one version again.
    full = materialize(resources, selection=MONTHLY)
    assert month_check(full).passed
    now = versions(uri, "ny_taxi.yellow_cab_data", JANUARY)
    assert now.lake_run == now.postgres_run == full.run_id
    [(rows,)] = query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data")
    month = pq.ParquetFile(state / "lake/nyc_taxi_data/2021-01.parquet").metadata.num_rows
    assert month == rows > good_rows


def test_a_month_an_earlier_release_recorded_behind_is_still_reported_behind(pg):  # noqa: F811
    """That release kept one row per month whose lake object was behind its partition."""
    query(pg, "DROP SCHEMA IF EXISTS taxi_assets_state CASCADE")
    query(pg, "CREATE SCHEMA taxi_assets_state")
    query(
        pg,
        "CREATE TABLE taxi_assets_state.lake_behind_postgres (postgres_table text, month text, "
        "run_id text NOT NULL, swapped_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (postgres_table, month))",
    )
    query(
        pg,
        "INSERT INTO taxi_assets_state.lake_behind_postgres VALUES "
        "('ny_taxi.yellow_cab_data', '2021-01-01', 'a-killed-run')",
    )
    uri = pg.resource().uri()

    with adbc.connect(uri) as conn:
        create_table(conn)

    recorded = versions(uri, "ny_taxi.yellow_cab_data", JANUARY)
    assert recorded.lake_behind and recorded.postgres_run == "a-killed-run"
    assert recorded.describe("ny_taxi.yellow_cab_data") == (
        "2021-01-01: ny_taxi.yellow_cab_data holds run a-killed-run's version of the month, "
        "the lake's monthly object an older one, not recorded"
    )
    assert query(pg, "SELECT to_regclass('taxi_assets_state.lake_behind_postgres')") == [(None,)]
