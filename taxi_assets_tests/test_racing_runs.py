"""Two `make run` started at the same moment on a fresh instance, as a busy user starts them:
the same month twice, two months, yellow beside green. Both succeed (a run waits for the
other's pool where they write one table), and every sink holds the months whole.

Each case runs on a new TAXI_HOME (its own embedded PostgreSQL, created by the runs
themselves) and is repeated: the races are in the first moments of a new instance.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import psycopg
import pyarrow.parquet as pq
import pytest

from taxi_assets import console
from taxi_assets.datasets import DATASETS
from taxi_assets.storage.local_postgres import free_port
from taxi_assets_tests.dagster_processes import REPO_ROOT
from taxi_assets_tests.green_files import green_csv_gz
from taxi_assets_tests.test_cli_live import RUN_TIMEOUT, cli, project_env

REPEATS = 2


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "taxi_assets.cli", "run", *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def rows_per_month(env: dict[str, str], table: str) -> dict[str, int]:
    url = f"postgresql://postgres@127.0.0.1:{env['TAXI_PG_PORT']}/postgres"
    with psycopg.connect(url) as conn:
        return dict(
            conn.execute(f"SELECT source_month::text, count(*) FROM {table} GROUP BY 1").fetchall()
        )


@pytest.mark.parametrize("attempt", range(REPEATS))
@pytest.mark.parametrize(
    "first, second",
    [
        (("--month", "2021-01"), ("--month", "2021-01")),
        (("--month", "2020-01"), ("--month", "2021-01")),
        (("--month", "2021-01"), ("--month", "2021-01", "--dataset", "green")),
    ],
    ids=["same-month", "two-months", "yellow-beside-green"],
)
def test_two_runs_started_together_on_a_fresh_instance_both_succeed(
    tmp_path, http_source, first, second, attempt
):
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    http_source.publish("2020-01", "yellow_tripdata_2020-01.csv.gz")
    http_source.publish_bytes("2021-01", green_csv_gz("2021-01"), dataset="green")
    env = project_env(tmp_path, http_source.url, free_port())
    try:
        runs = [start_cli(env, *first), start_cli(env, *second)]
        outputs = [run.communicate(timeout=2 * RUN_TIMEOUT)[0] for run in runs]
        for run, output in zip(runs, outputs):
            assert run.returncode == 0, output
        # Each month whole in Postgres and as the lake's month object: the same rows.
        wanted = {("green" if "green" in a else "yellow", a[1]) for a in (first, second)}
        for name, month in wanted:
            dataset = DATASETS[name]
            in_postgres = rows_per_month(env, dataset.postgres_table)[f"{month}-01"]
            in_lake = pq.read_metadata(
                tmp_path / "taxi_home" / "lake" / dataset.lake_name / f"{month}.parquet"
            ).num_rows
            assert in_postgres == in_lake > 0
    finally:
        cli(env, "stop")


def test_a_run_that_fails_outside_any_step_ends_its_console_with_the_runs_error():
    # As a run that lost the race for a pool's row failed: no step failed, the run did.
    error = SimpleNamespace(
        cls_name="UniqueViolation",
        message="psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint "
        '"concurrency_limits_concurrency_key_key"\n',
        cause=None,
        context=None,
    )
    result = SimpleNamespace(
        run_id="f00",
        dagster_run=SimpleNamespace(job_name="monthly_yellow_trips"),
        all_events=[
            SimpleNamespace(
                event_type_value="RUN_FAILURE", event_specific_data=SimpleNamespace(error=error)
            )
        ],
    )

    lines = console.failure_summary(result, "http://127.0.0.1:3000")

    assert lines[1] == (
        "Cause: UniqueViolation: duplicate key value violates unique constraint "
        '"concurrency_limits_concurrency_key_key"'
    )
