"""Runs killed with SIGKILL in the middle of each sink's write, and the next run after them.

Every sink holds the real January (and its first week of days) as its last good state; then
the source publishes a new January (the real rows twice over, so each day's count doubles and
"old" and "new" cannot be confused), and a run writing that into one sink kills itself at a
chosen point (see killed_run.py). Afterwards each sink holds exactly its old state or exactly
its new one, what a reader sees never lacks a day, and the next run of the same asset, started
as usual, completes and leaves no temporary file, version or staging table behind.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.storage import month_versions as month_publishes
from taxi_assets.storage.month_versions import object_version
from taxi_assets.defs.resources import LakeResource
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import (
    JANUARY,
    MONTHLY,
    materialize,
    materialize_days,
    partition_state,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_walking_skeleton import REAL_ROWS

pytestmark = pytest.mark.faults
pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

JANUARY_FILE = "yellow_tripdata_2021-01.csv.gz"
# The sample's trips are picked up on 2021-01-01 and 02 (and 16 on 2020-12-31); the 3rd has none.
WEEK = ("2021-01-01", "2021-01-03")
WEEK_DAYS = ["2021-01-01", "2021-01-02", "2021-01-03"]
LAKE = "taxi_assets.storage.lake_parquet"
LAKE_VERSIONS = "taxi_assets.storage.lake_versions"
MONTH_PUBLISHES = "taxi_assets.storage.month_versions"
MONTH_CHECK = dg.AssetCheckKey(dg.AssetKey("yellow_trips_parquet"), "lake_month_matches_postgres")


def doubled_january() -> bytes:
    with gzip.open(sample(JANUARY_FILE), "rb") as text:
        header, rows = text.readline(), text.read()
    if not rows.endswith(b"\n"):
        rows += b"\r\n"
    return gzip.compress(header + rows * 2, compresslevel=1)


@dataclasses.dataclass
class Deployment:
    state: Path
    resources: dict
    source_url: str
    postgres: object
    bigquery: dict | None = None  # BigQueryWarehouseIOManager fields, instead of DuckDB
    lake: dict | None = None  # LakeResource fields, instead of a folder under `state`

    @property
    def lake_fs(self) -> pafs.FileSystem:
        return self.resources["lake_monthly_io_manager"].lake.filesystem()

    def killed_run(self, selection: str, kill: dict, days: tuple[str, str] | None = None) -> None:
        """A run of `selection` in its own process, killed at `kill`; it must die of SIGKILL."""
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "taxi_assets_tests.killed_run",
                self.spec(selection, kill, days),
            ],
            capture_output=True,
            text=True,
        )
        assert process.returncode == -signal.SIGKILL, (
            f"the run should have been killed at {kill}:\n{process.stderr[-3000:]}"
        )

    def spec(self, selection: str, kill: dict | None, days: tuple[str, str] | None = None) -> str:
        """killed_run's argument: a run of `selection` here, killed at `kill` (None: never)."""
        postgres = {
            f.name: getattr(self.postgres, f.name)
            for f in dataclasses.fields(self.postgres)
            if f.name != "server"
        }
        spec = {
            "kill": kill,
            "postgres": postgres,
            "state": str(self.state),
            "source_url": self.source_url,
            "selection": selection,
        }
        if days:
            spec["days"] = days
        if self.bigquery:
            spec["bigquery"] = self.bigquery
        if self.lake:
            spec["lake"] = self.lake
        return json.dumps(spec)


@pytest.fixture
def deployment(request, tmp_path, http_source, postgres) -> Deployment:
    """Every sink at its last good state; the source already offers the new January.

    The lake is a local folder, or (parametrized "gcs") a prefix in the GCS emulator's bucket.
    """
    lake = None
    if getattr(request, "param", "local") == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        lake = {
            "root": f"gs://{emulator.bucket}/lake-{uuid.uuid4().hex[:8]}",
            "endpoint": emulator.url,
        }
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    resources = pipeline_resources(
        tmp_path, http_source.url, postgres, lake=LakeResource(**lake) if lake else None
    )
    assert materialize(resources).success
    assert materialize_days(resources, *WEEK).success
    http_source.publish_bytes("2021-01", doubled_january())
    (Path(resources["taxi_source"].landing_dir) / JANUARY_FILE).unlink()
    return Deployment(tmp_path, resources, http_source.url, postgres, lake=lake)


def files(fs: pafs.FileSystem, folder: str = "") -> list[str]:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def leftovers(fs: pafs.FileSystem) -> list[str]:
    """Temporary files and unswitched versions: what a dead writer leaves."""
    return [p for p in files(fs) if p.endswith(".tmp") or "_versions/" in p]


def local(folder: Path) -> pafs.FileSystem:
    return pafs.SubTreeFileSystem(str(folder), pafs.LocalFileSystem())


def rows_of(fs: pafs.FileSystem, path: str) -> int:
    with fs.open_input_file(path) as source:
        return pq.ParquetFile(source).metadata.num_rows


# --- what readers of each daily layout see ----------------------------------------------------

LAYOUTS = {
    # asset: (its manifest folder, the day's files as a folder-listing reader finds them)
    "yellow_trips_by_day": (
        "nyc_taxi_data_by_day",
        lambda fs, day: [
            p
            for p in files(fs, f"nyc_taxi_data_by_day/tpep_pickup_date={day}")
            if not p.rpartition("/")[2].startswith((".", "_"))
        ],
    ),
    "yellow_trips_daily_export": (
        "_daily_exports/nyc_taxi_data",
        lambda fs, day: [
            p
            for p in [f"{day.replace('-', '/')}/nyc_taxi_data.parquet"]
            if fs.get_file_info(p).is_file
        ],
    ),
}


def through_manifest(fs: pafs.FileSystem, asset: str) -> dict[str, int]:
    """Each day's rows as the IO managers read them: the files the manifest names."""
    with fs.open_input_file(f"{LAYOUTS[asset][0]}/_manifest.json") as source:
        manifest = json.loads(source.read())["days"]
    return {
        day: rows_of(fs, manifest[day]["path"]) if manifest[day]["path"] else 0 for day in WEEK_DAYS
    }


def through_folders(fs: pafs.FileSystem, asset: str) -> dict[str, int | None]:
    """Each day's rows as a reader that lists folders sees them (None: no file at all)."""
    found = {day: LAYOUTS[asset][1](fs, day) for day in WEEK_DAYS}
    return {
        day: sum(rows_of(fs, p) for p in paths) if paths else None for day, paths in found.items()
    }


STAGED = "before the switch"
SWITCHED = "after the switch"
LAKE_KILLS = {
    "one_day_staged": (dict(target=f"{LAKE}:ParquetObject.publish", nth=2), STAGED),
    "all_staged": (dict(target=f"{LAKE_VERSIONS}:VersionedDays._write_manifest"), STAGED),
    "mid_publish": (dict(target=f"{LAKE_VERSIONS}:copy_object", nth=2), SWITCHED),
    "published": (dict(target=f"{LAKE_VERSIONS}:VersionedDays._write_manifest", nth=2), SWITCHED),
    "versions_not_yet_deleted": (
        dict(target=f"{LAKE_VERSIONS}:VersionedDays._write_manifest", nth=2, when="after"),
        SWITCHED,
    ),
}


@pytest.mark.parametrize("deployment", ["local", "gcs"], indirect=True)
@pytest.mark.parametrize("asset", list(LAYOUTS))
@pytest.mark.parametrize("moment", list(LAKE_KILLS))
def test_daily_layout_killed_mid_range_is_all_old_or_all_new(deployment, asset, moment):
    """On GCS, which has no rename, the switch is the manifest's single object write."""
    lake = deployment.lake_fs
    old = through_manifest(lake, asset)
    empty_day = None if asset == "yellow_trips_by_day" else 0  # no folder, or an empty file
    assert through_folders(lake, asset) == {**old, "2021-01-03": empty_day}
    assert old["2021-01-01"] and old["2021-01-02"] and not old["2021-01-03"]
    assert materialize(
        deployment.resources, selection="raw_yellow_trips cleaned_yellow_trips"
    ).success
    kill, expected = LAKE_KILLS[moment]

    deployment.killed_run(asset, kill, days=WEEK)

    new = {day: 2 * rows for day, rows in old.items()}
    assert through_manifest(lake, asset) == (old if expected == STAGED else new)
    seen = {**through_folders(lake, asset), "2021-01-03": 0}
    # A folder reader sees each day whole, old or new, and never a day missing.
    assert all(seen[day] in (old[day], new[day]) for day in WEEK_DAYS), seen
    if expected == STAGED:
        assert seen == old

    assert materialize_days(deployment.resources, *WEEK, selection=asset).success
    assert through_manifest(lake, asset) == new
    assert through_folders(lake, asset) == {**new, "2021-01-03": empty_day}
    assert leftovers(lake) == []


# --- the monthly object and staging -------------------------------------------------------------


def test_monthly_object_killed_before_it_is_published_keeps_the_old_object(deployment):
    lake = deployment.lake_fs
    root = Path(deployment.resources["lake_monthly_io_manager"].lake.root)
    month = root / "nyc_taxi_data/2021-01.parquet"
    old, old_rows = month.read_bytes(), rows_of(lake, "nyc_taxi_data/2021-01.parquet")
    assert materialize(
        deployment.resources, selection="raw_yellow_trips cleaned_yellow_trips"
    ).success

    deployment.killed_run("yellow_trips_parquet", dict(target=f"{LAKE}:ParquetObject.publish"))

    assert month.read_bytes() == old
    assert [Path(p).name[:17] for p in leftovers(lake)] == [".2021-01.parquet."]
    assert materialize(deployment.resources, selection="yellow_trips_parquet").success
    assert rows_of(lake, "nyc_taxi_data/2021-01.parquet") == 2 * old_rows
    assert leftovers(lake) == []


def month_versions(deployment) -> month_publishes.MonthVersions | None:
    uri = deployment.resources["postgres_io_manager"].postgres.uri()
    return month_publishes.versions(uri, "ny_taxi.yellow_cab_data", JANUARY)


def run_month_check(resources: dict, instance: dg.DagsterInstance):
    """The month object's check on its own, as the UI's "Execute check" runs it."""
    return materialize(
        resources,
        partition_key=None,
        selection=dg.AssetSelection.checks(MONTH_CHECK),
        instance=instance,
    )


@pytest.mark.parametrize("deployment", ["local", "gcs"], indirect=True)
@pytest.mark.parametrize("next_touch", ["the_months_next_run", "the_check_alone"])
def test_killed_between_the_postgres_commit_and_the_publish_is_rolled_forward(
    deployment, next_touch
):
    lake, month = deployment.lake_fs, "nyc_taxi_data/2021-01.parquet"
    old, old_rows = partition_state(deployment.postgres), rows_of(lake, month)
    good = month_versions(deployment)
    assert good.postgres_run == good.lake_run == object_version(lake, month)

    # The month's run dies once its Postgres swap committed, before the object is published.
    deployment.killed_run(MONTHLY, dict(target=f"{MONTH_PUBLISHES}:publish_staged"))

    killed = month_versions(deployment)
    assert partition_state(deployment.postgres)[0] == 2 * old[0]
    assert rows_of(lake, month) == old_rows
    assert killed.postgres_run != good.postgres_run and killed.lake_run == good.lake_run
    # The new object, whole, under its hidden name: what the swap recorded.
    assert leftovers(lake) == [killed.staged_object]
    assert rows_of(lake, killed.staged_object) == 2 * old_rows
    assert object_version(lake, killed.staged_object) == killed.postgres_run

    instance = dg.DagsterInstance.ephemeral()
    if next_touch == "the_check_alone":
        result = run_month_check(deployment.resources, instance)
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.passed, evaluation.description
    else:
        result = materialize(deployment.resources, instance=instance)
    assert result.success

    assert partition_state(deployment.postgres)[0] == 2 * old[0]
    assert rows_of(lake, month) == 2 * old_rows
    settled = month_versions(deployment)
    assert settled.lake_run == settled.postgres_run == object_version(lake, month)
    if next_touch == "the_check_alone":
        assert settled.postgres_run == killed.postgres_run
    # Whatever touched the month first published the killed run's object before anything else.
    assert any(
        f"run {killed.postgres_run}'s {month} published" in entry.user_message
        for entry in instance.all_logs(result.run_id)
    )
    assert settled.staged_object is None
    assert leftovers(lake) == []


def test_a_lake_write_failing_before_the_postgres_commit_keeps_both_sinks_old(deployment):
    """The month's lake folder on a real 16 MiB file system holding the old object (a tmpfs,
    mounted in a user namespace of the run's own, as test_guards does): the month's object,
    written beside the Postgres load, cannot be staged there; the load is not committed."""
    lake, month = deployment.lake_fs, "nyc_taxi_data/2021-01.parquet"
    folder = deployment.state / "lake/nyc_taxi_data"
    old, old_object = (
        partition_state(deployment.postgres),
        (folder / "2021-01.parquet").read_bytes(),
    )
    good = month_versions(deployment)
    saved = deployment.state / "saved_month"
    shutil.copytree(folder, saved)

    run = subprocess.run(
        [
            *("unshare", "--user", "--map-root-user", "--mount", "sh", "-c"),
            'mount -t tmpfs -o size=16m none "$1" && cp -a "$2"/. "$1" && '
            'exec "$3" -m taxi_assets_tests.killed_run "$4"',
            *("sh", str(folder), str(saved), sys.executable, deployment.spec(MONTHLY, None)),
        ],
        capture_output=True,
        text=True,
    )

    assert run.returncode == 4, run.stderr[-3000:]
    assert "[Errno 28]" in run.stdout.splitlines()[-1], run.stdout[-3000:]
    assert partition_state(deployment.postgres) == old
    assert (folder / "2021-01.parquet").read_bytes() == old_object
    assert month_versions(deployment) == good
    assert leftovers(lake) == []

    assert materialize(deployment.resources).success
    assert partition_state(deployment.postgres)[0] == 2 * old[0]
    assert rows_of(lake, month) == 2 * rows_of(local(saved), "2021-01.parquet")
    now = month_versions(deployment)
    assert now.lake_run == now.postgres_run != good.postgres_run


def test_staged_month_killed_before_its_rename_is_rewritten_cleanly(deployment):
    staging = Path(deployment.resources["io_manager"].base_dir)
    cleaned = staging / "yellow_trips" / f"{JANUARY}.parquet"
    old = cleaned.read_bytes()

    deployment.killed_run(
        "raw_yellow_trips cleaned_yellow_trips", dict(target="os:replace", match="/yellow_trips/.")
    )

    assert cleaned.read_bytes() == old
    assert len(leftovers(local(staging))) == 1
    assert materialize(
        deployment.resources, selection="raw_yellow_trips cleaned_yellow_trips"
    ).success
    assert leftovers(local(staging)) == []


def test_raw_month_killed_before_its_recipe_is_published_keeps_the_month_it_had(deployment):
    """The new file is linked in first, the recipe renamed over the old one last: killed in
    between, the month is still the old file, whole; the next run publishes the new one and
    clears what the dead one left."""
    staging = Path(deployment.resources["io_manager"].base_dir)
    raw = staging / "raw_yellow_trips"
    recipe = raw / f"{JANUARY}.recipe.json"
    old = recipe.read_bytes()

    deployment.killed_run(
        "raw_yellow_trips", dict(target="os:replace", match=f"{JANUARY}.recipe.json")
    )

    assert recipe.read_bytes() == old
    assert len(leftovers(local(staging))) == 1
    from_old = materialize(deployment.resources, selection="cleaned_yellow_trips")
    [cleaned] = from_old.asset_materializations_for_node("cleaned_yellow_trips")
    assert cleaned.metadata[ROWS_READ_KEY].value == REAL_ROWS
    assert materialize(deployment.resources, selection="raw_yellow_trips").success
    from_new = materialize(deployment.resources, selection="cleaned_yellow_trips")
    [cleaned] = from_new.asset_materializations_for_node("cleaned_yellow_trips")
    assert cleaned.metadata[ROWS_READ_KEY].value == 2 * REAL_ROWS
    assert leftovers(local(staging)) == []
    # The month's file and the one it replaced (a reader may still be on it); not the dead run's.
    assert len([p for p in raw.iterdir() if p.is_dir()]) == 2


# --- Postgres and the warehouse --------------------------------------------------------------


@pytest.mark.parametrize(
    "kill, expected",
    [
        (dict(target="adbc_driver_manager.dbapi:Cursor.adbc_ingest"), "old"),
        (
            dict(target="taxi_assets.storage.postgres_swap:_swap"),
            "old",
        ),
        (
            dict(
                target="taxi_assets.defs.io_managers.postgres_partitions:"
                "PostgresPandasIOManager._publish_month_object"
            ),
            "new",
        ),
    ],
    ids=["copying", "staged_not_swapped", "swapped"],
)
def test_postgres_killed_mid_load_is_all_old_or_all_new(deployment, kill, expected):
    pg = deployment.postgres
    old = partition_state(pg)
    assert materialize(
        deployment.resources, selection="raw_yellow_trips cleaned_yellow_trips"
    ).success

    deployment.killed_run("ny_taxi/yellow_cab_data", kill)

    state = partition_state(pg)
    if expected == "old":
        assert state == old
    else:
        assert state[0] == 2 * old[0]
    assert materialize(deployment.resources, selection="ny_taxi/yellow_cab_data").success
    assert partition_state(pg)[0] == 2 * old[0]
    tables = query(
        pg,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
        "n.oid = c.relnamespace LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
        "WHERE n.nspname = 'ny_taxi' AND c.relkind = 'r' AND i.inhrelid IS NULL",
    )
    assert tables == [], "a staging table was left behind"


def warehouse_days(deployment) -> dict[str, int]:
    with duckdb.connect(deployment.resources["warehouse_io_manager"].database) as conn:
        return dict(
            conn.sql(
                "SELECT CAST(CAST(tpep_pickup_datetime AS DATE) AS VARCHAR), "
                "count(*) FROM ny_taxi.yellow_trips GROUP BY 1"
            ).fetchall()
        )


@pytest.mark.parametrize(
    "kill",
    [
        dict(
            target="taxi_assets.defs.io_managers.duckdb:DuckDBWarehouseClient.delete_table_slice",
            when="after",
        ),
        dict(
            target="taxi_assets.defs.io_managers.duckdb:DuckDBWarehousePandasTypeHandler.handle_output",
            when="after",
        ),
    ],
    ids=["deleted", "inserted_not_committed"],
)
def test_warehouse_killed_mid_replace_keeps_every_day(deployment, kill):
    old = warehouse_days(deployment)
    assert sorted(old) == WEEK_DAYS[:2]  # the 3rd has no trips
    assert materialize(
        deployment.resources, selection="raw_yellow_trips cleaned_yellow_trips"
    ).success
    assert materialize_days(deployment.resources, *WEEK, selection="yellow_trips_by_day").success

    deployment.killed_run("ny_taxi/yellow_trips", kill, days=WEEK)

    assert warehouse_days(deployment) == old
    assert materialize_days(deployment.resources, *WEEK, selection="ny_taxi/yellow_trips").success
    assert warehouse_days(deployment) == {day: 2 * n for day, n in old.items()}


BQ_DATASET = "ny_taxi_killed"  # the session's emulator is shared; this module's own dataset


def bigquery_days(client) -> dict[str, int]:
    rows = client.query(
        "SELECT CAST(CAST(tpep_pickup_datetime AS DATE) AS STRING), COUNT(*) "
        f"FROM {BQ_DATASET}.yellow_trips GROUP BY 1"
    ).result()
    return {row[0]: row[1] for row in rows}


def test_bigquery_killed_between_load_and_swap_keeps_every_day(
    tmp_path, http_source, postgres, bigquery_emulator
):
    client = bigquery_emulator.client()
    client.query(f"DROP TABLE IF EXISTS {BQ_DATASET}.yellow_trips").result()
    bigquery = dict(
        project=bigquery_emulator.project,
        dataset=BQ_DATASET,
        api_endpoint=bigquery_emulator.endpoint,
    )
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", JANUARY_FILE)
    resources = pipeline_resources(
        tmp_path,
        http_source.url,
        postgres,
        warehouse_io_manager=BigQueryWarehouseIOManager(**bigquery),
    )
    assert materialize(resources).success
    assert materialize_days(resources, *WEEK).success
    old = bigquery_days(client)
    assert sorted(old) == WEEK_DAYS[:2]
    http_source.publish_bytes("2021-01", doubled_january())
    (Path(resources["taxi_source"].landing_dir) / JANUARY_FILE).unlink()
    assert materialize(resources, selection="raw_yellow_trips cleaned_yellow_trips").success
    assert materialize_days(resources, *WEEK, selection="yellow_trips_by_day").success
    deployment = Deployment(tmp_path, resources, http_source.url, postgres, bigquery)

    # The new rows are in the staging table; the transaction that swaps them in never runs.
    deployment.killed_run(
        "ny_taxi/yellow_trips",
        dict(target="taxi_assets.defs.io_managers.bigquery:_load", when="after"),
        days=WEEK,
    )

    assert bigquery_days(client) == old
    tables = [t.table_id for t in client.list_tables(BQ_DATASET)]
    assert len(tables) == 2 and any("__load_" in name for name in tables), tables
    assert materialize_days(resources, *WEEK, selection="ny_taxi/yellow_trips").success
    assert bigquery_days(client) == {day: 2 * n for day, n in old.items()}
    assert [t.table_id for t in client.list_tables(BQ_DATASET)] == ["yellow_trips"]
