"""Green taxi beside yellow: every sink from both sources, its cleaning, checks and names.

The green files are real yellow trips renamed and reordered into the green layout
(green_files.py says exactly what is real and what is derived); every expected count and sum
is computed here from the generated file with pyarrow, never through the package.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from taxi_assets import month_run
from taxi_assets.datasets import DATASETS, GREEN
from taxi_assets.definitions import defs
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.storage.local_postgres import free_port
from taxi_assets.defs.resources import LakeResource
from taxi_assets.tlc.schema import read_trips
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.green_files import (
    GREEN_COLUMNS,
    GREEN_ERAS,
    era_2019_09,
    expected_green,
    green_csv_gz,
    read_green_csv,
)
from taxi_assets_tests.pipeline import (
    MONTHLY,
    materialize,
    materialize_days,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_cli_live import project_env
from taxi_assets_tests.test_cli_live import cli as cli_process
from taxi_assets_tests.test_faults import failure_message

from taxi_assets_tests.test_automation import requested
from taxi_assets_tests.test_tlc_feed import tick
from taxi_assets_tests.test_warehouse_assets import DuckDBWarehouse
from taxi_assets_tests.tlc_feed import era_2021

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

GREEN_MONTHLY = "raw_green_trips cleaned_green_trips ny_taxi/green_taxi green_trips_parquet"
GREEN_DAILY = "green_trips_by_day green_trips_daily_export ny_taxi/green_trips"
GREEN_INGEST = "raw_green_trips cleaned_green_trips"
YELLOW_DAILY = "yellow_trips_by_day yellow_trips_daily_export ny_taxi/yellow_trips"

SNAKE_CASE = {
    "VendorID": "vendor_id",
    "RatecodeID": "ratecode_id",
    "PULocationID": "pu_location_id",
    "DOLocationID": "do_location_id",
}
GREEN_SINK_COLUMNS = [SNAKE_CASE.get(name, name) for name in GREEN_COLUMNS]


@pytest.fixture
def warehouse(tmp_path):
    return DuckDBWarehouse(tmp_path / "warehouse.duckdb")


def resources_for(tmp_path, url, postgres, warehouse, kind="datatalks") -> dict:
    return pipeline_resources(
        tmp_path, url, postgres, warehouse_io_manager=warehouse.io_manager, source_kind=kind
    )


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("cleaned_green_trips")
    }


def materialization(result, node: str):
    [event] = result.asset_materializations_for_node(node)
    return event


def table_exists(postgres, table: str) -> bool:
    return query(postgres, "SELECT to_regclass(%s)", table)[0][0] is not None


def postgres_columns(postgres, table: str) -> dict[str, str]:
    return dict(
        query(
            postgres,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'ny_taxi' AND table_name = %s ORDER BY ordinal_position",
            table,
        )
    )


def postgres_month(postgres, table: str, month: str) -> dict:
    rows, total, passengers = query(
        postgres,
        f"SELECT count(*), sum(total_amount)::float8, sum(passenger_count) FROM ny_taxi.{table} "
        "WHERE source_month = %s",
        f"{month}-01",
    )[0]
    return {"rows": rows, "total_amount": total, "passengers": int(passengers)}


def day_range(want: dict) -> tuple[str, str]:
    """The first and last day of the month that have kept trips."""
    days = sorted(want["rows_per_day"])
    return days[0], days[-1]


def lake_rows_per_day(lake: LakeResource) -> tuple[dict, dict]:
    """Rows per day in the day-partitioned dataset and in the daily exports (days with rows)."""
    filesystem = lake.filesystem()
    by_day = pq.read_table("green_taxi_data_by_day", filesystem=filesystem)
    counts = pc.value_counts(by_day["lpep_pickup_date"].cast(pa.string())).to_pylist()
    exports = {}
    for info in filesystem.get_file_info(pafs.FileSelector("", recursive=True)):
        if re.fullmatch(r"\d{4}/\d\d/\d\d/green_taxi_data\.parquet", info.path):
            rows = pq.read_metadata(info.path, filesystem=filesystem).num_rows
            if rows:
                exports[info.path[:10].replace("/", "-")] = rows
    return {c["values"]: c["counts"] for c in counts}, exports


def assert_green_month_in_every_sink(tmp_path, postgres, warehouse, resources, table, month):
    """One month of green, monthly and then daily, as the file says it should be everywhere."""
    want = expected_green(table, month)
    monthly = materialize(resources, f"{month}-01", selection=GREEN_MONTHLY)
    assert monthly.success
    first, last = day_range(want)
    assert materialize_days(resources, first, last, selection=GREEN_DAILY).success

    cleaned = materialization(monthly, "cleaned_green_trips").metadata
    assert cleaned["dropped_zero_or_missing_passengers"].value == want["dropped_passengers"]
    assert cleaned["dropped_zero_or_missing_distance"].value == want["dropped_distance"]
    assert cleaned["dagster/row_count"].value == want["rows"]
    checks = check_results(monthly)
    for name in ("no_zero_passenger_trips", "no_zero_distance_trips", "known_vendor_ids"):
        assert checks[name].passed, name

    # Postgres: the month's partition, snake_case names, the pickup's date beside it.
    got = postgres_month(postgres, "green_taxi", month)
    assert got == {
        "rows": want["rows"],
        "total_amount": pytest.approx(want["total_amount"], abs=0.005),
        "passengers": want["passengers"],
    }
    columns = postgres_columns(postgres, "green_taxi")
    assert set(GREEN_SINK_COLUMNS) <= set(columns)
    assert {"vendorid", "ratecodeid", "pulocationid", "dolocationid"}.isdisjoint(columns)
    # The contract's types whatever the era typed them as (double counts, int32 ids, a
    # Null-typed ehail_fee).
    assert {name: columns[name] for name in ("vendor_id", "passenger_count", "trip_type")} == {
        "vendor_id": "bigint",
        "passenger_count": "bigint",
        "trip_type": "bigint",
    }
    assert columns["ehail_fee"] == "double precision"
    assert columns["lpep_pickup_date"] == "date"
    assert query(
        postgres,
        "SELECT count(*) FROM ny_taxi.green_taxi "
        "WHERE lpep_pickup_date IS DISTINCT FROM lpep_pickup_datetime::date",
    ) == [(0,)]
    # The 2025 fee where the file has it; null, never invented, where it has not.
    [(fee, with_fee)] = query(
        postgres,
        "SELECT sum(cbd_congestion_fee)::float8, count(cbd_congestion_fee) FROM ny_taxi.green_taxi",
    )
    if want["cbd_congestion_fee"] is None:
        assert with_fee == 0
    else:
        assert (fee, with_fee) == (pytest.approx(want["cbd_congestion_fee"]), want["rows"])

    # The lake: the month's object, the day-partitioned dataset, the daily exports.
    lake = tmp_path / "lake"
    month_object = pq.read_table(lake / "green_taxi_data" / f"{month}.parquet")
    assert month_object.num_rows == want["rows"]
    assert month_object.schema.names[: len(GREEN_SINK_COLUMNS)] == GREEN_SINK_COLUMNS
    assert month_object.schema.field("ehail_fee").type == pa.float64()
    assert round(pc.sum(month_object["total_amount"]).as_py(), 2) == pytest.approx(
        want["total_amount"], abs=0.005
    )
    by_day, exports = lake_rows_per_day(LakeResource(root=str(lake)))
    assert by_day == want["rows_per_day"]
    assert exports == want["rows_per_day"]

    # The warehouse, day-partitioned on the pickup.
    per_day = dict(
        warehouse.rows(
            "SELECT strftime(CAST(lpep_pickup_datetime AS DATE), '%Y-%m-%d'), count(*) "
            "FROM ny_taxi.green_trips GROUP BY 1"
        )
    )
    assert per_day == want["rows_per_day"]
    return monthly


# --- every sink, from both sources ----------------------------------------------------------


def test_a_green_csv_month_reaches_every_sink(tmp_path, http_source, fresh_postgres, warehouse):
    data = green_csv_gz("2020-10")
    http_source.publish_bytes("2020-10", data, dataset="green")
    resources = resources_for(tmp_path, http_source.url, fresh_postgres, warehouse)

    assert_green_month_in_every_sink(
        tmp_path, fresh_postgres, warehouse, resources, read_green_csv(data), "2020-10"
    )
    assert "GET /green_tripdata_2020-10.csv.gz" in http_source.requests


def _mapping(result) -> dict:
    report = materialization(result, "raw_green_trips").metadata["schema_mapping"].value
    return {key: value for key, value in report.items() if value}


# What each era's file needs to reach the contract, as the raw asset reports it.
_DOUBLE_CODES = dict.fromkeys(
    ("RatecodeID", "passenger_count", "payment_type", "trip_type"), "double → int64"
)
_NARROW_IDS = {
    **dict.fromkeys(("VendorID", "PULocationID", "DOLocationID"), "int32 → int64"),
    "store_and_fwd_flag": "large_string → string",
}
ERA_REPORTS = {
    "2019-03": {"absent": ["cbd_congestion_fee"]},
    "2020-10": {
        "cast": _DOUBLE_CODES,
        "null_typed": ["ehail_fee"],
        "absent": ["cbd_congestion_fee"],
    },
    "2023-05": {"cast": {**_NARROW_IDS, **_DOUBLE_CODES}, "absent": ["cbd_congestion_fee"]},
    "2025-02": {"cast": {**_NARROW_IDS, **_DOUBLE_CODES}},
}


@pytest.mark.parametrize("month", list(GREEN_ERAS))
def test_each_green_parquet_era_reaches_every_sink(
    tmp_path, feed, fresh_postgres, warehouse, month
):
    path = feed.publish(month, GREEN_ERAS[month](month), dataset="green")
    resources = resources_for(tmp_path, feed.url, fresh_postgres, warehouse, kind="tlc")

    monthly = assert_green_month_in_every_sink(
        tmp_path, fresh_postgres, warehouse, resources, pq.read_table(path), month
    )

    assert _mapping(monthly) == ERA_REPORTS[month]


def test_a_green_month_reaches_the_gcs_lake_and_bigquery(
    tmp_path, http_source, fresh_postgres, gcs_emulator, bigquery_emulator, request
):
    """The gcp profile's sinks, on their emulators: the same names, from the same definition."""
    data = green_csv_gz("2021-01")
    http_source.publish_bytes("2021-01", data, dataset="green")
    want = expected_green(read_green_csv(data), "2021-01")
    prefix = request.node.name
    lake = LakeResource(root=f"gs://{gcs_emulator.bucket}/{prefix}", endpoint=gcs_emulator.url)
    bigquery = bigquery_emulator.client()
    bigquery.query("DROP TABLE IF EXISTS ny_taxi.green_trips").result()
    resources = pipeline_resources(
        tmp_path,
        http_source.url,
        fresh_postgres,
        lake=lake,
        warehouse_io_manager=BigQueryWarehouseIOManager(
            project=bigquery_emulator.project,
            dataset="ny_taxi",
            api_endpoint=bigquery_emulator.endpoint,
        ),
    )

    assert materialize(resources, "2021-01-01", selection=GREEN_MONTHLY).success
    assert materialize_days(resources, *day_range(want), selection=GREEN_DAILY).success

    filesystem = lake.filesystem()
    month = pq.read_table("green_taxi_data/2021-01.parquet", filesystem=filesystem)
    assert month.num_rows == want["rows"]
    assert month.schema.names[: len(GREEN_SINK_COLUMNS)] == GREEN_SINK_COLUMNS
    assert lake_rows_per_day(lake) == (want["rows_per_day"], want["rows_per_day"])
    per_day = {
        str(row["day"]): row["trips"]
        for row in bigquery.query(
            "SELECT CAST(lpep_pickup_datetime AS DATE) AS day, COUNT(*) AS trips "
            "FROM ny_taxi.green_trips GROUP BY day"
        ).result()
    }
    assert per_day == want["rows_per_day"]
    columns = {
        row["column_name"]
        for row in bigquery.query(
            "SELECT column_name FROM ny_taxi.INFORMATION_SCHEMA.COLUMNS "
            "WHERE table_name = 'green_trips'"
        ).result()
    }
    assert {"vendor_id", "pu_location_id", "do_location_id", "ratecode_id"} <= columns


# --- cleaning and the checks ----------------------------------------------------------------


def test_the_distance_rule_drops_zero_negative_and_missing_distances(
    tmp_path, feed, fresh_postgres, warehouse
):
    # Derived from the real rows: a few kept trips get a negative or no distance, which the
    # real sample (zero distances only) does not have.
    table = era_2019_09("2020-10")
    distances = table["trip_distance"].to_pylist()
    kept = [
        i
        for i, (d, p) in enumerate(zip(distances, table["passenger_count"].to_pylist()))
        if d and p
    ]
    for i in kept[:3]:
        distances[i] = -abs(distances[i])
    for i in kept[3:5]:
        distances[i] = None
    table = table.set_column(
        table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(distances)
    )
    feed.publish("2020-10", table, dataset="green")
    resources = resources_for(tmp_path, feed.url, fresh_postgres, warehouse, kind="tlc")
    want = expected_green(table, "2020-10")
    assert want["dropped_distance"] == want["zero_distance_rows"] + 5  # the rule, counted here

    result = materialize(resources, "2020-10-01", selection=GREEN_MONTHLY)

    assert result.success
    cleaned = materialization(result, "cleaned_green_trips").metadata
    assert cleaned["dropped_zero_or_missing_distance"].value == want["dropped_distance"]
    assert cleaned["dagster/row_count"].value == want["rows"]
    assert query(
        fresh_postgres,
        "SELECT count(*), count(*) FILTER (WHERE trip_distance IS NULL OR trip_distance <= 0) "
        "FROM ny_taxi.green_taxi",
    ) == [(want["rows"], 0)]


def with_vendors(table: pa.Table, vendors: dict[int, int | None]) -> pa.Table:
    """The table with the VendorID of some kept rows replaced (derived, for the vendor check)."""
    ids = table["VendorID"].to_pylist()
    kept = [
        i
        for i, (p, d) in enumerate(
            zip(table["passenger_count"].to_pylist(), table["trip_distance"].to_pylist())
        )
        if p and d
    ]
    for i, vendor in zip(kept, [v for v, n in vendors.items() for _ in range(n)]):
        ids[i] = vendor
    return table.set_column(0, "VendorID", pa.array(ids, table.schema.field("VendorID").type))


def test_missing_vendors_are_counted_apart_and_pass(tmp_path, feed, fresh_postgres, warehouse):
    table = with_vendors(GREEN_ERAS["2023-05"]("2023-05"), {None: 3})
    feed.publish("2023-05", table, dataset="green")
    resources = resources_for(tmp_path, feed.url, fresh_postgres, warehouse, kind="tlc")

    result = materialize(resources, "2023-05-01", selection=GREEN_INGEST)

    assert result.success
    vendors = check_results(result)["known_vendor_ids"]
    assert vendors.passed
    assert vendors.metadata["missing_vendor_rows"].value == 3


def test_an_unknown_vendor_blocks_every_green_sink(tmp_path, feed, fresh_postgres, warehouse):
    postgres = fresh_postgres
    resources = resources_for(tmp_path, feed.url, postgres, warehouse, kind="tlc")
    good_table = GREEN_ERAS["2020-10"]("2020-10")
    feed.publish("2020-10", good_table, dataset="green")
    assert materialize(resources, "2020-10-01", selection=GREEN_MONTHLY).success
    good = postgres_month(postgres, "green_taxi", "2020-10")
    lake_month = tmp_path / "lake" / "green_taxi_data" / "2020-10.parquet"
    good_lake = lake_month.read_bytes()

    # Re-issued with vendor 4, a yellow vendor no green file has: the month must not load.
    feed.reupload("2020-10", with_vendors(good_table, {4: 2}), dataset="green")
    result = materialize(resources, "2020-10-01", selection=GREEN_MONTHLY, raise_on_error=False)

    assert not result.success
    vendors = check_results(result)["known_vendor_ids"]
    assert not vendors.passed and vendors.severity == dg.AssetCheckSeverity.ERROR
    assert vendors.metadata["unknown_ids"].value == [4]
    assert not result.asset_materializations_for_node("ny_taxi__green_taxi")
    assert not result.asset_materializations_for_node("green_trips_parquet")
    assert postgres_month(postgres, "green_taxi", "2020-10") == good
    assert lake_month.read_bytes() == good_lake


# --- the real green files we have --------------------------------------------------------------


def real_green_head(cut_line: bool) -> bytes:
    """The head of the real 2019-01 green CSV: 8 whole rows and, unless dropped, its cut 9th."""
    text = gzip.decompress(sample("head1k__green_tripdata_2019-01.csv.gz").read_bytes())
    return gzip.compress(text if cut_line else text[: text.rindex(b"\r\n") + 2])


def test_real_green_rows_load_with_every_value_in_its_column(
    tmp_path, http_source, fresh_postgres, warehouse
):
    data = real_green_head(cut_line=False)
    http_source.publish_bytes("2019-01", data, dataset="green")
    resources = resources_for(tmp_path, http_source.url, fresh_postgres, warehouse)
    table = read_green_csv(data)
    want = expected_green(table, "2019-01")

    result = materialize(resources, "2019-01-01", selection=GREEN_MONTHLY)

    assert result.success
    # The real first row has 5 passengers but a distance of .00: only the distance rule drops it.
    assert (want["dropped_passengers"], want["dropped_distance"]) == (0, 1)
    cleaned = materialization(result, "cleaned_green_trips").metadata
    assert cleaned["dropped_zero_or_missing_distance"].value == 1
    kept = table.filter(pc.greater(table["trip_distance"], 0)).sort_by("lpep_pickup_datetime")
    columns = ["VendorID", "PULocationID", "DOLocationID", "trip_type", "total_amount"]
    assert query(
        fresh_postgres,
        "SELECT vendor_id, pu_location_id, do_location_id, trip_type, total_amount "
        "FROM ny_taxi.green_taxi ORDER BY lpep_pickup_datetime",
    ) == list(zip(*(kept[c].to_pylist() for c in columns)))


@pytest.mark.parametrize(
    "data, expected",
    [
        (lambda: real_green_head(cut_line=True), ["line 10", "expected 20 columns, got 2"]),
        (
            lambda: sample("head1k__green_tripdata_2020-06.csv.gz").read_bytes(),
            ["'vendorid'", "'lpep_pickup_datetime'"],
        ),
    ],
    ids=["cut-last-line", "renamed-headers-export"],
)
def test_a_bad_real_green_file_fails_naming_file_and_fault(
    tmp_path, http_source, fresh_postgres, warehouse, data, expected
):
    http_source.publish_bytes("2019-01", data(), dataset="green")
    resources = resources_for(tmp_path, http_source.url, fresh_postgres, warehouse)

    result = materialize(resources, "2019-01-01", selection=GREEN_MONTHLY, raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "green_tripdata_2019-01.csv.gz" in message
    for fragment in expected:
        assert fragment in message
    assert not table_exists(fresh_postgres, "ny_taxi.green_taxi")


def test_a_file_without_the_columns_cleaning_needs_fails_instead_of_loading_nothing(
    tmp_path, feed, fresh_postgres, warehouse
):
    # The real 62,495 green trips of January 2022, re-written with 5 columns only: no
    # passenger_count, no fares.
    feed.publish("2022-01", pq.read_table(sample("green_tripdata_2022-01.parquet")), "green")
    resources = resources_for(tmp_path, feed.url, fresh_postgres, warehouse, kind="tlc")

    result = materialize(resources, "2022-01-01", selection=GREEN_MONTHLY, raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert "green_tripdata_2022-01.parquet" in message and "passenger_count" in message
    assert not table_exists(fresh_postgres, "ny_taxi.green_taxi")


# --- a file of the other dataset ------------------------------------------------------------


FOREIGN = [
    # (source, dataset asked for, what is served under its name, foreign columns, foreign title)
    ("datatalks", "yellow", "green", ["lpep_pickup_datetime", "trip_type"], "green"),
    ("datatalks", "green", "yellow", ["tpep_pickup_datetime"], "yellow"),
    ("tlc", "yellow", "green", ["lpep_pickup_datetime", "ehail_fee"], "green"),
    ("tlc", "green", "yellow", ["tpep_pickup_datetime", "airport_fee"], "yellow"),
]


@pytest.mark.parametrize(
    "kind, asked, served, columns, title",
    FOREIGN,
    ids=[f"{f[2]}-as-{f[1]}-{f[0]}" for f in FOREIGN],
)
def test_a_file_of_the_other_dataset_fails_naming_file_and_columns(
    tmp_path, http_source, feed, fresh_postgres, warehouse, kind, asked, served, columns, title
):
    postgres = fresh_postgres
    month = "2021-01"
    if kind == "datatalks":
        url = http_source.url
        data = (
            green_csv_gz(month)
            if served == "green"
            else sample("yellow_tripdata_2021-01.csv.gz").read_bytes()
        )
        http_source.publish_bytes(month, data, dataset=asked)
        file_name = f"{asked}_tripdata_{month}.csv.gz"
    else:
        url = feed.url
        table = era_2019_09(month) if served == "green" else era_2021(month)
        file_name = feed.publish(month, table, dataset=asked).name
    resources = resources_for(tmp_path, url, postgres, warehouse, kind=kind)
    dataset = DATASETS[asked]

    result = materialize(
        resources,
        f"{month}-01",
        selection=GREEN_MONTHLY if asked == "green" else MONTHLY,
        raise_on_error=False,
    )

    assert not result.success
    message = failure_message(result)
    assert file_name in message
    for column in columns:
        assert column in message
    # Named as the other dataset's, not only as columns the contract lacks.
    assert title in message.replace(file_name, "")
    assert not table_exists(postgres, dataset.postgres_table)
    assert not (tmp_path / "lake" / dataset.lake_name).exists()


# --- yellow and green side by side ----------------------------------------------------------


def test_yellow_and_green_share_the_sinks_without_touching_each_other(
    tmp_path, http_source, fresh_postgres, warehouse
):
    postgres = fresh_postgres
    month = "2021-01"
    green_data = green_csv_gz(month)
    http_source.publish(month, "yellow_tripdata_2021-01.csv.gz")
    http_source.publish_bytes(month, green_data, dataset="green")
    resources = resources_for(tmp_path, http_source.url, postgres, warehouse)
    green_want = expected_green(read_green_csv(green_data), month)
    yellow_rows = _yellow_kept_rows()

    # Both datasets' month in one run, as `--dataset all` does, then their days.
    assert materialize(resources, f"{month}-01", selection=f"{MONTHLY} {GREEN_MONTHLY}").success
    assert materialize_days(
        resources, "2021-01-01", "2021-01-02", selection=f"{YELLOW_DAILY} {GREEN_DAILY}"
    ).success

    def lake_file(path):
        # A monthly object's footer names the run that wrote it: its rows are what must not move.
        if re.fullmatch(r"\d{4}-\d{2}\.parquet", path.name):
            return pq.read_table(path).to_pylist()
        return path.read_bytes()

    def state():
        return {
            "postgres": query(
                postgres,
                "SELECT 'yellow', count(*), sum(total_amount)::float8 FROM ny_taxi.yellow_cab_data "
                "UNION ALL SELECT 'green', count(*), sum(total_amount)::float8 "
                "FROM ny_taxi.green_taxi ORDER BY 1",
            ),
            "lake": sorted(
                (str(p.relative_to(tmp_path / "lake")), lake_file(p))
                for p in (tmp_path / "lake").rglob("*.parquet")
            ),
            "warehouse": warehouse.rows(
                "SELECT 'yellow', count(*) FROM ny_taxi.yellow_trips "
                "UNION ALL SELECT 'green', count(*) FROM ny_taxi.green_trips ORDER BY 1"
            ),
        }

    both = state()
    [(_, green_count, green_total), (_, yellow_count, _)] = both["postgres"]
    assert (green_count, yellow_count) == (green_want["rows"], yellow_rows["rows"])
    assert green_total == pytest.approx(green_want["total_amount"], abs=0.005)
    names = {name for name, _ in both["lake"]}
    assert {
        "nyc_taxi_data/2021-01.parquet",
        "green_taxi_data/2021-01.parquet",
        "2021/01/01/nyc_taxi_data.parquet",
        "2021/01/01/green_taxi_data.parquet",
    } <= names
    january_green = sum(n for d, n in green_want["rows_per_day"].items() if d <= "2021-01-02")
    assert both["warehouse"] == [
        ("green", january_green),
        ("yellow", yellow_rows["rows_in_days"]),
    ]

    # Re-running one dataset leaves the other's rows and objects exactly as they were.
    assert materialize(resources, f"{month}-01", selection=GREEN_MONTHLY).success
    assert materialize_days(resources, "2021-01-01", "2021-01-02", selection=GREEN_DAILY).success
    assert materialize(resources, f"{month}-01", selection=MONTHLY).success
    assert state() == both


def _yellow_kept_rows() -> dict:
    """The real yellow sample's trips with passengers, all and those picked up on 1-2 January."""
    table = pa_csv.read_csv(sample("yellow_tripdata_2021-01.csv.gz"))
    kept = table.filter(pc.fill_null(pc.greater(table["passenger_count"], 0), False))
    days = pc.strftime(kept["tpep_pickup_datetime"], format="%Y-%m-%d")
    in_days = pc.is_in(days, value_set=pa.array(["2021-01-01", "2021-01-02"]))
    return {"rows": kept.num_rows, "rows_in_days": pc.sum(in_days.cast(pa.int64())).as_py()}


# --- where the source keeps each dataset -----------------------------------------------------


def test_a_source_may_keep_each_dataset_in_its_own_folder(tmp_path, fresh_postgres, warehouse):
    folder = tmp_path / "mirror" / "green"
    folder.mkdir(parents=True)
    data = green_csv_gz("2021-07")
    (folder / "green_tripdata_2021-07.csv.gz").write_bytes(data)
    resources = resources_for(
        tmp_path, str(tmp_path / "mirror" / "{dataset}"), fresh_postgres, warehouse
    )

    result = materialize(resources, "2021-07-01", selection=GREEN_INGEST)

    assert result.success
    cleaned = materialization(result, "cleaned_green_trips").metadata
    assert (
        cleaned["dagster/row_count"].value
        == expected_green(read_green_csv(data), "2021-07")["rows"]
    )


# --- the definitions: groups, jobs, schedules, sensors --------------------------------------


REPO = defs.get_repository_def()


@pytest.mark.parametrize("dataset", ["yellow", "green"])
def test_each_dataset_has_its_own_groups_jobs_and_automation(dataset):
    monthly, daily = {
        "yellow": (MONTHLY, YELLOW_DAILY),
        "green": (GREEN_MONTHLY, GREEN_DAILY),
    }[dataset]
    keys = [dg.AssetKey.from_user_string(k) for k in f"{monthly} {daily}".split()]
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in keys}
    names = f"{monthly} {daily}".split()
    stage = ["ingest", "ingest", "postgres", "lake", "lake", "lake", "warehouse"]
    assert groups == {name: f"{dataset}_{s}" for name, s in zip(names, stage)}

    assert defs.resolve_job_def(f"monthly_{dataset}_trips").asset_layer.selected_asset_keys == set(
        keys[:4]
    )
    assert defs.resolve_job_def(f"daily_{dataset}_trips").asset_layer.selected_asset_keys == set(
        keys[4:]
    )
    for name in (f"monthly_{dataset}_trips_schedule", f"daily_{dataset}_trips_schedule"):
        assert REPO.get_schedule_def(name).default_status == dg.DefaultScheduleStatus.STOPPED
    for name in (f"new_{dataset}_month_published", f"{dataset}_source_file_changed"):
        assert REPO.get_sensor_def(name).default_status == dg.DefaultSensorStatus.STOPPED


def test_greens_daily_schedule_runs_at_five_utc():
    schedule = REPO.get_schedule_def("daily_green_trips_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 5 * * *", "UTC")
    assert schedule.job_name == "daily_green_trips"


def test_greens_contract_is_the_header_of_the_real_green_files():
    # The head of the real 2019-01 green CSV (its last line is cut, the header is whole).
    with gzip.open(sample("head1k__green_tripdata_2019-01.csv.gz"), "rt") as real:
        header = real.readline().strip().split(",")
    assert list(GREEN.csv_columns) == header == GREEN_COLUMNS
    assert (GREEN.pickup, GREEN.dropoff) == ("lpep_pickup_datetime", "lpep_dropoff_datetime")


def test_greens_blocking_checks_are_its_rules_and_vendors():
    specs = {
        spec.name: spec.blocking
        for checks in defs.asset_checks
        for spec in checks.check_specs
        if spec.asset_key == dg.AssetKey("cleaned_green_trips")
    }
    assert specs == {
        "no_zero_passenger_trips": True,
        "no_zero_distance_trips": True,
        "known_vendor_ids": True,
        "no_shrink": True,
        "dropoff_not_before_pickup": False,
        "pickups_near_file_month": False,
        "only_known_columns": False,
    }


# --- automation and the months each source carries, per dataset ------------------------------


def test_the_green_publish_sensor_follows_greens_months_only(tmp_path, feed, fresh_postgres):
    resources = resources_for(
        tmp_path, feed.url, fresh_postgres, DuckDBWarehouse(tmp_path / "w.duckdb"), kind="tlc"
    )
    source = resources["taxi_source"]
    instance = dg.DagsterInstance.ephemeral()
    feed.publish("2025-02", GREEN_ERAS["2025-02"]("2025-02"), dataset="green")
    assert materialize(resources, "2025-02-01", selection=GREEN_INGEST, instance=instance).success
    # Yellow's March is out, green's not yet: the green sensor asks for green's file only.
    feed.publish("2025-03", era_2021("2025-03"))  # yellow_tripdata_2025-03.parquet
    feed.requests.clear()

    requests, cursor, skipped = tick("new_green_month_published", instance, source)
    assert requests == [] and "green_tripdata_2025-03.parquet is not published yet" in skipped
    assert feed.requests[0] == "HEAD /trip-data/green_tripdata_2025-03.parquet"
    # Yellow has taken no month: its sensor requests nothing for green's progress.
    assert tick("new_yellow_month_published", instance, source)[0] == []

    feed.publish("2025-03", era_2019_09("2025-03"), dataset="green")
    [request] = tick("new_green_month_published", instance, source, cursor)[0]
    assert request.partition_key == "2025-03-01"
    assert REPO.get_sensor_def("new_green_month_published").job_name == "monthly_green_trips"


def test_a_green_month_starts_greens_days_and_a_reupload_greens_month_only(
    tmp_path, feed, fresh_postgres
):
    resources = resources_for(
        tmp_path, feed.url, fresh_postgres, DuckDBWarehouse(tmp_path / "w.duckdb"), kind="tlc"
    )
    source = resources["taxi_source"]
    with dg.DagsterInstance.ephemeral() as instance:
        before = dg.evaluate_automation_conditions(defs, instance)
        feed.publish("2020-10", GREEN_ERAS["2020-10"]("2020-10"), dataset="green")
        assert materialize(
            resources, "2020-10-01", selection=GREEN_MONTHLY, instance=instance
        ).success

        # The month's days follow, green's only (the 31st waits for November's file), with
        # dbt's staging view of green trips; the models below both datasets wait for yellow.
        after = dg.evaluate_automation_conditions(defs, instance, cursor=before.cursor)
        days = [f"2020-10-{day:02}" for day in range(1, 31)]
        expected = [*GREEN_DAILY.split(), "analytics/stg_green_trips"]
        assert requested(after) == dict.fromkeys(expected, days)

        feed.reupload("2020-10", GREEN_ERAS["2020-10"]("2020-10").slice(7), dataset="green")
        [request] = tick("green_source_file_changed", instance, source)[0]
        assert request.partition_key == "2020-10-01"
        assert request.run_key.startswith("reupload-2020-10-")
        assert tick("yellow_source_file_changed", instance, source)[0] == []


@pytest.mark.parametrize(
    "kind, month, carried",
    [
        ("datatalks", "2019-01", True),
        ("datatalks", "2021-07", True),
        ("datatalks", "2021-08", False),  # the mirror's green release ends with July 2021
        ("tlc", "2013-08", True),
        ("tlc", "2013-07", False),  # the TLC's green files begin in August 2013
    ],
)
def test_each_source_carries_greens_own_months(monkeypatch, kind, month, carried):
    monkeypatch.setenv("TAXI_SOURCE", kind)
    if carried:
        key, days = month_run.month_partitions(GREEN, month)
        assert key == f"{month}-01" and days[0] == key
    else:
        with pytest.raises(SystemExit, match=f"--month {month}: .*green taxi"):
            month_run.month_partitions(GREEN, month)


# --- `make run DATASET=all`, as a new user runs it -------------------------------------------


def test_run_dataset_all_loads_both_datasets_from_a_fresh_project(tmp_path, http_source):
    """`python -m taxi_assets.cli run --dataset all` (what `make run DATASET=all` calls) in a
    project of its own: its own embedded PostgreSQL, lake and DuckDB under a fresh TAXI_HOME."""
    green_data = green_csv_gz("2021-01")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    http_source.publish_bytes("2021-01", green_data, dataset="green")
    # All datasets: the zones and the dbt models too (test_analytics.py tests them).
    (http_source.root / "taxi_zone_lookup.csv").write_bytes(
        gzip.decompress(sample("taxi+_zone_lookup.csv.gz").read_bytes())
    )
    pg_port = free_port()
    env = project_env(tmp_path, http_source.url, pg_port)
    try:
        done = cli_process(env, "run", "--dataset", "all", "--month", "2021-01")

        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "Traceback" not in output and "Warning" not in output, output
        # The closing table names both datasets' sinks.
        assert "ny_taxi.yellow_cab_data" in output and "ny_taxi.green_taxi" in output, output
        assert re.search(r"analytics/fct_monthly_zone_revenue +\d+ .*; chart ", output), output
        green_want = expected_green(read_green_csv(green_data), "2021-01")
        yellow_want = _yellow_kept_rows()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres") as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM ny_taxi.yellow_cab_data), "
                "(SELECT count(*) FROM ny_taxi.green_taxi)"
            ).fetchone()
        assert counts == (yellow_want["rows"], green_want["rows"])
        home = tmp_path / "taxi_home"
        green_month = pq.read_metadata(home / "lake" / "green_taxi_data" / "2021-01.parquet")
        assert green_month.num_rows == green_want["rows"]
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as warehouse:
            [(green_days,)] = warehouse.execute(
                "SELECT count(*) FROM ny_taxi.green_trips"
            ).fetchall()
        assert green_days == green_want["rows_in_month"]
    finally:
        cli_process(env, "stop")


def test_the_readmes_offline_sample_folder_is_a_source_of_both_datasets(tmp_path):
    """`python -m taxi_assets_tests.green_files FOLDER MONTH…`, the README's offline source."""
    folder = tmp_path / "samples"
    done = subprocess.run(
        [sys.executable, "-m", "taxi_assets_tests.green_files", str(folder), "2020-10"],
        capture_output=True,
        text=True,
        check=True,
    )

    assert f"TAXI_SOURCE_URL={folder}" in done.stdout
    green = read_trips(folder / "green_tripdata_2020-10.csv.gz", GREEN)  # the pipeline's reader
    assert green.num_rows == read_green_csv(green_csv_gz("2020-10")).num_rows
    yellow = folder / "yellow_tripdata_2021-01.csv.gz"
    assert yellow.read_bytes() == sample("yellow_tripdata_2021-01.csv.gz").read_bytes()
