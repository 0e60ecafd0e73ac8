"""The TLC's Parquet feed: every schema era through every sink, publication, re-uploads.

The feed is a real HTTP server on loopback (tlc_feed.py) serving Parquet files generated from
the real January 2020 rows, one per era, laid out as that era's files are.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets import cli
from taxi_assets.datasets import YELLOW
from taxi_assets.definitions import defs
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets.tlc.schema import TripFileError
from taxi_assets.tlc.source import remote_file
from taxi_assets_tests.pipeline import (
    POSTGRES_TABLE,
    materialize,
    materialize_days,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_automation import requested
from taxi_assets_tests.test_faults import failure_message, sink_state
from taxi_assets_tests.test_warehouse_assets import BigQueryWarehouse, DuckDBWarehouse
from taxi_assets_tests.tlc_feed import ERAS, era_2025, with_unknown_column

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

REPO = defs.get_repository_def()
PROBE = "/misc/taxi_zone_lookup.csv"


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def tlc_resources(tmp_path, feed, postgres, **kwargs) -> dict:
    return pipeline_resources(tmp_path, feed.url, postgres, source_kind="tlc", **kwargs)


def month_days(month: str) -> tuple[str, str]:
    first = dt.date.fromisoformat(f"{month}-01")
    last = (first + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    return str(first), str(last)


def expected(path, month: str) -> dict:
    """Counts and sums of the kept trips, from an independent pyarrow read of the file."""
    table = pq.read_table(path)
    lower = {name.lower(): name for name in table.column_names}
    kept = table.filter(pc.fill_null(pc.greater(table[lower["passenger_count"]], 0), False))
    pickups = kept[
        lower.get("tpep_pickup_datetime")
        or lower.get("pickup_datetime")
        or lower["trip_pickup_datetime"]
    ]
    if not pa.types.is_timestamp(pickups.type):
        pickups = pc.strptime(pickups, format="%Y-%m-%d %H:%M:%S", unit="us")
    start = dt.datetime.fromisoformat(f"{month}-01")
    end = (start + dt.timedelta(days=32)).replace(day=1)
    in_month = pc.and_(
        pc.greater_equal(pickups, pa.scalar(start, pa.timestamp("us"))),
        pc.less(pickups, pa.scalar(end, pa.timestamp("us"))),
    )
    return {
        "rows": kept.num_rows,
        "total_amount": round(
            pc.sum(kept[lower.get("total_amount") or lower["total_amt"]]).as_py(), 2
        ),
        "passengers": int(pc.sum(kept[lower["passenger_count"]]).as_py()),
        "rows_in_month": pc.sum(in_month.cast(pa.int64())).as_py(),
    }


# --- the mapping, file by file ---------------------------------------------------------------


def read_mapped(path) -> tuple:
    """The file as the raw asset reads it: the mapping plan, and the mapped batches whole."""
    plan, trips = TaxiSourceResource(kind="tlc", landing_dir=str(path.parent)).trips(YELLOW, path)
    return plan, trips.to_table()


EXPECTED_REPORTS = {
    "2015-03": {
        "null_typed": ["congestion_surcharge", "airport_fee"],
        "absent": ["cbd_congestion_fee"],
    },
    "2019-03": {
        "cast": {"passenger_count": "double → int64", "RatecodeID": "double → int64"},
        "null_typed": ["airport_fee"],
        "absent": ["cbd_congestion_fee"],
    },
    "2021-03": {
        "cast": {"passenger_count": "double → int64", "RatecodeID": "double → int64"},
        "absent": ["cbd_congestion_fee"],
    },
    "2023-05": {
        "renamed": {"Airport_fee": "airport_fee"},
        "cast": {
            "VendorID": "int32 → int64",
            "store_and_fwd_flag": "large_string → string",
            "PULocationID": "int32 → int64",
            "DOLocationID": "int32 → int64",
        },
        "absent": ["cbd_congestion_fee"],
    },
    "2025-01": {
        "renamed": {"Airport_fee": "airport_fee"},
        "cast": {
            "VendorID": "int32 → int64",
            "store_and_fwd_flag": "large_string → string",
            "PULocationID": "int32 → int64",
            "DOLocationID": "int32 → int64",
        },
    },
    "2026-03": {
        "renamed": {"Airport_fee": "airport_fee"},
        "cast": {
            "VendorID": "int32 → int64",
            "store_and_fwd_flag": "large_string → string",
            "PULocationID": "int32 → int64",
            "DOLocationID": "int32 → int64",
        },
        "new": {"green_levy": "double"},
    },
    "2010-05": {
        "renamed": {
            "pickup_datetime": "tpep_pickup_datetime",
            "dropoff_datetime": "tpep_dropoff_datetime",
            "rate_code": "RatecodeID",
            "surcharge": "extra",
            "vendor_id": "vendor_name",
            "payment_type": "payment_method",
        },
        "cast": {
            "tpep_pickup_datetime": "string → timestamp[us]",
            "tpep_dropoff_datetime": "string → timestamp[us]",
        },
        "absent": [
            "VendorID",
            "PULocationID",
            "DOLocationID",
            "payment_type",
            "improvement_surcharge",
            "congestion_surcharge",
            "airport_fee",
            "cbd_congestion_fee",
        ],
        "new": {
            "vendor_name": "string",
            "pickup_longitude": "double",
            "pickup_latitude": "double",
            "dropoff_longitude": "double",
            "dropoff_latitude": "double",
            "payment_method": "string",
        },
    },
    "2009-05": {
        "renamed": {
            "Trip_Pickup_DateTime": "tpep_pickup_datetime",
            "Trip_Dropoff_DateTime": "tpep_dropoff_datetime",
            "Passenger_Count": "passenger_count",
            "Trip_Distance": "trip_distance",
            "Rate_Code": "RatecodeID",
            "Fare_Amt": "fare_amount",
            "surcharge": "extra",
            "Tip_Amt": "tip_amount",
            "Tolls_Amt": "tolls_amount",
            "Total_Amt": "total_amount",
            "Start_Lon": "pickup_longitude",
            "Start_Lat": "pickup_latitude",
            "store_and_forward": "store_and_forward_flag",
            "End_Lon": "dropoff_longitude",
            "End_Lat": "dropoff_latitude",
            "Payment_Type": "payment_method",
        },
        "cast": {
            "tpep_pickup_datetime": "string → timestamp[us]",
            "tpep_dropoff_datetime": "string → timestamp[us]",
            "RatecodeID": "double → int64",
        },
        "absent": [
            "VendorID",
            "store_and_fwd_flag",
            "PULocationID",
            "DOLocationID",
            "payment_type",
            "improvement_surcharge",
            "congestion_surcharge",
            "airport_fee",
            "cbd_congestion_fee",
        ],
        "new": {
            "vendor_name": "string",
            "pickup_longitude": "double",
            "pickup_latitude": "double",
            "store_and_forward_flag": "double",
            "dropoff_longitude": "double",
            "dropoff_latitude": "double",
            "payment_method": "string",
        },
    },
}


@pytest.mark.parametrize("month", list(ERAS))
def test_each_era_maps_to_the_canonical_columns(tmp_path, month):
    path = tmp_path / f"yellow_tripdata_{month}.parquet"
    pq.write_table(ERAS[month](month), path)

    plan, trips = read_mapped(path)

    report = {key: value for key, value in plan.report().items() if value}
    assert report == EXPECTED_REPORTS[month]
    assert trips.schema.names[: len(YELLOW.canonical_columns)] == list(YELLOW.canonical_columns)
    assert [trips.schema.field(n).type for n in YELLOW.canonical_columns] == list(
        YELLOW.canonical_columns.values()
    )
    source = pq.read_table(path)
    assert trips.num_rows == source.num_rows
    for source_name, name in plan.report()["renamed"].items():
        assert trips[name].null_count == source[source_name].null_count
    if month not in (
        "2009-05",
        "2010-05",
    ):  # where the zone ids exist, they are the file's, nulls included
        assert trips["PULocationID"].to_pylist() == source["PULocationID"].to_pylist()
        assert trips["passenger_count"].to_pylist() == [
            None if v is None else int(v) for v in source["passenger_count"].to_pylist()
        ]
    else:  # never invented: no zone ids in 2009 and 2010
        assert trips["PULocationID"].null_count == trips.num_rows


def test_a_fractional_count_fails_naming_the_column_row_and_value(tmp_path):
    table = ERAS["2019-03"]("2019-03")
    counts = table["passenger_count"].to_pylist()
    counts[700] = 1.5
    table = table.set_column(
        table.schema.get_field_index("passenger_count"),
        "passenger_count",
        pa.array(counts, pa.float64()),
    )
    path = tmp_path / "yellow_tripdata_2019-03.parquet"
    pq.write_table(table, path, row_group_size=256)  # the bad row is in a later batch

    with pytest.raises(TripFileError) as raised:
        read_mapped(path)
    assert str(raised.value) == (
        "yellow_tripdata_2019-03.parquet: column 'passenger_count', "
        "row 701: 1.5 is not a whole number (double → int64)"
    )


def test_a_parquet_file_past_the_ceiling_stops_before_a_row_is_read(tmp_path):
    path = tmp_path / "yellow_tripdata_2025-01.parquet"
    pq.write_table(era_2025("2025-01"), path)
    source = TaxiSourceResource(kind="tlc", landing_dir=str(tmp_path), max_bytes_per_file=10_000)

    _, trips = source.trips(YELLOW, path)
    with pytest.raises(
        TripFileError,
        match=r"yellow_tripdata_2025-01.parquet: decompresses to "
        r"[\d,]+ bytes, more than the source's "
        r"max_bytes_per_file ceiling of 10,000",
    ):
        next(iter(trips))


# --- every era through every sink ------------------------------------------------------------


def postgres_month(postgres, month: str) -> dict:
    count, total, passengers = query(
        postgres,
        f"SELECT count(*), sum(total_amount)::numeric(14,2), sum(passenger_count) "
        f"FROM {POSTGRES_TABLE} WHERE source_month = %s",
        f"{month}-01",
    )[0]
    return {"rows": count, "total_amount": float(total), "passengers": int(passengers)}


def postgres_columns(postgres) -> list[str]:
    return [
        name
        for (name,) in query(
            postgres,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'ny_taxi' AND table_name = 'yellow_cab_data' ORDER BY ordinal_position",
        )
    ]


@pytest.mark.parametrize("month", list(ERAS))
def test_each_era_loads_into_every_sink(tmp_path, feed, postgres, month):
    path = feed.publish(month)
    want = expected(path, month)
    duckdb_warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    resources = tlc_resources(
        tmp_path, feed, postgres, warehouse_io_manager=duckdb_warehouse.io_manager
    )

    monthly = materialize(resources, f"{month}-01")
    assert monthly.success
    assert materialize_days(resources, *month_days(month)).success

    assert postgres_month(postgres, month) == {
        k: want[k] for k in ("rows", "total_amount", "passengers")
    }
    assert set(YELLOW.canonical_columns) <= set(postgres_columns(postgres))
    lake = pq.read_table(tmp_path / "lake" / "nyc_taxi_data" / f"{month}.parquet")
    assert lake.num_rows == want["rows"]
    assert lake.schema.names[: len(YELLOW.canonical_columns)] == list(YELLOW.canonical_columns)
    first, last = month_days(month)
    [(rows, total)] = duckdb_warehouse.rows(
        "SELECT count(*), round(sum(total_amount), 2) FROM ny_taxi.yellow_trips WHERE "
        f"tpep_pickup_datetime >= DATE '{first}' AND tpep_pickup_datetime < DATE '{last}' + 1"
    )
    assert rows == want["rows_in_month"]
    # The mapping is the month's metadata, in the UI.
    [raw] = [m for m in monthly.asset_materializations_for_node("raw_yellow_trips")]
    report = raw.metadata["schema_mapping"].value
    assert {k: v for k, v in report.items() if v} == EXPECTED_REPORTS[month]
    # A Parquet file's footer counts its rows for free: the raw month says it, and the
    # cleaning, which read them, agrees.
    [cleaned] = monthly.asset_materializations_for_node("cleaned_yellow_trips")
    assert raw.metadata["dagster/row_count"].value == cleaned.metadata[ROWS_READ_KEY].value


@pytest.fixture(params=["bigquery", "duckdb"])
def warehouse(request, tmp_path):
    if request.param == "bigquery":
        return BigQueryWarehouse(request.getfixturevalue("bigquery_emulator"))
    return DuckDBWarehouse(tmp_path / "warehouse.duckdb")


def test_a_new_column_reaches_every_sink_and_a_warning_names_it(
    tmp_path, feed, fresh_postgres, warehouse
):
    postgres = fresh_postgres
    resources = tlc_resources(tmp_path, feed, postgres, warehouse_io_manager=warehouse.io_manager)
    # A month without the column first, so every sink's table exists without it.
    for month in ("2026-02", "2026-03"):
        feed.publish(month, (era_2025 if month == "2026-02" else with_unknown_column)(month))
        result = materialize(resources, f"{month}-01")
        assert result.success
        assert materialize_days(resources, *month_days(month)).success

    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "only_known_columns"
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["new_columns"].value == ["green_levy"]
    want = pq.read_table(feed.path("2026-03"))
    kept = pc.fill_null(pc.greater(want["passenger_count"], 0), False)
    levy = round(pc.sum(want.filter(kept)["green_levy"]).as_py(), 4)

    assert "green_levy" in postgres_columns(postgres)
    assert query(
        postgres,
        f"SELECT source_month::text, round(sum(green_levy)::numeric, 4)::float8, "
        f"count(green_levy) FROM {POSTGRES_TABLE} GROUP BY 1 ORDER BY 1",
    ) == [("2026-02-01", None, 0), ("2026-03-01", pytest.approx(levy), want.filter(kept).num_rows)]
    lake = pq.read_table(tmp_path / "lake" / "nyc_taxi_data" / "2026-03.parquet")
    assert round(pc.sum(lake["green_levy"]).as_py(), 4) == pytest.approx(levy)
    [(warehouse_levy, february_levy)] = warehouse.rows(
        "SELECT round(sum(CASE WHEN tpep_pickup_datetime >= '2026-03-01' THEN green_levy END), 2),"
        " count(CASE WHEN tpep_pickup_datetime < '2026-03-01' THEN green_levy END)"
        " FROM ny_taxi.yellow_trips"
    )
    march = want.filter(kept)
    in_march = pc.greater_equal(
        march["tpep_pickup_datetime"], pa.scalar(dt.datetime(2026, 3, 1), pa.timestamp("us"))
    )
    assert warehouse_levy == pytest.approx(
        round(pc.sum(march.filter(in_march)["green_levy"]).as_py(), 2)
    )
    # February's rows came from files without the column: null there, never invented.
    assert february_levy == 0
    # The warehouse over days written before and after the column came, in one run: their
    # files differ by the column, and the days load as one stream all the same.
    rewarehoused = materialize_days(
        resources, "2026-02-01", "2026-03-01", selection="ny_taxi/yellow_trips"
    )
    assert rewarehoused.success
    assert warehouse.rows(
        "SELECT count(green_levy) FROM ny_taxi.yellow_trips WHERE tpep_pickup_datetime < '2026-03-01'"
    ) == [(0,)]


def test_an_incompatible_type_fails_before_any_sink_naming_column_and_types(
    tmp_path, feed, fresh_postgres
):
    postgres = fresh_postgres
    resources = tlc_resources(tmp_path, feed, postgres)
    instance = dg.DagsterInstance.ephemeral()
    feed.publish("2026-03", with_unknown_column("2026-03"))
    assert materialize(resources, "2026-03-01", instance=instance).success
    good = sink_state(postgres)

    def fails_with_string(month: str, table: pa.Table, column: str) -> str:
        feed.publish(
            month,
            table.set_column(
                table.schema.get_field_index(column), column, table[column].cast(pa.string())
            ),
        )
        failed = materialize(resources, f"{month}-01", instance=instance, raise_on_error=False)
        assert not failed.success
        return failure_message(failed)

    # A contract column turned string.
    assert (
        "column 'fare_amount' is string, which cannot become the canonical 'fare_amount' (double)"
    ) in fails_with_string("2025-01", era_2025("2025-01"), "fare_amount")
    # A new column, carried as double so far, arriving as a string.
    assert (
        "column 'green_levy' is string, but the sinks hold it as double: not an additive change"
    ) in fails_with_string("2026-04", with_unknown_column("2026-04"), "green_levy")

    assert sink_state(postgres) == good
    assert sorted(p.name for p in (tmp_path / "lake" / "nyc_taxi_data").iterdir()) == [
        "2026-03.parquet"
    ]


# --- publication: 403s ------------------------------------------------------------------------


def tick(sensor_name: str, instance, source: TaxiSourceResource, cursor=None):
    sensor = REPO.get_sensor_def(sensor_name)
    result = sensor(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"taxi_source": source})
    )
    if isinstance(result, dg.SkipReason):
        return [], cursor, result.skip_message
    return list(result.run_requests), result.cursor, None


def test_a_403_is_not_published_only_while_the_known_object_answers(
    tmp_path, feed, fresh_postgres, instance
):
    resources = tlc_resources(tmp_path, feed, fresh_postgres)
    source = resources["taxi_source"]
    feed.publish("2025-01")
    assert materialize(resources, "2025-01-01", instance=instance).success

    # February is not out: CloudFront answers 403, while the zone lookup answers 200.
    feed.requests.clear()
    requests, cursor, skipped = tick("new_yellow_month_published", instance, source)
    assert requests == [] and "yellow_tripdata_2025-02.parquet is not published yet" in skipped
    assert feed.requests == ["HEAD /trip-data/yellow_tripdata_2025-02.parquet", f"HEAD {PROBE}"]
    failed = materialize(resources, "2025-02-01", instance=instance, raise_on_error=False)
    assert "not published (HTTP 403 while" in failure_message(failed)

    # Throttled: the lookup is refused too, so nothing is concluded about February.
    feed.publish("2025-02", era_2025("2025-02"))
    feed.throttled = True
    requests, cursor, skipped = tick("new_yellow_month_published", instance, source, cursor)
    assert requests == [] and cursor is None
    assert "the source did not answer" in skipped and "throttled" in skipped
    failed = materialize(resources, "2025-02-01", instance=instance, raise_on_error=False)
    message = failure_message(failed)
    assert "failed after 4 attempt(s)" in message and "not published" not in message

    feed.throttled = False
    requests, cursor, _ = tick("new_yellow_month_published", instance, source, cursor)
    assert [(r.partition_key, r.run_key) for r in requests] == [("2025-02-01", "published-2025-02")]


# --- re-uploads -------------------------------------------------------------------------------


def test_a_reupload_rematerializes_the_month_and_its_days(tmp_path, feed, fresh_postgres, instance):
    postgres = fresh_postgres
    duckdb_warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    resources = tlc_resources(
        tmp_path, feed, postgres, warehouse_io_manager=duckdb_warehouse.io_manager
    )
    source = resources["taxi_source"]
    first = dg.evaluate_automation_conditions(defs, instance)
    feed.publish("2025-01")
    assert materialize(resources, "2025-01-01", instance=instance).success
    assert materialize_days(resources, *month_days("2025-01"), instance=instance).success
    settled = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    taken = instance.get_latest_materialization_event(dg.AssetKey("raw_yellow_trips"))
    old_version = taken.asset_materialization.metadata["source_version"].value
    assert old_version.startswith('etag "')

    requests, _, skipped = tick("yellow_source_file_changed", instance, source)
    assert requests == [] and "no file taken from the source has changed" in skipped

    # The TLC re-issues January without its first 100 rows.
    reissued = era_2025("2025-01").slice(100)
    feed.reupload("2025-01", reissued)
    requests, _, _ = tick("yellow_source_file_changed", instance, source)
    [request] = requests
    assert request.partition_key == "2025-01-01" and request.run_key.startswith("reupload-2025-01-")

    feed.requests.clear()
    rerun = materialize(resources, request.partition_key, instance=instance)
    assert rerun.success
    assert feed.requests.count("GET /trip-data/yellow_tripdata_2025-01.parquet") == 1
    [raw] = rerun.asset_materializations_for_node("raw_yellow_trips")
    assert raw.metadata["source_version"].value not in (old_version, None)
    assert (
        postgres_month(postgres, "2025-01")["rows"]
        == expected(feed.path("2025-01"), "2025-01")["rows"]
    )

    # The existing automation takes the days from there (the 31st waits for February).
    after = dg.evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
    days = [str(dt.date(2025, 1, d)) for d in range(1, 31)]
    assert requested(after) == {
        "yellow_trips_by_day": days,
        "yellow_trips_daily_export": days,
        "ny_taxi/yellow_trips": days,
    }
    assert materialize_days(resources, days[0], days[-1], instance=instance).success
    [(rows,)] = duckdb_warehouse.rows(
        "SELECT count(*) FROM ny_taxi.yellow_trips WHERE tpep_pickup_datetime < '2025-01-31'"
    )
    kept = reissued.filter(pc.fill_null(pc.greater(reissued["passenger_count"], 0), False))
    in_days = pc.and_(
        pc.greater_equal(
            kept["tpep_pickup_datetime"], pa.scalar(dt.datetime(2025, 1, 1), pa.timestamp("us"))
        ),
        pc.less(
            kept["tpep_pickup_datetime"], pa.scalar(dt.datetime(2025, 1, 31), pa.timestamp("us"))
        ),
    )
    assert rows == pc.sum(in_days.cast(pa.int64())).as_py()


def test_a_throttled_feed_requests_nothing_and_is_asked_once(
    tmp_path, feed, fresh_postgres, instance
):
    resources = tlc_resources(tmp_path, feed, fresh_postgres)
    for month in ("2025-01", "2025-02"):
        feed.publish(month, era_2025(month))
        assert materialize(resources, f"{month}-01", instance=instance).success
    feed.reupload("2025-02", era_2025("2025-02").slice(3))
    feed.throttled = True
    feed.requests.clear()

    requests, _, skipped = tick("yellow_source_file_changed", instance, resources["taxi_source"])

    assert (
        requests == []
        and "not checked, asked again next tick: ['2025-01 and the months after it" in skipped
    )
    # The first refusal ends the tick: the other months are not asked to time out in turn.
    assert feed.requests == ["HEAD /trip-data/yellow_tripdata_2025-01.parquet", f"HEAD {PROBE}"]
    feed.throttled = False
    requests, _, _ = tick("yellow_source_file_changed", instance, resources["taxi_source"])
    assert [r.partition_key for r in requests] == ["2025-02-01"]


def test_without_an_etag_the_version_is_last_modified_and_size(feed):
    feed.send_etag = False
    feed.publish("2025-01")
    before = remote_file(feed.url, "yellow_tripdata_2025-01.parquet", timeout=5)
    assert before.version.startswith("modified ") and before.version.endswith(" bytes")
    feed.reupload("2025-01", era_2025("2025-01").slice(1))
    after = remote_file(feed.url, "yellow_tripdata_2025-01.parquet", timeout=5)
    assert after.version != before.version


def test_a_landed_copy_is_reused_only_while_its_version_is_current(tmp_path, feed, fresh_postgres):
    resources = tlc_resources(tmp_path, feed, fresh_postgres)
    feed.publish("2025-01")
    for _ in range(2):
        assert materialize(resources, "2025-01-01").success
    assert feed.requests.count("GET /trip-data/yellow_tripdata_2025-01.parquet") == 1
    feed.reupload("2025-01", era_2025("2025-01").slice(5))
    assert materialize(resources, "2025-01-01").success
    assert feed.requests.count("GET /trip-data/yellow_tripdata_2025-01.parquet") == 2


# --- the schedule and the months a source has ------------------------------------------------


def test_the_monthly_schedule_asks_for_the_newest_month_the_lag_allows(tmp_path, feed):
    source = TaxiSourceResource(kind="tlc", base_url=feed.url, landing_dir=str(tmp_path))
    schedule = REPO.get_schedule_def("monthly_yellow_trips_schedule")

    def tick_at(when: dt.datetime):
        # A schedule's context needs a persistent instance. Not entered as a context manager:
        # that would leave it as the process's definitions state storage once disposed.
        (tmp_path / "dagster").mkdir(exist_ok=True)
        instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
        try:
            context = dg.build_schedule_context(
                instance=instance,
                resources={"taxi_source": source},
                repository_def=REPO,
                scheduled_execution_time=when.replace(tzinfo=dt.timezone.utc),
            )
            return schedule.evaluate_tick(context)
        finally:
            instance.dispose()

    # On 2026-12-02 September is the newest month the TLC's two-month lag allows.
    not_out = tick_at(dt.datetime(2026, 12, 2, 6))
    assert not_out.run_requests == [] and "2026-09 is not out yet" in not_out.skip_message
    feed.publish("2026-09", era_2025("2026-09"))
    [request] = tick_at(dt.datetime(2026, 12, 2, 6)).run_requests
    assert request.partition_key == "2026-09-01"


def test_a_month_the_source_does_not_carry_fails_at_once(monkeypatch):
    monkeypatch.setenv("TAXI_SOURCE", "datatalks")
    with pytest.raises(
        SystemExit,
        match=r"2025-01 is not a month of the DataTalksClub CSV.gz "
        r"mirror \(TAXI_SOURCE=datatalks\): it holds 2019-01 to "
        r"2021-07",
    ):
        cli.run("2025-01", [YELLOW])
    monkeypatch.setenv("TAXI_SOURCE", "tlc")
    this_month = f"{dt.date.today():%Y-%m}"
    with pytest.raises(SystemExit, match=f"yellow_tripdata_{this_month}.parquet is not published"):
        cli.run(this_month, [YELLOW])
