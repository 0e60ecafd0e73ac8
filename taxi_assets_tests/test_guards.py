"""Guards against destructive inputs, each tried with the real samples through the pipeline.

The shrink guard: a valid file with far fewer rows than the month's sinks hold (an empty one,
the head of the real January file) is stopped before any sink changes, for the month and for a
range of days, and goes through when the run carries the override tag.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.shrink_guard import ALLOW_SHRINK_TAG
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import (
    failure_messages,
    materialize,
    materialize_days,
    partition_state,
    pipeline_resources,
    query,
)

pytestmark = pytest.mark.faults

JANUARY_FILE = "yellow_tripdata_2021-01.csv.gz"
KEPT_ROWS = 27_812
ALLOW = {ALLOW_SHRINK_TAG: "true"}
FIRST_WEEK = ("2021-01-01", "2021-01-07")


def head_of_january(lines: int) -> bytes:
    """The real January file's header and its first `lines` rows, gzipped as the TLC ships it."""
    with gzip.open(sample(JANUARY_FILE), "rt", newline="") as text:
        kept = [text.readline() for _ in range(lines + 1)]
    return gzip.compress("".join(kept).encode())


def lake_files(resources: dict) -> dict[str, str]:
    """Every file in the local lake, hidden ones included: its MD5."""
    root = Path(resources["lake_monthly_io_manager"].lake.root)
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def warehouse_rows(resources: dict) -> list[tuple]:
    import duckdb

    with duckdb.connect(resources["warehouse_io_manager"].database, read_only=True) as conn:
        return conn.sql(
            "SELECT CAST(tpep_pickup_datetime AS DATE) d, count(*) FROM "
            "ny_taxi.yellow_trips GROUP BY d ORDER BY d"
        ).fetchall()


def messages_of(result) -> str:
    return "\n".join(failure_messages(result))


def failed_checks(result) -> dict[str, str]:
    return {
        e.check_name: e.description or ""
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


@pytest.fixture
def loaded(tmp_path, http_source, postgres):
    """The real January in every sink (its first week of days too), on one instance."""
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    resources = pipeline_resources(tmp_path, http_source.url, postgres)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(resources, instance=instance).success
    assert materialize_days(resources, *FIRST_WEEK, instance=instance).success
    assert partition_state(postgres)[0] == KEPT_ROWS
    return resources, instance


def replace_source(resources: dict, http_source, data: bytes) -> None:
    """A new file for January at the source; the landing copy goes, as a re-upload's would."""
    http_source.publish_bytes("2021-01", data)
    (Path(resources["taxi_source"].landing_dir) / JANUARY_FILE).unlink()


@pytest.mark.parametrize("rows", [0, 1_000], ids=["empty_file", "head_of_the_file"])
def test_shrunken_month_is_stopped_before_any_sink_and_goes_through_on_request(
    loaded, http_source, postgres, rows
):
    resources, instance = loaded
    before = (partition_state(postgres), lake_files(resources), warehouse_rows(resources))
    replace_source(resources, http_source, head_of_january(rows))

    result = materialize(resources, instance=instance, raise_on_error=False)

    assert not result.success
    reason = failed_checks(result)["no_shrink"]
    assert "cleaned_yellow_trips 2021-01" in reason and f"{KEPT_ROWS:,}" in reason, reason
    assert ALLOW_SHRINK_TAG in reason
    assert not result.asset_materializations_for_node("ny_taxi__yellow_cab_data")
    assert (partition_state(postgres), lake_files(resources), warehouse_rows(resources)) == before

    # A range of days built from the shrunken month (by hand: automation holds it back) is
    # stopped too, by the daily lake sinks before they write; the warehouse, below them, waits.
    days = materialize_days(resources, *FIRST_WEEK, instance=instance, raise_on_error=False)
    assert not days.success
    messages = messages_of(days)
    assert "yellow_trips_by_day 2021-01-01..2021-01-07" in messages, messages
    assert "yellow_trips_daily_export 2021-01-01..2021-01-07" in messages, messages
    assert (partition_state(postgres), lake_files(resources), warehouse_rows(resources)) == before

    # On purpose: the tag lets the month and its days be replaced.
    assert materialize(resources, instance=instance, tags=ALLOW).success
    assert materialize_days(resources, *FIRST_WEEK, instance=instance, tags=ALLOW).success
    count = partition_state(postgres)[0]
    assert count <= rows and (count > 0) == (rows > 0)
    assert sum(n for _, n in warehouse_rows(resources)) <= count


def test_a_month_that_keeps_its_size_passes(loaded, http_source, postgres):
    resources, instance = loaded
    replace_source(resources, http_source, sample(JANUARY_FILE).read_bytes())
    result = materialize(resources, instance=instance)
    assert result.success
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_shrink"]
    assert check.passed and check.metadata["materialized_rows"].value == KEPT_ROWS


# --- fail early, naming the thing -------------------------------------------------------------


def test_a_table_the_project_did_not_make_is_refused_before_loading(
    tmp_path, http_source, postgres
):
    """The tutorial's `to_sql` leaves a plain `yellow_cab_data` table: it is kept, untouched."""
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    query(postgres, "CREATE SCHEMA ny_taxi")
    with gzip.open(sample(JANUARY_FILE), "rt") as text:
        header = text.readline().strip().split(",")
    columns = ", ".join(f'"{name}" text' for name in header)
    query(postgres, f"CREATE TABLE ny_taxi.yellow_cab_data ({columns})")
    query(postgres, "INSERT INTO ny_taxi.yellow_cab_data (\"VendorID\") VALUES ('1'), ('2')")
    http_source.publish("2021-01", JANUARY_FILE)

    result = materialize(
        pipeline_resources(tmp_path, http_source.url, postgres), raise_on_error=False
    )

    assert not result.success
    message = messages_of(result)
    assert (
        "ny_taxi.yellow_cab_data exists but is not the project's table (a plain table" in message
    ), message
    assert "ALTER TABLE ny_taxi.yellow_cab_data RENAME TO yellow_cab_data_old" in message
    assert query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data") == [(2,)]
    assert query(postgres, "SELECT count(*) FROM pg_tables WHERE schemaname = 'ny_taxi'") == [(1,)]

    # Done as the error says, the next run loads the month and the old rows are kept aside.
    query(postgres, "ALTER TABLE ny_taxi.yellow_cab_data RENAME TO yellow_cab_data_old")
    assert materialize(pipeline_resources(tmp_path, http_source.url, postgres)).success
    assert partition_state(postgres)[0] == KEPT_ROWS
    assert query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data_old") == [(2,)]


# --- local sources ------------------------------------------------------------------------------

READ = "the source is read for files named yellow_tripdata_YYYY-MM.csv.gz, gzip-compressed CSV"


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file_url"])
def test_a_month_missing_from_a_local_source_is_not_published(tmp_path, postgres, as_url):
    folder = tmp_path / "source"
    folder.mkdir()
    # Another format under the month's name is not taken for it, but named.
    (folder / "yellow_tripdata_2021-01.parquet").write_bytes(
        sample("green_tripdata_2022-01.parquet").read_bytes()
    )
    source = folder.as_uri() if as_url else str(folder)

    result = materialize(
        pipeline_resources(tmp_path, source, postgres),
        selection="raw_yellow_trips",
        raise_on_error=False,
    )

    assert not result.success
    message = messages_of(result)
    assert f"{folder}: yellow_tripdata_2021-01.csv.gz is not published there ({READ})" in message, (
        message
    )
    assert (
        "the folder has ['yellow_tripdata_2021-01.parquet'], in a name or format not read"
        in message
    )
    assert "attempt" not in message, "a missing local file is not a network fault to retry"


def test_a_local_file_in_the_wrong_format_says_what_is_read(tmp_path, postgres):
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / JANUARY_FILE).write_bytes(sample("green_tripdata_2022-01.parquet").read_bytes())

    result = materialize(
        pipeline_resources(tmp_path, str(folder), postgres),
        selection="raw_yellow_trips",
        raise_on_error=False,
    )

    message = messages_of(result)
    assert f"{JANUARY_FILE} is not gzip-compressed (it is a Parquet file)" in message, message
    assert READ in message and "after 1 attempt(s)" in message


@pytest.mark.parametrize(
    "folder, selection, full",
    [
        (
            "lake",
            "raw_yellow_trips cleaned_yellow_trips yellow_trips_parquet",
            "lake/nyc_taxi_data",
        ),
        ("landing", "raw_yellow_trips", "landing"),
    ],
)
def test_a_folder_without_room_fails_before_writing_naming_the_folder(
    tmp_path, http_source, postgres, folder, selection, full
):
    """The lake, or the downloads' landing folder, on a real 16 MiB file system (a tmpfs,
    mounted in a user namespace of the run's own, so no privilege is needed): it cannot keep
    the margin, and the write says so before it starts."""
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    state = tmp_path / "state"
    (state / folder).mkdir(parents=True)
    spec = {
        "postgres": {
            "host": postgres.host,
            "port": postgres.port,
            "user": postgres.user,
            "password": postgres.password,
            "database": postgres.database,
        },
        "state": str(state),
        "source_url": http_source.url,
        "selection": selection,
    }
    run = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs -o size=16m none "$1" && exec "$2" -m taxi_assets_tests.killed_run "$3"',
            "sh",
            str(state / folder),
            sys.executable,
            json.dumps(spec),
        ],
        capture_output=True,
        text=True,
    )

    assert run.returncode == 4, run.stderr[-3000:]
    failures = "\n".join(json.loads(run.stdout.splitlines()[-1])["failures"])
    assert f"{state / full} has 16,777,216 bytes free, and writing needs " in failures, failures
    assert "free some space there or point TAXI_HOME elsewhere" in failures


def test_an_unreachable_lake_or_warehouse_fails_before_writing_naming_the_settings(
    tmp_path, http_source, postgres
):
    """A GCS and a BigQuery endpoint where nothing listens (a port just closed)."""
    from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
    from taxi_assets.defs.resources import LakeResource
    from taxi_assets.storage.local_postgres import free_port

    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    nowhere = f"http://127.0.0.1:{free_port()}"
    resources = pipeline_resources(
        tmp_path,
        http_source.url,
        postgres,
        lake=LakeResource(root="gs://taxi-lake", endpoint=nowhere, retry_time_limit_seconds=1),
        warehouse_io_manager=BigQueryWarehouseIOManager(project="taxi", api_endpoint=nowhere),
    )
    assert materialize(resources, selection="raw_yellow_trips cleaned_yellow_trips").success

    lake = materialize(resources, selection="yellow_trips_parquet", raise_on_error=False)
    message = messages_of(lake)
    assert "the lake gs://taxi-lake cannot be reached" in message, message
    assert "Check TAXI_GCS_BUCKET, TAXI_GCS_ENDPOINT and the credentials" in message

    # The warehouse reads the lake's days: those come from a lake that works.
    resources["lake_by_day_io_manager"] = pipeline_resources(tmp_path, http_source.url, postgres)[
        "lake_by_day_io_manager"
    ]
    assert materialize_days(resources, *FIRST_WEEK, selection="yellow_trips_by_day").success
    warehouse = materialize_days(
        resources, *FIRST_WEEK, selection="ny_taxi/yellow_trips", raise_on_error=False
    )
    message = messages_of(warehouse)
    assert (
        f"the warehouse {nowhere} (dataset ny_taxi in project taxi) cannot be reached" in message
    ), message
    assert "Check TAXI_BQ_PROJECT, TAXI_BQ_ENDPOINT and the credentials" in message
