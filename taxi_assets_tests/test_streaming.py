"""A month flows through the pipeline in batches: contents, ceilings and checks are the same.

`BATCH_ROWS` is shrunk to run the real 28k-row sample through dozens of batches (and every
staged file through dozens of row groups), or raised to hold it in one; the CSV reader's
block (`CSV_BLOCK_BYTES`), which sets the batches the file is read and cleaned in, with it.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.tlc import batches, schema
from taxi_assets.defs.assets import clean
from taxi_assets.datasets import YELLOW
from taxi_assets.definitions import defs
from taxi_assets.defs.io_managers import bigquery
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.storage.staged_files import PRODUCER_METADATA_KEY, write_staged
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets_tests.conftest import DATA
from taxi_assets_tests.pipeline import (
    JANUARY,
    materialize,
    materialize_days,
    partition_state,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_walking_skeleton import REAL_ROWS, REAL_ZERO_PASSENGER_ROWS

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

JANUARY_FILE = "yellow_tripdata_2021-01.csv.gz"
SMALL_BATCH = 500
SMALL_CSV_BLOCK = 32 << 10  # about 350 of the sample's rows


def small_batches(monkeypatch) -> None:
    monkeypatch.setattr(batches, "BATCH_ROWS", SMALL_BATCH)
    monkeypatch.setattr(schema, "CSV_BLOCK_BYTES", SMALL_CSV_BLOCK)


@pytest.fixture
def source(http_source, postgres):
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    return http_source


def run_everything(resources: dict) -> None:
    """The month's assets, then its first two days (all the sample has) as one run."""
    assert materialize(resources).success
    assert materialize_days(resources, "2021-01-01", "2021-01-02").success


def sink_contents(state: Path, postgres) -> dict:
    """What every sink holds: Postgres' rows and sums, each lake file's rows, the warehouse's."""
    lake = state / "lake"
    files = {
        str(path.relative_to(lake)): pq.read_table(path).to_pandas()
        for path in sorted(lake.rglob("*.parquet"))
    }
    with duckdb.connect(str(state / "warehouse.duckdb")) as warehouse:
        warehouse_rows = warehouse.execute(
            "SELECT count(*), sum(total_amount), sum(passenger_count), min(tpep_pickup_datetime), "
            "max(tpep_pickup_datetime) FROM ny_taxi.yellow_trips"
        ).fetchall()
    postgres_rows = query(
        postgres,
        "SELECT count(*), sum(total_amount)::numeric(14,2), sum(passenger_count), "
        "md5(string_agg(\"VendorID\" || ',' || tpep_pickup_datetime || ',' || total_amount, ';' "
        'ORDER BY tpep_pickup_datetime, tpep_dropoff_datetime, "PULocationID", total_amount, '
        "trip_distance)) FROM ny_taxi.yellow_cab_data WHERE source_month = %s",
        JANUARY,
    )
    return {"postgres": postgres_rows, "lake": files, "warehouse": warehouse_rows}


def test_tiny_batches_give_exactly_the_sink_contents_of_one_batch(
    tmp_path, source, postgres, monkeypatch
):
    monkeypatch.setattr(batches, "BATCH_ROWS", 10 * REAL_ROWS)
    run_everything(pipeline_resources(tmp_path / "one_batch", source.url, postgres))
    one_batch = sink_contents(tmp_path / "one_batch", postgres)
    staged = pq.ParquetFile(
        tmp_path / "one_batch" / "staging" / "yellow_trips" / f"{JANUARY}.parquet"
    )
    assert staged.num_row_groups == 1

    small_batches(monkeypatch)
    run_everything(pipeline_resources(tmp_path / "many_batches", source.url, postgres))
    many = sink_contents(tmp_path / "many_batches", postgres)
    staged = pq.ParquetFile(
        tmp_path / "many_batches" / "staging" / "yellow_trips" / f"{JANUARY}.parquet"
    )
    assert staged.num_row_groups > 50

    assert many["postgres"] == one_batch["postgres"]
    assert many["postgres"][0][0] == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
    assert many["warehouse"] == one_batch["warehouse"]
    assert many["lake"].keys() == one_batch["lake"].keys()
    assert {
        "nyc_taxi_data/2021-01.parquet",
        "2021/01/02/nyc_taxi_data.parquet",
        "nyc_taxi_data_by_day/tpep_pickup_date=2021-01-02/part-0.parquet",
    } <= many["lake"].keys()
    for path, rows in many["lake"].items():
        pd.testing.assert_frame_equal(rows, one_batch["lake"][path], obj=path)


def test_bigquery_load_in_many_parts_holds_what_one_load_does(
    tmp_path, source, postgres, monkeypatch, bigquery_emulator
):
    """The warehouse's days arrive in load jobs of LOAD_JOB_ROWS; many small ones add up to
    exactly the rows of one."""
    client = bigquery_emulator.client()
    warehouse = bigquery.BigQueryWarehouseIOManager(
        project=bigquery_emulator.project,
        dataset="ny_taxi",
        api_endpoint=bigquery_emulator.endpoint,
    )
    resources = pipeline_resources(tmp_path, source.url, postgres, warehouse_io_manager=warehouse)
    summary = (
        "SELECT count(*), sum(total_amount), sum(passenger_count), "
        "min(tpep_pickup_datetime), max(tpep_pickup_datetime) FROM ny_taxi.yellow_trips"
    )

    client.query("DROP TABLE IF EXISTS ny_taxi.yellow_trips").result()
    run_everything(resources)
    one_load = [tuple(row.values()) for row in client.query(summary).result()]

    monkeypatch.setattr(bigquery, "LOAD_JOB_ROWS", 3_000)
    monkeypatch.setattr(batches, "BATCH_ROWS", SMALL_BATCH)
    client.query("DROP TABLE IF EXISTS ny_taxi.yellow_trips").result()
    assert materialize_days(resources, "2021-01-01", "2021-01-02").success
    many_loads = [tuple(row.values()) for row in client.query(summary).result()]

    assert many_loads == one_load
    assert one_load[0][0] == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS - 16  # 16 are of 2020-12-31


def files_and_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    "ceiling, named",
    [
        ({"max_rows_per_file": 20_000}, ["more than 20,000 rows", "max_rows_per_file"]),
        ({"max_bytes_per_file": 1_000_000}, ["more than 1,000,000 bytes", "max_bytes_per_file"]),
    ],
    ids=["rows", "decompressed_bytes"],
)
def test_file_over_the_ceiling_fails_naming_file_and_limit_with_every_sink_unchanged(
    tmp_path, source, postgres, ceiling, named
):
    resources = pipeline_resources(tmp_path, source.url, postgres)
    run_everything(resources)
    cleaned_stage = tmp_path / "staging" / "yellow_trips"
    before = {
        "postgres": partition_state(postgres),
        "lake": files_and_digests(tmp_path / "lake"),
        "staging": files_and_digests(cleaned_stage),
        "warehouse": files_and_digests(tmp_path).get("warehouse.duckdb"),
    }
    capped = {
        **resources,
        "taxi_source": TaxiSourceResource(
            base_url=source.url, landing_dir=str(tmp_path / "landing"), **ceiling
        ),
    }

    result = materialize(capped, raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    # The rows are read where they are cleaned: the raw step only kept the file.
    assert failure.step_key == "cleaned_yellow_trips"
    message = str(failure.event_specific_data.error)
    assert JANUARY_FILE in message
    for fragment in [*named, "Every sink is unchanged"]:
        assert fragment in message
    written = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert written == {"raw_yellow_trips"}
    assert partition_state(postgres) == before["postgres"]
    assert files_and_digests(tmp_path / "lake") == before["lake"]
    assert files_and_digests(cleaned_stage) == before["staging"]
    assert files_and_digests(tmp_path).get("warehouse.duckdb") == before["warehouse"]


@pytest.mark.parametrize("bad_batch", ["middle", "last"])
def test_one_bad_batch_among_many_fails_the_blocking_check_and_nothing_is_written(
    tmp_path, source, postgres, monkeypatch, bad_batch
):
    resources = pipeline_resources(tmp_path, source.url, postgres)
    small_batches(monkeypatch)
    real_rule, with_drops = clean.kept_trips, []

    def noting(dataset, trips: pa.RecordBatch) -> tuple[pa.RecordBatch, dict]:
        kept, counts = real_rule(dataset, trips)
        with_drops.append(len(kept) < len(trips))
        return kept, counts

    monkeypatch.setattr(clean, "kept_trips", noting)
    assert materialize(resources).success
    good_postgres, good_lake = partition_state(postgres), files_and_digests(tmp_path / "lake")
    # Fault injection: the cleaning rule forgets itself for one batch with zero-passenger
    # trips to let through: the eleventh such batch, in the middle of the month, or the last.
    dropping = [number for number, dropped in enumerate(with_drops) if dropped]
    bad = dropping[10] if bad_batch == "middle" else dropping[-1]
    calls, leaked = itertools.count(), []

    def forgets_once(dataset, trips: pa.RecordBatch) -> tuple[pa.RecordBatch, dict]:
        kept, counts = real_rule(dataset, trips)
        if next(calls) == bad:
            leaked.append(len(trips) - len(kept))
            return trips, {}
        return kept, counts

    monkeypatch.setattr(clean, "kept_trips", forgets_once)

    result = materialize(resources, raise_on_error=False)

    assert not result.success
    assert next(calls) > 40, "the month must have gone through many batches"
    assert bad >= 10 and leaked, f"the {bad_batch} batch with zero-passenger trips, {bad}, leaked"
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "no_zero_passenger_trips"
    ]
    assert not evaluation.passed
    assert evaluation.metadata["failing_rows"].value == leaked[0]
    written = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert written == {"raw_yellow_trips", "cleaned_yellow_trips"}
    assert partition_state(postgres) == good_postgres
    assert files_and_digests(tmp_path / "lake") == good_lake


def test_notebooks_still_load_a_month_or_a_day_as_one_dataframe(tmp_path, source, postgres):
    resources = pipeline_resources(tmp_path, source.url, postgres)
    run_everything(resources)
    notebook = dg.Definitions(assets=defs.assets, resources=resources)

    month = notebook.load_asset_value("cleaned_yellow_trips", partition_key=JANUARY)
    lake_month = notebook.load_asset_value("yellow_trips_parquet", partition_key=JANUARY)
    day = notebook.load_asset_value("yellow_trips_by_day", partition_key="2021-01-02")

    assert isinstance(month, pd.DataFrame) and isinstance(lake_month, pd.DataFrame)
    assert len(month) == len(lake_month) == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
    assert isinstance(day, pd.DataFrame)
    assert len(day) == (month["tpep_pickup_datetime"].dt.date.astype(str) == "2021-01-02").sum()


def test_the_raw_month_is_the_landed_file_itself_and_a_notebook_still_reads_its_mapped_rows(
    tmp_path, source, postgres
):
    resources = pipeline_resources(tmp_path, source.url, postgres)
    result = materialize(resources, selection="raw_yellow_trips cleaned_yellow_trips")

    [raw] = result.asset_materializations_for_node("raw_yellow_trips")
    kept = Path(raw.metadata["path"].value)
    landed = tmp_path / "landing" / JANUARY_FILE
    # No copy of the rows: the stage is the landed file, linked, under the source's name.
    assert kept.name == JANUARY_FILE and kept.read_bytes() == landed.read_bytes()
    assert os.stat(kept).st_ino == os.stat(landed).st_ino
    assert not list((tmp_path / "staging" / "raw_yellow_trips").rglob("*.parquet"))
    [cleaned] = result.asset_materializations_for_node("cleaned_yellow_trips")
    assert cleaned.metadata[ROWS_READ_KEY].value == REAL_ROWS
    assert cleaned.metadata["dagster/row_count"].value == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS

    notebook = dg.Definitions(assets=defs.assets, resources=resources)
    month = notebook.load_asset_value("raw_yellow_trips", partition_key=JANUARY)
    assert isinstance(month, pd.DataFrame)
    assert list(month.columns) == list(YELLOW.canonical_columns)
    assert len(month) == REAL_ROWS
    assert (month["passenger_count"].fillna(0) <= 0).sum() == REAL_ZERO_PASSENGER_ROWS
    assert str(month["tpep_pickup_datetime"].dtype) == "datetime64[us]"


def test_a_rematerialized_raw_month_replaces_its_file_and_an_old_parquet_stage_still_reads(
    tmp_path, source, postgres
):
    """Staging written by earlier code held the raw month's rows as Parquet: the cleaning reads
    that while no recipe stands beside it; the next raw run replaces it. Runs keep the month's
    file and the one before it, never more."""
    resources = pipeline_resources(tmp_path, source.url, postgres)
    folder = tmp_path / "staging" / "raw_yellow_trips"
    landed = tmp_path / "landing" / JANUARY_FILE
    source_resource = resources["taxi_source"]
    source_resource.fetch(YELLOW, "2021-01", log=print)
    _, trips = source_resource.trips(YELLOW, landed)
    write_staged(folder / f"{JANUARY}.parquet", trips, setting="TAXI_HOME")

    from_old_stage = materialize(resources, selection="cleaned_yellow_trips")

    [cleaned] = from_old_stage.asset_materializations_for_node("cleaned_yellow_trips")
    assert cleaned.metadata["dagster/row_count"].value == REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
    for _ in range(3):
        assert materialize(resources, selection="raw_yellow_trips").success
    kept = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert len(kept) == 3 and f"{JANUARY}.recipe.json" in kept, kept
    assert all((folder / name / JANUARY_FILE).exists() for name in kept if "recipe" not in name)
    assert materialize(resources, selection="cleaned_yellow_trips").success


def test_a_landing_folder_on_another_file_system_is_copied_into_staging(tmp_path, source, postgres):
    """/dev/shm is a tmpfs, staging is not: no hard link can join them, so the file is copied."""
    landing = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="taxi-landing-"))
    try:
        resources = {
            **pipeline_resources(tmp_path, source.url, postgres),
            "taxi_source": TaxiSourceResource(base_url=source.url, landing_dir=str(landing)),
        }
        result = materialize(resources, selection="raw_yellow_trips cleaned_yellow_trips")

        [raw] = result.asset_materializations_for_node("raw_yellow_trips")
        kept = Path(raw.metadata["path"].value)
        assert os.stat(kept).st_dev != os.stat(landing / JANUARY_FILE).st_dev
        assert kept.read_bytes() == (landing / JANUARY_FILE).read_bytes()
        [cleaned] = result.asset_materializations_for_node("cleaned_yellow_trips")
        assert cleaned.metadata[ROWS_READ_KEY].value == REAL_ROWS
    finally:
        shutil.rmtree(landing)


def check_outcomes(result) -> dict[str, tuple[bool, dict]]:
    return {
        e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items()})
        for e in result.get_asset_check_evaluations()
    }


def test_the_checks_count_in_the_cleaning_pass_exactly_what_reading_the_stage_counts(
    tmp_path, source, postgres
):
    """The cleaning counts the checks' figures as its batches pass, and the staged month keeps
    them in its footer, where the checks read them; a stage without them (staged by earlier
    code) is read and counted instead. Both ways give the same results."""
    # The real month with counts for the checks to find: trips dropped off before they were
    # picked up, an unknown vendor, pickups years away.
    header, *rows = gzip.decompress((DATA / JANUARY_FILE).read_bytes()).decode().splitlines()
    for number in range(1, 31):
        fields = rows[number].split(",")
        if number <= 10:
            fields[1], fields[2] = fields[2], fields[1]
        elif number <= 20:
            fields[0] = "99"
        else:
            fields[1] = "2009" + fields[1][4:]
        rows[number] = ",".join(fields)
    source.publish_bytes("2021-01", gzip.compress("\n".join([header, *rows, ""]).encode()))
    resources = pipeline_resources(tmp_path, source.url, postgres)
    instance = dg.DagsterInstance.ephemeral()
    checks = dg.AssetSelection.checks_for_assets("cleaned_yellow_trips")
    month = materialize(
        resources,
        instance=instance,
        selection=dg.AssetSelection.assets("raw_yellow_trips", "cleaned_yellow_trips") | checks,
    )
    from_the_cleaning = check_outcomes(month)
    staged = tmp_path / "staging" / "yellow_trips" / f"{JANUARY}.parquet"
    assert PRODUCER_METADATA_KEY.encode() in pq.ParquetFile(staged).metadata.metadata
    pq.write_table(pq.read_table(staged).replace_schema_metadata(None), staged)
    assert PRODUCER_METADATA_KEY.encode() not in (pq.ParquetFile(staged).metadata.metadata or {})

    # The checks alone on the month, as the UI's "Execute checks" runs them.
    from_reading = check_outcomes(
        materialize(
            resources,
            partition_key=None,
            selection=checks,
            instance=instance,
            tags={"dagster/partition": JANUARY},
        )
    )

    assert from_reading == from_the_cleaning
    failing = {name: metadata.get("failing_rows") for name, (_, metadata) in from_reading.items()}
    assert failing["dropoff_not_before_pickup"] > 0 and failing["pickups_near_file_month"] > 0
    assert from_the_cleaning["known_vendor_ids"][1]["unknown_ids"] == [99]
    assert from_the_cleaning["pickups_near_file_month"][1]["earliest_pickup"].startswith("2009")
