"""The warehouse loads a range of days from the lake's day files where they are, no trip through
the worker: DuckDB by SQL over the files on disk, BigQuery by load jobs over their gs:// URIs."""

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.fs as pafs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.dagster_private import TablePartitionDimension, TableSlice

from taxi_assets.storage.lake_files import LakeDayFiles
from google.cloud import bigquery

from taxi_assets.defs.assets.warehouse import normalise_column_names
from taxi_assets.defs.io_managers.bigquery import (
    BigQueryWarehouseIOManager,
    BigQueryWarehousePandasTypeHandler,
)
from taxi_assets.defs.io_managers.duckdb import (
    DuckDBWarehouseIOManager,
    DuckDBWarehousePandasTypeHandler,
)
from taxi_assets.defs.resources import LakeResource
from taxi_assets.storage import bigquery_tables
from taxi_assets_tests.pipeline import (
    failure_messages,
    materialize,
    materialize_days,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_warehouse_assets import check_passed

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

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


# --- BigQuery: load jobs over the lake's gs:// objects -----------------------------------------


def lake_rows(filesystem: pafs.FileSystem, paths: list[str]) -> list[str]:
    """The files' rows under the tutorial's names, each as a sortable repr."""
    lake = pa.concat_tables([pq.read_table(path, filesystem=filesystem) for path in paths])
    lake = lake.rename_columns([name.replace(" ", "_").lower() for name in lake.column_names])
    return sorted(map(repr, zip(*lake.to_pydict().values())))


def warehouse_rows(client: bigquery.Client, table: str, columns: list[str]) -> list[str]:
    names = ", ".join(f"`{name}`" for name in columns)
    return sorted(repr(tuple(row.values())) for row in client.query(f"SELECT {names} FROM {table}"))


def gcs_lake(gcs_emulator, request) -> LakeResource:
    """A lake folder of its own on the GCS the BigQuery emulator's load jobs read."""
    return LakeResource(
        root=f"gs://{gcs_emulator.bucket}/{request.node.name}", endpoint=gcs_emulator.url
    )


def test_bigquery_replaces_a_range_from_the_lake_objects_by_load_jobs_and_keeps_it_on_failure(
    tmp_path, http_source, postgres, gcs_emulator, bigquery_emulator, request, monkeypatch
):
    """What the emulators prove, and what rests on BigQuery's documentation.

    Proven here, on fake-gcs-server and bqemulator (whose launcher fetches `gs://bucket/object`
    from fake-gcs-server through the GCS JSON API, one object at a time): the days' objects,
    exactly as the lake's manifest names them, load in one job with many URIs; the table holds
    exactly the files' rows under the tutorial's names; replacing a range leaves the other days;
    a load that fails (an object gone between the lake's read and the job) leaves the old rows
    and no staging table.

    Not provable on the emulator, so resting on BigQuery's documentation: the limit of 10,000
    URIs a job and 1,500 load jobs a table a day (cloud.google.com/bigquery/quotas#load_jobs);
    that a failed job loads nothing (the emulator keeps the rows of the URIs it read before
    the failure: staging is what keeps them out of the table here); and Parquet's columns
    matched against the table's schema (the emulator matches them by position, so the staging
    table takes the files' own columns in their order). Not used, because the emulator cannot
    do them as BigQuery does: wildcard URIs (it fetches the literal name) and schema
    autodetection.
    """
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    lake = gcs_lake(gcs_emulator, request)
    dataset = f"range_{request.node.name[-20:].strip('_')}"
    resources = pipeline_resources(
        tmp_path,
        http_source.url,
        postgres,
        lake=lake,
        warehouse_io_manager=BigQueryWarehouseIOManager(
            project=bigquery_emulator.project,
            dataset=dataset,
            api_endpoint=bigquery_emulator.endpoint,
        ),
    )
    assert materialize(resources).success
    assert materialize_days(resources, DAYS[0], DAYS[-1], selection="yellow_trips_by_day").success
    filesystem = lake.filesystem()
    with filesystem.open_input_file("nyc_taxi_data_by_day/_manifest.json") as manifest:
        recorded = json.loads(manifest.read())["days"]
    day_paths = {day: recorded[day]["path"] for day in DAYS if recorded[day]["path"]}
    assert len(day_paths) == 2
    uris = [lake.uri(path) for path in day_paths.values()]

    # Every load job sent, and every upload from this process (observed, not changed).
    jobs, uploads = [], []
    load_from_uri = bigquery.Client.load_table_from_uri
    load_from_file = bigquery.Client.load_table_from_file

    def recording_load_from_uri(self, source_uris, *args, **kwargs):
        jobs.append(list(source_uris))
        return load_from_uri(self, source_uris, *args, **kwargs)

    def recording_load_from_file(self, *args, **kwargs):
        uploads.append(args)
        return load_from_file(self, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "load_table_from_uri", recording_load_from_uri)
    monkeypatch.setattr(bigquery.Client, "load_table_from_file", recording_load_from_file)

    result = materialize_days(resources, DAYS[0], DAYS[-1], selection="ny_taxi/yellow_trips")
    assert result.success
    assert jobs == [uris] and uploads == []
    client = bigquery_emulator.client()
    table = f"`{bigquery_emulator.project}.{dataset}.yellow_trips`"
    columns = [field.name for field in client.get_table(table.strip("`")).schema]
    want = lake_rows(filesystem, list(day_paths.values()))
    assert columns[0] == "vendorid" and len(want) > 0
    assert warehouse_rows(client, table, columns) == want
    assert check_passed(result)

    # A row of each day that the lake does not hold: replacing the 2nd drops only the 2nd's.
    client.query(
        f"INSERT INTO {table} (vendorid, tpep_pickup_datetime) VALUES "
        "(99, DATETIME '2021-01-01 12:00:00'), (99, DATETIME '2021-01-02 12:00:00')"
    ).result()
    assert materialize_days(resources, DAYS[1], DAYS[1], selection="ny_taxi/yellow_trips").success
    assert jobs[-1] == [lake.uri(day_paths[DAYS[1]])]
    stray = repr((99, dt.datetime(2021, 1, 1, 12)) + (None,) * (len(columns) - 2))
    assert warehouse_rows(client, table, columns) == sorted([*want, stray])

    # A day's object vanishes after the lake named it: the job fails partway, the table keeps
    # its rows. The wrapper only deletes an object through the GCS API; the failure is the
    # emulators' own.
    load = bigquery_tables.load_from_storage

    def load_after_losing_the_last_object(connection, source_uris, *args, **kwargs):
        filesystem.delete_file(day_paths[DAYS[1]])
        return load(connection, source_uris, *args, **kwargs)

    monkeypatch.setattr(bigquery_tables, "load_from_storage", load_after_losing_the_last_object)
    failed = materialize_days(
        resources, DAYS[0], DAYS[-1], selection="ny_taxi/yellow_trips", raise_on_error=False
    )
    assert not failed.success
    assert any("part-0.parquet" in message for message in failure_messages(failed))
    assert warehouse_rows(client, table, columns) == sorted([*want, stray])
    staging = [t.table_id for t in client.list_tables(f"{bigquery_emulator.project}.{dataset}")]
    assert staging == ["yellow_trips"]


def own_dataset(client: bigquery.Client, request) -> str:
    dataset = f"{client.project}.{request.node.name[:60]}"
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
    client.create_dataset(dataset)
    return dataset


def test_bigquery_loads_more_objects_than_one_job_takes_in_as_few_jobs_as_allowed(
    gcs_emulator, bigquery_emulator, request, monkeypatch
):
    """BigQuery takes at most 10,000 URIs a job: more go in further jobs, every row once. The
    limit is lowered to 2 here so that three objects need two jobs."""
    lake = gcs_lake(gcs_emulator, request)
    parts = [pa.table({"VendorID": [day, day], "fare": [day * 1.5, None]}) for day in (1, 2, 3)]
    for day, part in enumerate(parts, 1):
        pq.write_table(part, f"day={day}/part-0.parquet", filesystem=lake.filesystem())
    uris = [lake.uri(f"day={day}/part-0.parquet") for day in (1, 2, 3)]
    client = bigquery_emulator.client()
    table = client.create_table(
        bigquery.Table(
            f"{own_dataset(client, request)}.trips",
            schema=bigquery_tables.bigquery_schema(parts[0].schema),
        )
    )
    jobs = []
    load_from_uri = bigquery.Client.load_table_from_uri

    def recording_load_from_uri(self, source_uris, *args, **kwargs):  # observes only
        jobs.append(list(source_uris))
        return load_from_uri(self, source_uris, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "load_table_from_uri", recording_load_from_uri)
    monkeypatch.setattr(bigquery_tables, "MAX_URIS_PER_LOAD_JOB", 2)

    assert bigquery_tables.load_from_storage(client, uris, table) == 2
    assert jobs == [uris[:2], uris[2:]]
    held = warehouse_rows(
        client, f"`{table.full_table_id.replace(':', '.')}`", ["VendorID", "fare"]
    )
    assert held == sorted(repr(row) for part in parts for row in zip(*part.to_pydict().values()))


def test_bigquery_refuses_a_lake_row_outside_the_days_before_the_table_changes(
    gcs_emulator, bigquery_emulator, request
):
    """The window guard the frame and stream loads have, applied by BigQuery to the objects."""
    lake = gcs_lake(gcs_emulator, request)
    client = bigquery_emulator.client()
    project, dataset = own_dataset(client, request).split(".")
    window = dg.TimeWindow(
        dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2021, 1, 2, tzinfo=dt.timezone.utc),
    )
    table_slice = TableSlice(
        table="trips",
        schema=dataset,
        database=project,
        partition_dimensions=[TablePartitionDimension("pickup_time", window)],
    )
    handler = BigQueryWarehousePandasTypeHandler()
    context = dg.build_output_context(partition_key="2021-01-01")

    def write(name: str, pickups: list[dt.datetime]) -> None:
        """The day's object as the lake hands it over, through the asset's renaming."""
        rows = pa.table({"Pickup Time": pickups, "fare": [1.0] * len(pickups)})
        pq.write_table(rows, name, filesystem=lake.filesystem())
        files = LakeDayFiles(TripBatches.of(rows), None, gcs_uris=(lake.uri(name),))
        files = dataclasses.replace(
            files, trips=normalise_column_names(files.trips), normalised_names=True
        )
        handler.handle_output(context, table_slice, files, client)

    write("good.parquet", [dt.datetime(2021, 1, 1, 12, 0)])
    with pytest.raises(ValueError, match=r"1 of 2 rows of the lake's files"):
        write("bad.parquet", [dt.datetime(2021, 1, 1, 23, 59), dt.datetime(2021, 1, 2, 0, 0)])
    table = f"`{project}.{dataset}.trips`"
    assert warehouse_rows(client, table, ["pickup_time", "fare"]) == [
        repr((dt.datetime(2021, 1, 1, 12, 0), 1.0))
    ]
    assert [t.table_id for t in client.list_tables(f"{project}.{dataset}")] == ["trips"]
