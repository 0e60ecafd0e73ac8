"""`make backfill` as a user runs it: months through every sink, resumed, interrupted, re-run.

The CLI runs as a subprocess with a project of its own (fresh TAXI_HOME, its embedded
PostgreSQL on a free port, DAGSTER_HOME holding the repository's dagster.yaml), from the TLC's
Parquet feed on loopback (tlc_feed.py). First without `make dev` (the CLI drives the backfill
itself), last with its daemon up. Tests run in file order and build on each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets.storage.local_postgres import free_port
from taxi_assets_tests.dagster_processes import (
    REPO_ROOT,
    GraphQLClient,
    healthy_daemons,
    loaded_locations,
    start_process,
    wait_until,
)
from taxi_assets_tests.test_cli_live import cli, project_env
from taxi_assets_tests.test_tlc_feed import expected
from taxi_assets_tests.tlc_feed import TlcFeed, era_2021

TIMEOUT = 900.0
ACTIVE = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass
class Project:
    env: dict[str, str]
    taxi_home: Path
    pg_url: str
    feed: TlcFeed

    def backfill(self, first: str, last: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "taxi_assets.cli", "backfill", "--from", first, "--to", last],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        print(done.stdout, done.stderr)
        return done

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.pg_url) as connection:
            return connection.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        saved = {k: os.environ.get(k) for k in ("DAGSTER_PG_URL", "TAXI_HOME")}
        os.environ.update(DAGSTER_PG_URL=self.env["DAGSTER_PG_URL"], TAXI_HOME=str(self.taxi_home))
        try:
            with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
                yield instance
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def runs(self) -> dict[str, str]:
        with self.instance() as instance:
            return {r.run_id: r.status.value for r in instance.get_runs()}

    def backfills(self) -> dict[str, str]:
        with self.instance() as instance:
            return {b.backfill_id: b.status.value for b in instance.get_backfills()}


@pytest.fixture(scope="module")
def project(tmp_path_factory, _feed) -> Iterator[Project]:
    tmp = tmp_path_factory.mktemp("backfill_live")
    _feed.clear()
    env = project_env(tmp, _feed.url, free_port()) | {"TAXI_SOURCE": "tlc"}
    started = cli(env, "postgres")
    assert started.returncode == 0, started.stderr
    env["DAGSTER_PG_URL"] = started.stdout.strip()
    try:
        yield Project(env, tmp / "taxi_home", started.stdout.strip().split("?")[0], _feed)
    finally:
        cli(env, "stop")
        _feed.clear()


def backfill_with_a_run_started(project: Project, first: str, last: str, tmp_path: Path):
    """`make backfill` in the background, in its own process group as a terminal runs it,
    once one of its runs has started (or it has ended)."""
    process = start_process(
        "backfill",
        [sys.executable, "-m", "taxi_assets.cli", "backfill", "--from", first, "--to", last],
        project.env,
        tmp_path,
    )
    wait_until(
        lambda: "STARTED" in project.runs().values() or not process.alive,
        "a run of the backfill",
        [process],
        timeout=TIMEOUT,
    )
    return process


def months(first: str, last: str) -> list[str]:
    out, month = [], first
    while month <= last:
        out.append(month)
        year, number = int(month[:4]), int(month[5:])
        month = f"{year + number // 12}-{number % 12 + 1:02d}"
    return out


def late_on_the_last_day(month: str) -> pa.Table:
    """The month's file, with its trips picked up before the month (late-filed) moved to the
    previous month's last evening: the one day a next month's file is read for. (Late trips
    of other days land in the warehouse only when a range run happens to read their file too;
    the sinks' totals would then depend on how days were grouped into runs.)"""
    table = era_2021(month)
    start = pa.scalar(dt.datetime.fromisoformat(f"{month}-01"), pa.timestamp("us"))
    early = pc.less(table["tpep_pickup_datetime"].cast(pa.timestamp("us")), start)
    for name, minutes in (("tpep_pickup_datetime", 30), ("tpep_dropoff_datetime", 10)):
        moved = pa.scalar(start.as_py() - dt.timedelta(minutes=minutes), pa.timestamp("us"))
        column = table[name].cast(pa.timestamp("us"))
        table = table.set_column(
            table.schema.get_field_index(name), name, pc.if_else(early, moved, column)
        )
    return table


def publish(project: Project, *names: str) -> None:
    for month in names:
        project.feed.publish(month, late_on_the_last_day(month))


def day_rows(project: Project, month: str) -> dict[str, int]:
    """Kept trips (some riders) of the month's file by pickup day, read with pyarrow."""
    table = pq.read_table(project.feed.path(month))
    kept = table.filter(pc.fill_null(pc.greater(table["passenger_count"], 0), False))
    days = pc.cast(kept["tpep_pickup_datetime"], pa.date32())
    counts = pc.value_counts(days).to_pylist()
    return {str(c["values"]): c["counts"] for c in counts}


def expected_days(project: Project, built: list[str]) -> int:
    """Trips of the built days: each day's from its month's file, and a month's last day's
    also from the next month's (late-filed)."""
    rows = {month: day_rows(project, month) for month in {d[:7] for d in built}}
    total = 0
    for day in built:
        total += rows[day[:7]].get(day, 0)
        next_day = str(dt.date.fromisoformat(day) + dt.timedelta(days=1))
        if next_day[:7] != day[:7]:
            total += day_rows(project, next_day[:7]).get(day, 0)
    return total


def days_of(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [str(start + dt.timedelta(days=n)) for n in range((end - start).days + 1)]


def assert_sinks_hold(project: Project, taken: list[str], days: list[str]) -> None:
    for month in taken:
        want = expected(project.feed.path(month), month)
        [(rows,)] = project.query(
            "SELECT count(*) FROM ny_taxi.yellow_cab_data WHERE source_month = %s",
            dt.date.fromisoformat(f"{month}-01"),
        )
        assert rows == want["rows"], month
        lake = pq.read_metadata(project.taxi_home / "lake" / "nyc_taxi_data" / f"{month}.parquet")
        assert lake.num_rows == want["rows"], month
    with duckdb.connect(str(project.taxi_home / "warehouse.duckdb"), read_only=True) as warehouse:
        (rows,) = warehouse.execute(
            "SELECT count(*) FROM ny_taxi.yellow_trips "
            "WHERE CAST(tpep_pickup_datetime AS DATE) BETWEEN ? AND ?",
            [days[0], days[-1]],
        ).fetchone()
    assert rows == expected_days(project, days)
    exports = [
        project.taxi_home / "lake" / day.replace("-", "/") / "nyc_taxi_data.parquet" for day in days
    ]
    assert sum(pq.read_metadata(p).num_rows for p in exports) == rows


def test_a_range_that_is_not_one_is_refused_naming_the_setting(project):
    for first, last, named in (
        ("2021-13", "2021-12", "FROM='2021-13' (--from) is not a month"),
        ("2021-02", "$(whoami)", "TO='$(whoami)' (--to) is not a month"),
        ("2021-03", "2021-02", "FROM=2021-03 is after TO=2021-02"),
    ):
        refused = project.backfill(first, last)
        assert refused.returncode != 0 and named in refused.stderr, refused.stderr


def test_a_backfill_without_a_daemon_fills_every_sink_and_names_the_waiting_day(project):
    publish(project, *months("2021-02", "2021-04"))

    done = project.backfill("2021-02", "2021-04")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "No daemon is running" in done.stdout
    assert "dagster - DEBUG" not in done.stdout + done.stderr
    assert "2021-04-30 waits: it also reads 2021-05's file" in done.stdout
    assert_sinks_hold(project, months("2021-02", "2021-04"), days_of("2021-02-01", "2021-04-29"))
    assert not (project.taxi_home / "lake" / "2021/04/30").exists()
    [(backfill_id, status)] = project.backfills().items()
    assert status == "COMPLETED_SUCCESS"
    assert backfill_id in done.stdout
    runs = project.runs()
    assert set(runs.values()) == {"SUCCESS"}
    # A run per month, and the days in ranges: never a run per day.
    assert len(runs) <= 3 + 3, runs
    with project.instance() as instance:
        observed = instance.fetch_observations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("yellow_trips_by_day"), asset_partitions=["2021-04-30"]
            ),
            limit=1,
        ).records
    assert observed[0].asset_observation.metadata["waits_for"].value == "2021-05"


def test_a_rerun_downloads_nothing_and_runs_nothing(project):
    runs, backfills = project.runs(), project.backfills()
    project.feed.requests.clear()

    again = project.backfill("2021-02", "2021-04")

    assert again.returncode == 0, again.stdout + again.stderr
    assert not [r for r in project.feed.requests if r.startswith("GET")], project.feed.requests
    assert project.runs() == runs and project.backfills() == backfills
    assert "0 of 3 months to take (3 up to date, not downloaded), 0 of 89 days" in again.stdout
    assert "none: nothing to do" in again.stdout


def test_a_failed_month_is_retried_on_resume(project):
    publish(project, "2021-05")  # 2021-06 is not published yet

    failed = project.backfill("2021-05", "2021-06")

    assert failed.returncode == 1
    assert "2021-06-01 failed (run" in failed.stdout
    assert "2021-06 is not published by the source" in failed.stdout
    assert "Run the same command again" in failed.stdout

    publish(project, "2021-06")
    project.feed.requests.clear()
    resumed = project.backfill("2021-05", "2021-06")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 2 months to take (1 up to date" in resumed.stdout
    gets = [r for r in project.feed.requests if r.startswith("GET")]
    assert gets == ["GET /trip-data/yellow_tripdata_2021-06.parquet"]
    assert_sinks_hold(project, ["2021-05", "2021-06"], days_of("2021-05-01", "2021-06-29"))


def test_ctrl_c_leaves_a_canceled_backfill_and_the_same_command_resumes(project, tmp_path):
    publish(project, *months("2021-07", "2021-09"))
    before = set(project.backfills())
    interrupted = backfill_with_a_run_started(project, "2021-07", "2021-09", tmp_path)
    # As a terminal's Ctrl-C: to the whole foreground process group.
    os.killpg(interrupted.popen.pid, signal.SIGINT)
    interrupted.popen.wait(TIMEOUT)
    output = interrupted.log_path.read_text()

    assert interrupted.popen.returncode == 130, output
    assert "Run the same command again to resume" in output
    [new] = set(project.backfills()) - before
    assert project.backfills()[new] == "CANCELED"
    assert not [s for s in project.runs().values() if s in ACTIVE]

    resumed = project.backfill("2021-07", "2021-09")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_sinks_hold(project, months("2021-07", "2021-09"), days_of("2021-07-01", "2021-09-29"))


def test_a_killed_terminal_leaves_a_backfill_the_same_command_carries_on(project, tmp_path):
    publish(project, *months("2022-01", "2022-02"))
    before = set(project.backfills())
    killed = backfill_with_a_run_started(project, "2022-01", "2022-02", tmp_path)
    # The terminal, its code server and its runs, gone at once (a closed laptop, the OOM killer).
    os.killpg(killed.popen.pid, signal.SIGKILL)
    killed.popen.wait(TIMEOUT)
    [left] = set(project.backfills()) - before
    assert project.backfills()[left] == "REQUESTED"

    carried_on = project.backfill("2022-01", "2022-02")

    assert f"carrying on with backfill {left}" in carried_on.stdout
    assert project.backfills()[left] in ("COMPLETED_SUCCESS", "COMPLETED_FAILED")
    assert not [s for s in project.runs().values() if s in ACTIVE]
    if carried_on.returncode != 0:  # the killed runs' months failed: the next run retries them
        assert "Run the same command again" in carried_on.stdout
        assert re.search(r"failed \(run [0-9a-f-]{36}\): run [0-9a-f-]{36}", carried_on.stdout)
        again = project.backfill("2022-01", "2022-02")
        assert again.returncode == 0, again.stdout + again.stderr
    assert_sinks_hold(project, months("2022-01", "2022-02"), days_of("2022-01-01", "2022-02-27"))


def test_dagsters_database_going_away_ends_the_terminal_in_one_line_naming_it(project, tmp_path):
    # A project of its own: what the outage leaves behind stays out of the other tests' way.
    home = tmp_path / "outage"
    env = project_env(home, project.feed.url, free_port()) | {"TAXI_SOURCE": "tlc"}
    started = cli(env, "postgres")
    assert started.returncode == 0, started.stderr
    env["DAGSTER_PG_URL"] = started.stdout.strip()
    outage = Project(env, home / "taxi_home", env["DAGSTER_PG_URL"].split("?")[0], project.feed)
    publish(outage, *months("2022-03", "2022-04"))
    running = None
    try:
        running = backfill_with_a_run_started(outage, "2022-03", "2022-04", tmp_path)
        # Its PostgreSQL, which holds Dagster's runs and events, stops under the backfill (a full
        # disk, a restart).
        stopped = cli(env, "stop")
        assert stopped.returncode == 0, stopped.stderr
        running.popen.wait(TIMEOUT)
        output = running.log_path.read_text()
    finally:
        cli(env, "stop")
        if running is not None:  # the code server's runs, should one outlive the outage
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.popen.pid, signal.SIGKILL)

    assert running.popen.returncode == 1, output
    assert "Traceback" not in output and "Retrying failed database connection" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("DAGSTER_PG_URL (postgresql://"), output
    assert "run the same command again" in last
    password = urllib.parse.urlsplit(env["DAGSTER_PG_URL"]).password
    assert not password or password not in output


def test_with_make_devs_daemon_the_daemon_drives_it(project, tmp_path):
    publish(project, *months("2021-10", "2021-11"))
    ui_port = free_port()
    dev = start_process(
        "make-dev",
        [sys.executable, "-m", "taxi_assets.cli", "dev", "--port", str(ui_port)],
        project.env,
        tmp_path,
    )
    graphql = GraphQLClient(f"http://127.0.0.1:{ui_port}/graphql")
    try:
        wait_until(lambda: loaded_locations(graphql), "make dev's code location", [dev])
        wait_until(lambda: healthy_daemons(graphql), "make dev's daemons", [dev])

        done = project.backfill("2021-10", "2021-11")
    finally:
        dev.stop()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "No daemon is running" not in done.stdout
    assert_sinks_hold(project, months("2021-10", "2021-11"), days_of("2021-10-01", "2021-11-29"))
