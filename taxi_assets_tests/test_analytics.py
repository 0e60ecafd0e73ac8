"""The taxi zones and the course's dbt models as assets, on real DuckDB with the real samples:
January 2021 of both datasets (green built from real rows, green_files.py) and the real zone
lookup, through every sink, then dbt through dagster-dbt."""

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import date

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import expect

from taxi_assets.defs.analytics.dbt_project import ANALYTICS_GROUP, prepared_manifest
from taxi_assets.defs.assets.warehouse import WAREHOUSE_POOL
from taxi_assets.defs.automation import downstream_condition
from taxi_assets.definitions import defs
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.defs.io_managers.duckdb import DuckDBWarehouseIOManager
from taxi_assets.defs.resources import LakeResource
from taxi_assets.defs.zones import FORMER_ZONES_ASSET, ZONES_ASSET, ZONES_JOB
from taxi_assets.materializations import latest_metadata_value
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.dagster_processes import start_webserver
from taxi_assets_tests.green_files import write_sample_source
from taxi_assets_tests.pipeline import (
    failure_messages,
    materialize,
    materialize_days,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_automation_live import page, screenshot  # noqa: F401 - a fixture

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

FIRST_DAY, LAST_DAY = "2021-01-01", "2021-01-31"
ZONES = "checked_taxi_zones ny_taxi/taxi_zone_lookup taxi_zones_parquet ny_taxi/taxi_zones"
MONTHLY = {
    "yellow": "raw_yellow_trips cleaned_yellow_trips ny_taxi/yellow_cab_data yellow_trips_parquet",
    "green": "raw_green_trips cleaned_green_trips ny_taxi/green_taxi green_trips_parquet",
}
DAILY = {
    "yellow": "yellow_trips_by_day ny_taxi/yellow_trips",
    "green": "green_trips_by_day ny_taxi/green_trips",
}
MODELS = [
    "dim_zones",
    "stg_yellow_trips",
    "stg_green_trips",
    "int_trips_unioned",
    "fct_trips",
    "fct_monthly_zone_revenue",
]
ANALYTICS = " ".join(f"{ANALYTICS_GROUP}/{model}" for model in MODELS)
MART = dg.AssetKey([ANALYTICS_GROUP, "fct_monthly_zone_revenue"])
FCT_TRIPS = dg.AssetKey([ANALYTICS_GROUP, "fct_trips"])
AMOUNTS = [
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "congestion_surcharge",
    "total_amount",
]


def build_models(resources, first=FIRST_DAY, last=LAST_DAY, instance=None, **kwargs):
    """The dbt models over first..last, as one run (a single-run backfill's)."""
    return materialize_days(
        resources, first, last, selection=ANALYTICS, instance=instance, **kwargs
    )


def warehouse_rows(path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, postgres):
    """January 2021 of both datasets and the zones through every sink, and the models built."""
    state = tmp_path_factory.mktemp("analytics")
    write_sample_source(state / "source", ["2021-01"])
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    resources = pipeline_resources(state, str(state / "source"), postgres)
    # On disk, for the webserver of the UI test to read.
    (state / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(state / "dagster_home"))
    assert materialize(resources, None, selection=ZONES, instance=instance).success
    for dataset in ("yellow", "green"):
        assert materialize(resources, selection=MONTHLY[dataset], instance=instance).success
        assert materialize_days(
            resources, FIRST_DAY, LAST_DAY, selection=DAILY[dataset], instance=instance
        ).success
    result = build_models(resources, instance=instance)
    assert result.success
    yield state, resources, instance, result
    instance.dispose()


def test_the_models_are_assets_downstream_of_each_datasets_warehouse_table():
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {
            key.to_user_string()
            for key in graph.get(dg.AssetKey.from_user_string(name)).parent_keys
        }

    assert parents("analytics/stg_yellow_trips") == {"ny_taxi/yellow_trips"}
    assert parents("analytics/stg_green_trips") == {"ny_taxi/green_trips"}
    assert parents("analytics/dim_zones") == {"ny_taxi/taxi_zones"}
    assert parents("analytics/fct_trips") == {"analytics/int_trips_unioned", "analytics/dim_zones"}
    assert parents("analytics/fct_monthly_zone_revenue") == {"analytics/fct_trips"}
    fct_trips = graph.get(FCT_TRIPS)
    assert (
        fct_trips.partitions_def
        == graph.get(dg.AssetKey(["ny_taxi", "yellow_trips"])).partitions_def
    )
    # The marts follow their upstream as every asset below the cleaned trips does.
    for model in MODELS:
        condition = graph.get(dg.AssetKey([ANALYTICS_GROUP, model])).automation_condition
        assert condition.get_label() == downstream_condition().get_label()


def test_dbt_tests_are_asset_checks_blocking_where_a_wrong_answer_would_spread():
    graph = defs.resolve_asset_graph()
    checks = {
        key.name: graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
        if key.asset_key == FCT_TRIPS
    }
    blocking = {name for name, blocks in checks.items() if blocks}
    assert blocking == {
        "unique_fct_trips_trip_id",
        "not_null_fct_trips_trip_id",
        "accepted_values_fct_trips_service_type__yellow__green",
        "relationships_fct_trips_pickup_location_id__location_id__ref_dim_zones_",
        "relationships_fct_trips_dropoff_location_id__location_id__ref_dim_zones_",
    }
    # A new payment code only lacks its description: it warns.
    assert set(checks) - blocking == {
        "accepted_values_fct_trips_payment_type__False__0__1__2__3__4__5__6"
    }


def test_every_step_opening_the_warehouse_shares_one_pool_so_none_meets_another_in_the_duckdb_file():
    # A DuckDB file another process writes cannot be opened even to read: a check counting the
    # warehouse's rows beside another run's load failed on the file's lock.
    graph = defs.resolve_asset_graph()

    def in_warehouse(key: dg.AssetKey) -> bool:
        return key.path[0] in {ANALYTICS_GROUP, "ny_taxi"} and key.path[-1] not in {
            "yellow_cab_data",
            "green_taxi",
            "taxi_zone_lookup",
        }

    pools = {
        key.to_user_string(): graph.get(key).pools
        for key in graph.get_all_asset_keys()
        if in_warehouse(key)
    } | {
        f"{check.asset_key.to_user_string()}:{check.name}": {
            graph.assets_def_for_key(check).op.pool
        }
        for check in graph.asset_check_keys
        if in_warehouse(check.asset_key)
    }
    assert any(":warehouse_matches_lake" in name for name in pools), pools
    assert all(found == {WAREHOUSE_POOL} for found in pools.values()), pools


# The course's names: `revenue_monthly_fare` for fare_amount, the others in full.
MART_COLUMNS = ", ".join(
    [
        "revenue_zone_id",
        "revenue_zone",
        "revenue_month",
        "service_type",
        *(f"revenue_monthly_{'fare' if a == 'fare_amount' else a}" for a in AMOUNTS),
        "total_monthly_trips",
        "avg_monthly_passenger_count",
        "avg_monthly_trip_distance",
    ]
)


def computed_from_the_lake(state) -> dict:
    """The mart's rows by (zone id, zone, month, service type), computed by DuckDB directly
    from the lake's day files and the real lookup: nothing of dbt's."""
    lake, lookup = state / "lake", state / "source" / "taxi_zone_lookup.csv"
    sums = ", ".join(f"sum({amount})" for amount in AMOUNTS)
    with duckdb.connect() as connection:
        rows = connection.execute(
            f"""
            with trips as (
                select 'yellow' as service_type, PULocationID as zone_id,
                       tpep_pickup_datetime as pickup, passenger_count, trip_distance,
                       {", ".join(AMOUNTS)}
                from read_parquet('{lake}/nyc_taxi_data_by_day/**/*.parquet')
                union all
                select 'green', pu_location_id, lpep_pickup_datetime, passenger_count,
                       trip_distance, {", ".join(AMOUNTS)}
                from read_parquet('{lake}/green_taxi_data_by_day/**/*.parquet')
            ),
            zones as (select * from read_csv('{lookup}', all_varchar = true))
            select zone_id, zones.Zone, date_trunc('month', pickup)::date, service_type,
                   {sums}, count(*), avg(passenger_count), avg(trip_distance)
            from trips left join zones on cast(zones.LocationID as bigint) = zone_id
            group by all
            """
        ).fetchall()
    assert {row[3] for row in rows} == {"yellow", "green"} and len(rows) > 300
    # Sums in another order differ in the last bits.
    return {row[:4]: pytest.approx(row[4:], rel=1e-9) for row in rows}


def test_mart_rows_equal_an_independent_computation_from_the_lakes_day_files(loaded):
    state, *_ = loaded
    mart = warehouse_rows(
        state / "warehouse.duckdb", f"select {MART_COLUMNS} from analytics.fct_monthly_zone_revenue"
    )
    # Per zone, month and service type: the same rows, the same figures.
    assert {row[:4]: row[4:] for row in mart} == computed_from_the_lake(state)


def test_the_mart_carries_its_chart_and_its_row_count(loaded):
    state, _, instance, _ = loaded
    event = instance.get_latest_materialization_event(MART)
    metadata = event.asset_materialization.metadata
    markdown = metadata["chart"].value
    assert markdown.startswith("![") and "(data:image/png;base64," in markdown
    png = base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))
    assert png.startswith(b"\x89PNG")
    assert open(metadata["chart_path"].value, "rb").read() == png
    (rows,) = warehouse_rows(
        state / "warehouse.duckdb", "select count(*) from analytics.fct_monthly_zone_revenue"
    )[0]
    assert metadata["dagster/row_count"].value == rows


def test_the_ui_shows_the_chart_on_the_mart(loaded, page, tmp_path):  # noqa: F811 - the fixture
    """The Dagster UI renders a markdown metadata value's inline image: the chart opens from
    the mart's metadata ("Show Markdown"), drawn."""
    state, *_ = loaded
    env = {
        **os.environ,
        "DAGSTER_HOME": str(state / "dagster_home"),
        "TAXI_HOME": str(state),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    webserver = start_webserver(env, tmp_path)
    try:
        page.goto(f"{webserver.url}/assets/analytics/fct_monthly_zone_revenue")
        page.get_by_text("chart_path").wait_for()
        page.get_by_text("[Show Markdown]").first.click()
        chart = page.get_by_role("img", name="revenue and trips per month")
        expect(chart).to_be_visible()
        width, height = chart.evaluate("image => [image.naturalWidth, image.naturalHeight]")
        assert width > 400 and height > 300  # decoded, not a broken-image icon
        screenshot(page, tmp_path, "revenue-chart")
    finally:
        webserver.process.stop()


def test_reloading_one_day_changes_only_that_days_rows_in_fct_trips(loaded, tmp_path):
    state, resources, instance, _ = loaded
    path = state / "warehouse.duckdb"
    # The real sample's trips are picked up on the first two days of January.
    day, other_day = "2021-01-02", "2021-01-01"

    def per_day():
        return dict(
            (str(d), (n, ids))
            for d, n, ids in warehouse_rows(
                path,
                "select pickup_date, count(*), sum(hash(trip_id, total_amount)) "
                "from analytics.fct_trips group by 1",
            )
        )

    before = per_day()
    with duckdb.connect(str(path)) as connection:
        # The day reloads with fewer trips (vendor 1's gone) ...
        connection.execute(
            "delete from ny_taxi.yellow_trips where vendorid = 1 "
            f"and cast(tpep_pickup_datetime as date) = date '{day}'"
        )
        # ... and another day's rows are marked: rebuilt, they would lose the mark.
        connection.execute(
            f"update analytics.fct_trips set total_amount = -1 where pickup_date = '{other_day}'"
        )
    marked = per_day()[other_day]
    assert build_models(resources, day, day, instance=instance).success

    after = per_day()
    (expected_day,) = warehouse_rows(
        path,
        "select count(*) from (select tpep_pickup_datetime from ny_taxi.yellow_trips "
        f"where cast(tpep_pickup_datetime as date) = date '{day}' union all "
        "select lpep_pickup_datetime from ny_taxi.green_trips "
        f"where cast(lpep_pickup_datetime as date) = date '{day}')",
    )[0]
    assert after[day][0] == expected_day < before[day][0]
    assert after[other_day] == marked
    assert {d: v for d, v in after.items() if d not in {day, other_day}} == {
        d: v for d, v in before.items() if d not in {day, other_day}
    }


def test_a_day_whose_trips_all_went_has_no_rows_left_in_fct_trips(loaded, tmp_path, postgres):
    state, *_ = loaded
    day = "2021-01-02"
    # The loaded warehouse, copied: dbt reads only the warehouse.
    path = tmp_path / "warehouse.duckdb"
    shutil.copyfile(state / "warehouse.duckdb", path)
    fct_days = "select pickup_date, count(*) from analytics.fct_trips group by 1 order by 1"
    before = dict(warehouse_rows(path, fct_days))
    assert before[date.fromisoformat(day)] > 0
    with duckdb.connect(str(path)) as connection:
        # The day reloads with no trips at all (a republished month without them).
        connection.execute(
            "delete from ny_taxi.yellow_trips "
            f"where cast(tpep_pickup_datetime as date) = date '{day}'"
        )
        connection.execute(
            "delete from ny_taxi.green_trips "
            f"where cast(lpep_pickup_datetime as date) = date '{day}'"
        )
    resources = pipeline_resources(
        tmp_path,
        str(state / "source"),
        postgres,
        warehouse_io_manager=DuckDBWarehouseIOManager(database=str(path)),
    )
    assert build_models(resources, day, day).success

    after = dict(warehouse_rows(path, fct_days))
    assert date.fromisoformat(day) not in after
    assert after == {d: n for d, n in before.items() if d != date.fromisoformat(day)}


def test_an_unknown_zone_id_fails_its_check_and_the_mart_is_not_published(
    loaded, tmp_path, postgres
):
    state, *_ = loaded
    # The loaded warehouse, copied: dbt reads only the warehouse.
    shutil.copyfile(state / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(
            "update ny_taxi.yellow_trips set pulocationid = 999 where tpep_pickup_datetime = "
            "(select min(tpep_pickup_datetime) from ny_taxi.yellow_trips "
            "where cast(tpep_pickup_datetime as date) = date '2021-01-02')"
        )
        mart_before = connection.execute(
            "select * from analytics.fct_monthly_zone_revenue order by all"
        ).fetchall()
    resources = pipeline_resources(
        tmp_path,
        str(state / "source"),
        postgres,
        warehouse_io_manager=DuckDBWarehouseIOManager(database=str(tmp_path / "warehouse.duckdb")),
    )
    instance = dg.DagsterInstance.ephemeral()
    # The first evaluation records where things stand (test_automation.py).
    cursor = dg.evaluate_automation_conditions(defs, instance).cursor
    result = build_models(
        resources, "2021-01-02", "2021-01-02", instance=instance, raise_on_error=False
    )

    assert not result.success
    evaluations = {
        e.asset_check_key.name: e.passed
        for e in (
            event.event_specific_data
            for event in result.all_events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }
    assert (
        evaluations["relationships_fct_trips_pickup_location_id__location_id__ref_dim_zones_"]
        is False
    )
    assert instance.get_latest_materialization_event(MART) is None
    # Nor does the automation publish it: fct_trips' failed blocking check holds it back.
    automation = dg.evaluate_automation_conditions(defs, instance, cursor=cursor)
    assert automation.get_num_requested(MART) == 0
    assert (
        warehouse_rows(
            tmp_path / "warehouse.duckdb",
            "select * from analytics.fct_monthly_zone_revenue order by all",
        )
        == mart_before
    )


# --- the zones ---------------------------------------------------------------------------------

LOOKUP = "taxi_zone_lookup.csv"
OLDER, NEWER = "taxi+_zone_lookup.csv.gz", "taxi_zone_lookup_newer__location_lookup.csv.gz"


def lookup_bytes(name: str) -> bytes:
    return gzip.decompress(sample(name).read_bytes())


def load_zones(resources, instance=None, raise_on_error=True):
    return materialize(
        resources, None, selection=ZONES, instance=instance, raise_on_error=raise_on_error
    )


@pytest.mark.parametrize("published", [OLDER, NEWER])
def test_both_published_lookups_reach_every_sink_from_a_folder(published, tmp_path, fresh_postgres):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / LOOKUP).write_bytes(lookup_bytes(published))
    resources = pipeline_resources(tmp_path, str(tmp_path / "source"), fresh_postgres)
    assert load_zones(resources).success

    # Where the two versions differ; "NA" and "N/A" are names there, not missing values.
    expected = {
        OLDER: (265, "Unknown", "NA", "N/A"),
        NEWER: (265, "N/A", "Outside of NYC", "N/A"),
    }[published]
    sql = "select location_id, borough, zone, service_zone from ny_taxi.{} order by location_id"
    postgres_rows = query(fresh_postgres, sql.format("taxi_zone_lookup"))
    lake_rows = (
        pq.read_table(tmp_path / "lake" / "misc" / "taxi_zone_lookup.parquet")
        .to_pandas()
        .itertuples(index=False, name=None)
    )
    warehouse = warehouse_rows(tmp_path / "warehouse.duckdb", sql.format("taxi_zones"))
    assert len(postgres_rows) == 265 and postgres_rows[-1] == expected
    assert list(lake_rows) == postgres_rows == warehouse


def test_the_lookup_comes_from_the_tlc_feeds_misc_folder(tmp_path, feed, fresh_postgres):
    (feed.root / "misc" / LOOKUP).write_bytes(lookup_bytes(NEWER))
    resources = pipeline_resources(tmp_path, feed.url, fresh_postgres, source_kind="tlc")
    result = load_zones(resources)
    assert f"GET /misc/{LOOKUP}" in feed.requests
    materialization = result.asset_materializations_for_node("checked_taxi_zones")[0]
    assert materialization.metadata["dagster/row_count"].value == 265


def test_the_releases_misc_is_where_dataset_stands_in_its_url(tmp_path, fresh_postgres):
    (tmp_path / "release" / "misc").mkdir(parents=True)
    (tmp_path / "release" / "misc" / LOOKUP).write_bytes(lookup_bytes(OLDER))
    resources = pipeline_resources(
        tmp_path, str(tmp_path / "release" / "{dataset}"), fresh_postgres
    )
    assert load_zones(resources).success


@pytest.mark.parametrize(
    "edit, check",
    [
        (lambda text: text.replace("\r\n2,", "\r\n1,", 1), "zone_ids_unique"),
        (lambda text: text.replace("\r\n265,", "\r\n266,", 1), "zone_ids_in_range"),
        (lambda text: text.replace('"Queens"', '"Queen"', 1), "boroughs_known"),
    ],
    ids=["duplicated id", "id 266", "unknown borough"],
)
def test_a_lookup_breaking_its_contract_fails_a_blocking_check_and_reaches_no_sink(
    edit, check, tmp_path, fresh_postgres
):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / LOOKUP).write_text(edit(lookup_bytes(OLDER).decode()), newline="")
    resources = pipeline_resources(tmp_path, str(tmp_path / "source"), fresh_postgres)
    instance = dg.DagsterInstance.ephemeral()
    result = load_zones(resources, instance=instance, raise_on_error=False)

    failed = [
        e.event_specific_data.asset_check_key.name
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    assert failed == [check]
    for sink in ZONES.split()[1:]:
        assert instance.get_latest_materialization_event(dg.AssetKey.from_user_string(sink)) is None
    assert query(fresh_postgres, "select to_regclass('ny_taxi.taxi_zone_lookup')")[0][0] is None
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_a_lookup_that_is_not_one_fails_naming_the_file_and_row(tmp_path, fresh_postgres):
    (tmp_path / "source").mkdir()
    text = lookup_bytes(OLDER).decode().replace("\r\n7,", "\r\nseven,", 1)
    (tmp_path / "source" / LOOKUP).write_text(text, newline="")
    resources = pipeline_resources(tmp_path, str(tmp_path / "source"), fresh_postgres)
    result = load_zones(resources, raise_on_error=False)
    assert any(
        "taxi_zone_lookup.csv: row 8: LocationID 'seven' is not a whole number" in message
        for message in failure_messages(result)
    )


def test_a_republished_lookup_is_taken_again_like_a_republished_month(
    tmp_path, feed, fresh_postgres
):
    (feed.root / "misc" / LOOKUP).write_bytes(lookup_bytes(OLDER))
    resources = pipeline_resources(tmp_path, feed.url, fresh_postgres, source_kind="tlc")
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("taxi_zone_lookup_changed")

    def tick(on: dg.DagsterInstance = instance):
        context = dg.build_sensor_context(
            instance=on, resources={"taxi_source": resources["taxi_source"]}
        )
        return sensor(context)

    assert "not been taken yet" in tick().skip_message
    assert load_zones(resources, instance=instance).success
    assert "unchanged" in tick().skip_message
    # An instance from before the lookup's rename holds what it took under the former key.
    upgraded = dg.DagsterInstance.ephemeral()
    taken = latest_metadata_value(instance, ZONES_ASSET, "source_version")
    upgraded.report_runless_asset_event(
        dg.AssetMaterialization(FORMER_ZONES_ASSET, metadata={"source_version": taken})
    )
    assert "unchanged" in tick(upgraded).skip_message

    (feed.root / "misc" / LOOKUP).write_bytes(lookup_bytes(NEWER))  # the TLC's newer version
    request = tick()
    assert isinstance(request, dg.RunRequest) and request.job_name in (None, ZONES_JOB)
    assert sensor.job_name == ZONES_JOB


# --- BigQuery: the gcp profile's models, on the emulator ----------------------------------------


def test_the_gcp_profile_builds_the_same_models_on_the_bigquery_emulator(
    loaded, bigquery_emulator, tmp_path, postgres
):
    """The same lake and zones into the emulator's warehouse, the models built there by
    dbt-bigquery: the mart equals the independent computation, as DuckDB's does. The emulator runs every model's first
    build; it cannot parse the script dbt-bigquery's insert_overwrite sends for a table that
    exists (docs/analytics.md), so a day's rebuild there is not tested."""
    state, *_ = loaded
    client = bigquery_emulator.client()
    for dataset in ("analytics", "ny_taxi"):
        client.query(f"DROP SCHEMA IF EXISTS {dataset} CASCADE").result()
    resources = pipeline_resources(
        tmp_path,
        str(state / "source"),
        postgres,
        lake=LakeResource(root=str(state / "lake")),
        warehouse_io_manager=BigQueryWarehouseIOManager(
            project=bigquery_emulator.project,
            dataset="ny_taxi",
            api_endpoint=bigquery_emulator.endpoint,
        ),
    )
    # The checked zones from the DuckDB run's staging, the trips from its lake.
    shutil.copytree(state / "staging" / "taxi_zones", tmp_path / "staging" / "taxi_zones")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(resources, None, selection="ny_taxi/taxi_zones", instance=instance).success
    assert materialize_days(
        resources,
        FIRST_DAY,
        LAST_DAY,
        selection="ny_taxi/yellow_trips ny_taxi/green_trips",
        instance=instance,
    ).success
    result = build_models(resources, instance=instance)
    assert result.success

    # dbt-bigquery's SQL, from the adapter-dispatched macros.
    dbt = resources["dbt"]
    assert dbt.target == "gcp"
    dbt.cli(
        ["compile", "--select", "stg_green_trips", "--vars", json.dumps(dbt.warehouse_vars)],
        manifest=prepared_manifest(),
        target_path=tmp_path / "compiled",
    ).wait()
    [compiled] = (tmp_path / "compiled").glob("compiled/**/stg_green_trips.sql")
    assert "to_hex(md5(array_to_string([" in compiled.read_text()

    mart = client.query(f"select {MART_COLUMNS} from analytics.fct_monthly_zone_revenue")
    on_bigquery = {row[:4]: row[4:] for row in (tuple(r.values()) for r in mart.result())}
    assert on_bigquery == computed_from_the_lake(state)


def test_dbt_waits_for_a_process_writing_the_duckdb_file(loaded, tmp_path, postgres):
    """DuckDB lets one process at a time write its file: a build that finds another writer
    (here a plain DuckDB connection in another process) waits for it rather than fail."""
    state, *_ = loaded
    shutil.copyfile(state / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    resources = pipeline_resources(
        tmp_path,
        str(state / "source"),
        postgres,
        warehouse_io_manager=DuckDBWarehouseIOManager(database=str(tmp_path / "warehouse.duckdb")),
    )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(tmp_path / "warehouse.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        results = []
        build = threading.Thread(
            target=lambda: results.append(build_models(resources, "2021-01-02", "2021-01-02"))
        )
        build.start()
        # dbt meets the lock on its first connection; the writer then lets go.
        time.sleep(5)
        assert build.is_alive()
    finally:
        holder.communicate("", timeout=60)
    build.join(timeout=600)
    assert results and results[0].success
