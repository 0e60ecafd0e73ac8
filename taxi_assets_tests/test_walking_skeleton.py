"""A month from the HTTP source, cleaned, checked and loaded into PostgreSQL."""

import threading

import dagster as dg
import pytest

from taxi_assets.defs.assets import clean
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import (
    JANUARY,
    materialize,
    partition_state,
    query,
    pipeline_resources,
)

REAL_ROWS = 28_401
REAL_ZERO_PASSENGER_ROWS = 589


@pytest.fixture
def resources(tmp_path, http_source, postgres):
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    return pipeline_resources(tmp_path, http_source.url, postgres)


def test_month_materializes_end_to_end(resources, http_source, postgres):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")

    result = materialize(resources)

    assert result.success
    clean_meta = result.asset_materializations_for_node("cleaned_yellow_trips")[0].metadata
    assert clean_meta["dropped_zero_or_missing_passengers"].value == REAL_ZERO_PASSENGER_ROWS
    assert clean_meta["dagster/row_count"].value == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
    count, _, _ = partition_state(postgres)
    assert count == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
    assert query(
        postgres,
        "SELECT count(*) FROM ny_taxi.yellow_cab_data "
        "WHERE passenger_count IS NULL OR passenger_count = 0",
    ) == [(0,)]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["no_zero_passenger_trips"] is True
    # 16 real trips in this file were picked up in December 2020: inside the month before.
    assert checks["pickups_near_file_month"] is True
    assert checks["dropoff_not_before_pickup"] is True


def test_rerun_of_a_partition_leaves_identical_rows(resources, http_source, postgres):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    materialize(resources)
    first = partition_state(postgres)

    materialize(resources)

    assert partition_state(postgres) == first
    assert query(postgres, "SELECT count(*) FROM ny_taxi.yellow_cab_data") == [(first[0],)]


def test_download_is_reused_once_complete(resources, http_source):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    materialize(resources)
    materialize(resources)
    gets = [r for r in http_source.requests if r.startswith("GET")]
    assert gets == ["GET /yellow_tripdata_2021-01.csv.gz"]


def test_source_url_may_be_a_plain_folder(tmp_path, http_source, postgres):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "yellow_tripdata_2021-01.csv.gz").write_bytes(
        sample("yellow_tripdata_2021-01.csv.gz").read_bytes()
    )
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")

    result = materialize(pipeline_resources(tmp_path / "state", str(folder), postgres))

    assert result.success
    assert partition_state(postgres)[0] == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS


def test_blocking_check_stops_the_postgres_write(resources, http_source, postgres, monkeypatch):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    materialize(resources)
    good = partition_state(postgres)
    # Fault injection: the cleaning step regresses to the tutorial's commented-out filter,
    # so zero-passenger trips reach the check.
    monkeypatch.setattr(clean, "kept_trips", lambda dataset, trips: (trips, {}))

    result = materialize(resources, raise_on_error=False)

    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert "no_zero_passenger_trips" in {e.check_name for e in failed}
    assert not result.asset_materializations_for_node("ny_taxi__yellow_cab_data")
    assert partition_state(postgres) == good


def test_reader_never_sees_the_partition_empty_during_a_replace(resources, http_source, postgres):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    materialize(resources)
    expected = partition_state(postgres)[0]
    seen: list[int] = []
    stop = threading.Event()

    def read_continuously():
        import psycopg

        with psycopg.connect(postgres.uri, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(
                    conn.execute(
                        "SELECT count(*) FROM ny_taxi.yellow_cab_data WHERE source_month = %s",
                        (JANUARY,),
                    ).fetchone()[0]
                )

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        materialize(resources, selection="ny_taxi/yellow_cab_data")
        materialize(resources, selection="ny_taxi/yellow_cab_data")
    finally:
        stop.set()
        reader.join()

    assert len(seen) > 20, "the reader should have queried throughout both replaces"
    assert set(seen) == {expected}


BAD_INPUTS = [
    (
        "excel_resaved__yellow_tripdata_2021-01.csv.gz",
        ["excel_resaved", "line 2", "tpep_pickup_datetime", "01/01/2021 0:30"],
    ),
    (
        "yellow_tripdata_2021-01.truncated_last_line.csv.gz",
        ["line 28403", "expected 18 columns, got 3"],
    ),
    ("yellow_tripdata_sample_2019-01.csv.gz", ["missing ['VendorID'", "vendor_id"]),
]


@pytest.mark.parametrize("sample_name, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_file_fails_naming_file_and_row_and_keeps_the_table(
    tmp_path, resources, http_source, postgres, sample_name, expected
):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    materialize(resources)
    good = partition_state(postgres)
    # A fresh landing folder, or the good download from the first run would be reused.
    fresh = pipeline_resources(tmp_path / "bad", http_source.url, postgres)
    http_source.publish("2021-01", sample_name)

    result = materialize(fresh, raise_on_error=False)

    assert not result.success
    message = _failure_message(result)
    assert "yellow_tripdata_2021-01.csv.gz" in message
    for fragment in expected:
        assert fragment in message or fragment in sample_name
    assert partition_state(postgres) == good


def test_truncated_gzip_fails_clearly(resources, http_source, postgres):
    whole = sample("yellow_tripdata_2021-01.csv.gz").read_bytes()
    http_source.publish_bytes("2021-01", whole[: len(whole) // 2])

    result = materialize(resources, raise_on_error=False)

    assert not result.success
    message = _failure_message(result)
    assert "yellow_tripdata_2021-01.csv.gz" in message and "truncated or corrupt" in message
    assert partition_state(postgres) is None


def test_unpublished_month_fails_with_404(resources, http_source, postgres):
    result = materialize(resources, partition_key="2021-02-01", raise_on_error=False)

    assert not result.success
    message = _failure_message(result)
    assert "yellow_tripdata_2021-02.csv.gz" in message and "HTTP 404" in message


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "expected a failed step"
    return " ".join(str(e.event_specific_data.error) for e in failures)
