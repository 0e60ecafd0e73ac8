"""Fail fast, name the setting: an unreachable lake or warehouse, a locked DuckDB file, a wrong
DAGSTER_PG_URL and a refused Postgres each end in one clear line naming what to change.

The time bounds are generous (the loaded machine): they tell "within seconds" from the minutes
of silence these faults used to cost, not a speed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from taxi_assets import console
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseClient
from taxi_assets.storage.bigquery_tables import bigquery_client
from taxi_assets.storage.duckdb_tables import WarehouseLocked, connect_waiting_for_lock
from taxi_assets.storage.local_postgres import free_port
from taxi_assets.defs.resources import LakeResource
from taxi_assets_tests.test_cli_live import cli, project_env

FAST = 60.0  # seconds; the faults below used to take from 100 s to 7 minutes


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_an_unreachable_gcs_endpoint_fails_fast_naming_its_setting():
    # The gcp profile's lake, with the writes' long retry limit.
    lake = LakeResource(root="gs://lake", endpoint=closed_endpoint(), retry_time_limit_seconds=300)
    started = time.monotonic()

    with pytest.raises(OSError, match="cannot be reached") as failed:
        lake.check_reachable()

    assert time.monotonic() - started < FAST
    assert "TAXI_GCS_ENDPOINT" in str(failed.value)


def test_an_unreachable_bigquery_endpoint_fails_fast_naming_its_setting():
    endpoint = closed_endpoint()
    started = time.monotonic()

    with pytest.raises(ConnectionError, match="cannot be reached") as failed:
        BigQueryWarehouseClient.ensure_schema_exists(
            SimpleNamespace(resource_config={"api_endpoint": endpoint}),
            SimpleNamespace(database="test-project", schema="ny_taxi"),
            bigquery_client("test-project", api_endpoint=endpoint),
        )

    assert time.monotonic() - started < FAST
    assert "TAXI_BQ_ENDPOINT" in str(failed.value)


def test_a_locked_duckdb_file_fails_in_seconds_naming_file_and_holder(tmp_path):
    database = str(tmp_path / "warehouse.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"connection = duckdb.connect({database!r})\n"
            "print('holding', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        said: list[str] = []
        started = time.monotonic()

        with pytest.raises(WarehouseLocked) as failed:
            connect_waiting_for_lock(database, {}, said.append)

        assert time.monotonic() - started < FAST
        assert database in str(failed.value)
        assert f"(PID {holder.pid})" in str(failed.value)
        assert said == [f"the DuckDB warehouse {database} is locked by {said[0].split(' by ')[1]}"]
        assert f"(PID {holder.pid})" in said[0]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # Once the holder is gone, the warehouse opens.
    connect_waiting_for_lock(database, {}).close()


def test_a_wrong_dagster_pg_url_says_so_in_one_line_without_the_password(tmp_path, http_source):
    env = project_env(tmp_path, http_source.url, free_port())
    env["DAGSTER_PG_URL"] = f"postgresql://bob:s3cret@127.0.0.1:{free_port()}/dagster"
    try:
        failed = cli(env, "run", "--month", "2021-01")
    finally:
        cli(env, "stop")

    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line and "XDG_RUNTIME_DIR" not in line]
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("DAGSTER_PG_URL (postgresql://bob:***@127.0.0.1:")
    assert "Connection refused" in lines[0]
    assert "s3cret" not in failed.stdout + failed.stderr


def failure(*messages: tuple[str, str]) -> SimpleNamespace:
    """A step failure as Dagster records it: the error, its cause, its cause's cause."""
    error = None
    for cls_name, message in reversed(messages):
        error = SimpleNamespace(cls_name=cls_name, message=message, cause=error, context=None)
    return SimpleNamespace(error=error, user_failure_data=None)


@pytest.mark.parametrize(
    "cls_name, message, setting",
    [
        (
            "OperationalError",
            'FATAL:  password authentication failed for user "taxi"',
            "TAXI_PG_PASSWORD",
        ),
        ("ProgrammingError", '[libpq] FATAL: role "taxi" does not exist', "TAXI_PG_PASSWORD"),
        (
            "OperationalError",
            'connection to server at "10.0.0.5", port 5433 failed: Connection refused',
            "TAXI_PG_HOST and TAXI_PG_PORT",
        ),
        (
            "OperationalError",
            'could not translate host name "db.example" to address',
            "TAXI_PG_HOST and TAXI_PG_PORT",
        ),
        ("OperationalError", 'FATAL:  database "ny_taxi" does not exist', "TAXI_PG_DB"),
    ],
)
def test_a_postgres_failures_hint_names_the_setting_behind_its_cause(cls_name, message, setting):
    step_failure = failure(
        ("DagsterExecutionHandleOutputError", "Error handling output"), (cls_name, message)
    )

    assert console.setting_for(step_failure).startswith(setting)
