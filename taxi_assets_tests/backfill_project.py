"""A project for `make backfill` as a user runs it, and what its tests check the sinks with.

A project is a fresh TAXI_HOME with its embedded PostgreSQL on a free port and DAGSTER_HOME
holding the repository's dagster.yaml; its source is the TLC's Parquet feed on loopback
(tlc_feed.py). The CLI runs as a subprocess.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
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
from taxi_assets_tests.dagster_processes import REPO_ROOT, start_process, wait_until
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


@contextlib.contextmanager
def started_project(folder: Path, feed: TlcFeed) -> Iterator[Project]:
    """A new project in `folder`, its PostgreSQL started; stopped on the way out."""
    env = project_env(folder, feed.url, free_port()) | {"TAXI_SOURCE": "tlc"}
    try:
        started = cli(env, "postgres")
        assert started.returncode == 0, started.stderr
        env["DAGSTER_PG_URL"] = started.stdout.strip()
        yield Project(env, folder / "taxi_home", env["DAGSTER_PG_URL"].split("?")[0], feed)
    finally:
        cli(env, "stop")


@pytest.fixture(scope="module", name="project")
def module_project(tmp_path_factory, _feed) -> Iterator[Project]:
    """`project`: a project for the tests of one module, which build on each other. Each
    module that imports this fixture gets a project of its own."""
    _feed.clear()
    with started_project(tmp_path_factory.mktemp("backfill"), _feed) as project:
        yield project
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
