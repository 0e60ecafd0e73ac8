"""DuckDB loads a range of days with SQL over the lake's day files: no trip through the worker."""

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.dagster_private import TablePartitionDimension, TableSlice

from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.defs.io_managers.duckdb import (
    DuckDBWarehouseIOManager,
    DuckDBWarehousePandasTypeHandler,
)
from taxi_assets_tests.pipeline import materialize, materialize_days, pipeline_resources, query
from taxi_assets_tests.test_warehouse_assets import check_passed

# The sample's January trips are picked up on the 1st and the 2nd: the 3rd has no file.
DAYS = ["2021-01-01", "2021-01-02", "2021-01-03"]


def current_day_files(lake: Path, days: list[str]) -> list[Path]:
    """The by-day dataset's files for `days` as its manifest names them (read independently)."""
    recorded = json.loads((lake / "nyc_taxi_data_by_day" / "_manifest.json").read_text())["days"]
    return [lake / recorded[day]["path"] for day in days if recorded[day]["path"]]


def test_a_range_of_days_loads_from_exactly_the_lake_files_and_no_batch_passes_the_worker(
    tmp_path, http_source, postgres, monkeypatch
):
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    database = tmp_path / "warehouse.duckdb"
    resources = pipeline_resources(
        tmp_path,
        http_source.url,
        postgres,
        warehouse_io_manager=DuckDBWarehouseIOManager(database=str(database)),
    )
    assert materialize(resources).success
    assert materialize_days(resources, DAYS[0], DAYS[-1], selection="yellow_trips_by_day").success
    expected_files = current_day_files(tmp_path / "lake", DAYS)
    assert len(expected_files) == 2

    # What the warehouse's IO manager is handed, and every Parquet batch read in this process.
    received, batches_read = [], []
    insert_files = DuckDBWarehousePandasTypeHandler._insert_files

    def recording_insert(context, table_slice, files, connection):
        received.append(files.local_files)
        return insert_files(context, table_slice, files, connection)

    iter_batches = pq.ParquetFile.iter_batches

    def recording_iter_batches(self, *args, **kwargs):
        batches_read.append(kwargs.get("columns"))
        return iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(
        DuckDBWarehousePandasTypeHandler, "_insert_files", staticmethod(recording_insert)
    )
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording_iter_batches)
    for _ in range(2):  # a rerun replaces the range with the same rows
        result = materialize_days(resources, DAYS[0], DAYS[-1], selection="ny_taxi/yellow_trips")
        assert result.success

    # The asset passed on the days' current files, not their rows; the only batches read here
    # are the reconciliation check's pickup column.
    assert received == [tuple(map(str, expected_files))] * 2
    assert batches_read and set(map(tuple, batches_read)) == {("tpep_pickup_datetime",)}

    # The table holds exactly the files' rows, under the tutorial's names.
    lake = pa.concat_tables([pq.read_table(path) for path in expected_files])
    lake = lake.rename_columns([name.replace(" ", "_").lower() for name in lake.column_names])
    columns = ", ".join(f'"{name}"' for name in lake.column_names)
    with duckdb.connect(str(database), read_only=True) as connection:
        held_columns = connection.execute("DESCRIBE ny_taxi.yellow_trips").fetchall()
        assert [column for column, *_ in held_columns] == lake.column_names
        held = connection.execute(f"SELECT {columns} FROM ny_taxi.yellow_trips").fetchall()
    assert len(held) == lake.num_rows > 0
    assert sorted(map(repr, held)) == sorted(map(repr, zip(*lake.to_pydict().values())))
    assert check_passed(result)


def test_a_file_row_outside_the_days_is_refused_before_the_table_changes(tmp_path):
    """The window guard the frame and stream loads have, applied by DuckDB to the files."""
    day_file = tmp_path / "part-0.parquet"
    pickups = [dt.datetime(2021, 1, 1, 23, 59), dt.datetime(2021, 1, 2, 0, 0)]
    pq.write_table(pa.table({"Pickup Time": pickups, "fare": [1.0, 2.0]}), day_file)
    window = dg.TimeWindow(
        dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2021, 1, 2, tzinfo=dt.timezone.utc),
    )
    table_slice = TableSlice(
        table="trips",
        schema="ny_taxi",
        partition_dimensions=[TablePartitionDimension("pickup_time", window)],
    )
    files = LakeDayFiles(trips=TripBatches.of(pa.table({})), local_files=(str(day_file),))
    context = dg.build_output_context(partition_key="2021-01-01")
    with duckdb.connect() as connection:
        connection.execute("create schema ny_taxi")
        with pytest.raises(ValueError, match=r"1 of 2 rows have 'pickup_time' outside"):
            DuckDBWarehousePandasTypeHandler._insert_files(
                context, table_slice, dataclasses.replace(files, normalised_names=True), connection
            )
        assert connection.execute(
            "select count(*) from information_schema.tables where table_name = 'trips'"
        ).fetchone() == (0,)
