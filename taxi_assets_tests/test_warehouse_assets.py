"""The lake's trips in the warehouse, on the BigQuery emulator and on DuckDB."""

import dagster as dg
import duckdb
import pandas as pd
import pytest

from taxi_assets.definitions import defs
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.defs.io_managers.duckdb import DuckDBWarehouseIOManager
from taxi_assets_tests.pipeline import materialize, materialize_days, pipeline_resources, query

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

TABLE = "ny_taxi.yellow_trips"
WAREHOUSE_CHECK = dg.AssetCheckKey(
    dg.AssetKey(["ny_taxi", "yellow_trips"]), "warehouse_matches_lake"
)


class BigQueryWarehouse:
    def __init__(self, emulator):
        self.client = emulator.client()
        self.client.query(f"DROP TABLE IF EXISTS {TABLE}").result()
        self.io_manager = BigQueryWarehouseIOManager(
            project=emulator.project, dataset="ny_taxi", api_endpoint=emulator.endpoint
        )

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in self.client.query(sql).result()]


class DuckDBWarehouse:
    def __init__(self, path):
        self.path = str(path)
        self.io_manager = DuckDBWarehouseIOManager(database=self.path)

    def rows(self, sql: str) -> list[tuple]:
        with duckdb.connect(self.path) as connection:
            return connection.execute(sql).fetchall()


@pytest.fixture(params=["bigquery", "duckdb"])
def warehouse(request, tmp_path):
    if request.param == "bigquery":
        return BigQueryWarehouse(request.getfixturevalue("bigquery_emulator"))
    return DuckDBWarehouse(tmp_path / "warehouse.duckdb")


@pytest.fixture
def resources(tmp_path, http_source, postgres, warehouse):
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    resources = pipeline_resources(
        tmp_path, http_source.url, postgres, warehouse_io_manager=warehouse.io_manager
    )
    assert materialize(resources).success
    return resources


def rows_per_day(warehouse) -> dict[str, int]:
    return {
        str(day): count
        for day, count in warehouse.rows(
            f"SELECT CAST(tpep_pickup_datetime AS DATE) AS day, COUNT(*) FROM {TABLE} "
            "GROUP BY day ORDER BY day"
        )
    }


def check_passed(result) -> bool:
    """Every day of the run has its own evaluation, recorded against that day's partition
    (an unpartitioned one would leave the days' planned evaluations "skipped" in the UI)."""
    evaluations = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "warehouse_matches_lake"
    ]
    days = result.dagster_run.tags.get("dagster/partition")
    if days is None:
        start = result.dagster_run.tags["dagster/asset_partition_range_start"]
        end = result.dagster_run.tags["dagster/asset_partition_range_end"]
        days = [str(d.date()) for d in pd.date_range(start, end)]
    else:
        days = [days]
    assert [e.partition for e in evaluations] == days
    return all(e.passed for e in evaluations)


def test_days_land_with_lowercase_columns_and_the_lake_reconciles(resources, warehouse):
    result = materialize_days(resources, "2021-01-01", "2021-01-02")

    assert result.success and check_passed(result)
    columns = (
        [
            row[0]
            for row in warehouse.rows(
                "SELECT column_name FROM ny_taxi.INFORMATION_SCHEMA.COLUMNS "
                "WHERE table_name = 'yellow_trips'"
            )
        ]
        if isinstance(warehouse, BigQueryWarehouse)
        else [row[0] for row in warehouse.rows("DESCRIBE ny_taxi.yellow_trips")]
    )
    assert "vendorid" in columns and "pulocationid" in columns
    assert all(column == column.lower() for column in columns)
    per_day = rows_per_day(warehouse)
    assert list(per_day) == ["2021-01-01", "2021-01-02"]
    assert sum(per_day.values()) == 27_812 - 16  # the sample's January trips with passengers


def test_rerunning_a_day_replaces_exactly_its_rows_and_days_coexist(resources, warehouse):
    materialize_days(resources, "2021-01-01", "2021-01-02")
    before = rows_per_day(warehouse)
    [(fares_before,)] = warehouse.rows(f"SELECT SUM(total_amount) FROM {TABLE}")

    result = materialize(
        resources, partition_key="2021-01-02", selection="yellow_trips_by_day ny_taxi/yellow_trips"
    )

    assert result.success and check_passed(result)
    assert rows_per_day(warehouse) == before
    [(fares_after,)] = warehouse.rows(f"SELECT SUM(total_amount) FROM {TABLE}")
    assert fares_after == pytest.approx(fares_before)


def test_reconciliation_fails_when_a_row_is_missing(resources, warehouse):
    materialize_days(resources, "2021-01-01", "2021-01-02")
    warehouse.rows(
        f"DELETE FROM {TABLE} WHERE tpep_pickup_datetime = "
        f"(SELECT MIN(tpep_pickup_datetime) FROM {TABLE} "
        "WHERE tpep_pickup_datetime >= '2021-01-02')"
    )

    # The check alone, as the UI's "Execute check" runs it: no asset is re-materialized.
    check_job = dg.define_asset_job("reconcile", dg.AssetSelection.checks(WAREHOUSE_CHECK))
    definitions = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[check_job], resources=resources
    )
    result = definitions.resolve_job_def("reconcile").execute_in_process(
        tags={"dagster/partition": "2021-01-02"},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    assert check_passed(result) is False


def test_a_day_without_trips_empties_its_warehouse_partition(resources, warehouse):
    materialize_days(resources, "2021-01-01", "2021-01-03")

    assert rows_per_day(warehouse).get("2021-01-03") is None
    result = materialize(
        resources, partition_key="2021-01-03", selection="yellow_trips_by_day ny_taxi/yellow_trips"
    )
    assert result.success and check_passed(result)
