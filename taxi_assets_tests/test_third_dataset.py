"""A third trip series is one more TripDataset, not new code: the real High Volume FHV sample
(`fhvhv_tripdata_2021-01.csv`, the first hour of January 2021: no vendor, no fares, no
passenger counts) defined here and run through every sink by the same builder as yellow and
green. The definition lives in this test only; the project does not ship fhvhv."""

import shutil
from types import MappingProxyType

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from taxi_assets.tlc import source_kinds
from taxi_assets.datasets import TripDataset
from taxi_assets.defs.trips import trip_dataset_definitions
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import pipeline_resources, query

SAMPLE = "fhvhv_tripdata_2021-01.csv.gz"

FHVHV = TripDataset(
    name="fhvhv",
    title="high-volume for-hire",
    file_prefix="fhvhv_tripdata",
    pickup="pickup_datetime",
    dropoff="dropoff_datetime",
    csv_columns=MappingProxyType(
        {
            "hvfhs_license_num": pa.string(),
            "dispatching_base_num": pa.string(),
            "pickup_datetime": pa.timestamp("us"),
            "dropoff_datetime": pa.timestamp("us"),
            "PULocationID": pa.int64(),
            "DOLocationID": pa.int64(),
            "SR_Flag": pa.int64(),
        }
    ),
    later_columns=MappingProxyType({}),
    drop_rules=(),
    known_vendor_ids=frozenset(),
    vendor_check_blocks=False,
    postgres_table="ny_taxi.fhvhv_trips",
    lake_name="fhvhv_data",
    lake_by_day_name="fhvhv_data_by_day",
    warehouse_table="ny_taxi.fhvhv_warehouse_trips",
    daily_schedule_hour=6,
)


@pytest.fixture
def fhvhv_source(http_source, monkeypatch):
    # The one line outside the definition: the source says it carries the series.
    monkeypatch.setitem(source_kinds.SOURCE_KINDS["datatalks"].first_months, "fhvhv", "2019-02")
    shutil.copyfile(sample(SAMPLE), http_source.root / "fhvhv_tripdata_2021-01.csv.gz")
    return http_source


def test_a_third_series_runs_through_every_sink_from_its_definition_alone(
    tmp_path, fhvhv_source, postgres
):
    query(postgres, "DROP TABLE IF EXISTS ny_taxi.fhvhv_trips")
    fhvhv = trip_dataset_definitions(FHVHV)
    resources = pipeline_resources(tmp_path, fhvhv_source.url, postgres)
    everything = [*fhvhv.assets, *fhvhv.asset_checks]
    expected = pa_csv.read_csv(sample(SAMPLE))  # pyarrow's own inference, not our reader

    month = dg.materialize(
        everything,
        partition_key="2021-01-01",
        resources=resources,
        selection=[dg.AssetKey(k) for k in (FHVHV.raw_asset, FHVHV.cleaned_asset)]
        + [FHVHV.postgres_asset, dg.AssetKey("fhvhv_trips_parquet")],
        instance=(instance := dg.DagsterInstance.ephemeral()),
    )
    days = dg.materialize(
        everything,
        resources=resources,
        selection=[dg.AssetKey("fhvhv_trips_by_day"), dg.AssetKey("fhvhv_trips_daily_export")]
        + [FHVHV.warehouse_asset],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2021-01-01",
            "dagster/asset_partition_range_end": "2021-01-01",
        },
    )

    assert month.success and days.success
    checks = {e.check_name for e in month.get_asset_check_evaluations()}
    assert "known_vendor_ids" not in checks and {"no_shrink", "only_known_columns"} <= checks
    rows = expected.num_rows
    assert query(
        postgres,
        "SELECT count(*), count(DISTINCT dispatching_base_num), min(pickup_datetime)::text "
        "FROM ny_taxi.fhvhv_trips WHERE source_month = '2021-01-01'",
    ) == [
        (
            rows,
            len(set(expected["dispatching_base_num"].to_pylist())),
            str(min(expected["pickup_datetime"].to_pylist())),
        )
    ]
    lake = tmp_path / "lake"
    assert pq.read_table(lake / "fhvhv_data" / "2021-01.parquet").num_rows == rows
    by_day = lake / "fhvhv_data_by_day" / "pickup_date=2021-01-01" / "part-0.parquet"
    assert pq.read_table(by_day).num_rows == rows  # the sample is the year's first hour
    assert pq.read_table(lake / "2021/01/01/fhvhv_data.parquet").num_rows == rows
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as warehouse:
        [(in_warehouse,)] = warehouse.execute(
            "SELECT count(*) FROM ny_taxi.fhvhv_warehouse_trips"
        ).fetchall()
    assert in_warehouse == rows
