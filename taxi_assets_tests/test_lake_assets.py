"""The lake assets of the real pipeline, on the GCS emulator."""

import gzip

import pandas as pd
import pyarrow.parquet as pq
import pytest

from taxi_assets.defs.resources import LakeResource
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import materialize, materialize_days, pipeline_resources, query

JANUARY_ROWS = 27_812  # the real sample's trips with passengers
DECEMBER_STRAGGLERS = 16  # trips in the January file picked up on 2020-12-31


@pytest.fixture
def lake(gcs_emulator, request):
    # Each test gets its own prefix in the session's bucket.
    return LakeResource(
        root=f"gs://{gcs_emulator.bucket}/{request.node.name}", endpoint=gcs_emulator.url
    )


@pytest.fixture
def resources(tmp_path, http_source, postgres, lake):
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    resources = pipeline_resources(tmp_path, http_source.url, postgres, lake)
    assert materialize(resources).success
    return resources


def read(lake: LakeResource, path: str) -> pd.DataFrame:
    return pq.read_table(path, filesystem=lake.filesystem()).to_pandas()


def test_month_is_one_parquet_object(resources, lake, gcs_emulator, request):
    objects = gcs_emulator.objects(f"{request.node.name}/nyc_taxi_data/")
    assert list(objects) == [f"{request.node.name}/nyc_taxi_data/2021-01.parquet"]
    month = read(lake, "nyc_taxi_data/2021-01.parquet")
    assert len(month) == JANUARY_ROWS
    assert (month["passenger_count"] > 0).all()


def test_single_run_backfill_writes_every_day_with_trips(resources, lake):
    result = materialize_days(resources, "2021-01-01", "2021-01-31")

    assert result.success
    dataset = read(lake, "nyc_taxi_data_by_day")
    days = sorted(str(d) for d in dataset["tpep_pickup_date"].unique())
    # The sample covers the first two days of January only.
    assert days == ["2021-01-01", "2021-01-02"]
    assert len(dataset) == JANUARY_ROWS - DECEMBER_STRAGGLERS
    month = read(lake, "nyc_taxi_data/2021-01.parquet")
    january = month[month["tpep_pickup_datetime"] >= "2021-01-01"]
    assert dataset["total_amount"].sum() == pytest.approx(january["total_amount"].sum())
    export = read(lake, "2021/01/02/nyc_taxi_data.parquet")
    assert (export["tpep_pickup_datetime"].dt.strftime("%Y-%m-%d") == "2021-01-02").all()
    assert len(export) == (dataset["tpep_pickup_date"].astype(str) == "2021-01-02").sum()


def test_rerunning_a_day_leaves_one_copy_of_its_rows(resources, lake):
    materialize_days(resources, "2021-01-01", "2021-01-31")
    before = read(lake, "nyc_taxi_data_by_day/tpep_pickup_date=2021-01-02")

    assert materialize(
        resources, partition_key="2021-01-02", selection="yellow_trips_by_day"
    ).success

    after = read(lake, "nyc_taxi_data_by_day/tpep_pickup_date=2021-01-02")
    assert len(after) == len(before)
    assert after["total_amount"].sum() == pytest.approx(before["total_amount"].sum())
    assert len(read(lake, "nyc_taxi_data_by_day")) == JANUARY_ROWS - DECEMBER_STRAGGLERS


def december_file() -> bytes:
    """A December 2020 file made of real trips: January's first-hour rows moved back a month."""
    lines = gzip.decompress(sample("yellow_tripdata_2021-01.csv.gz").read_bytes()).split(b"\r\n")
    first_hour = [line for line in lines[1:] if line[2:15] == b"2021-01-01 00"]
    moved = [line.replace(b"2021-01-01 ", b"2020-12-01 ") for line in first_hour]
    return gzip.compress(b"\r\n".join([lines[0], *moved, b""]))


def test_late_filed_trips_land_in_their_own_day_once(resources, lake, http_source):
    """January's file has 16 trips picked up on 2020-12-31: they belong to that day.

    The day reads its own month's file (required) and the next one (optional), so they land
    there once, and in no January day.
    """
    assert not materialize(
        resources, partition_key="2020-12-31", selection="yellow_trips_by_day", raise_on_error=False
    ).success, "December's own file is required"
    http_source.publish_bytes("2020-12", december_file())
    assert materialize(resources, partition_key="2020-12-01").success

    assert materialize(
        resources, partition_key="2020-12-31", selection="yellow_trips_by_day"
    ).success
    assert materialize_days(resources, "2021-01-01", "2021-01-31").success

    dataset = read(lake, "nyc_taxi_data_by_day")
    per_day = dataset["tpep_pickup_date"].astype(str).value_counts().to_dict()
    assert per_day["2020-12-31"] == DECEMBER_STRAGGLERS
    assert sum(per_day.values()) == JANUARY_ROWS  # every January-file trip, once
