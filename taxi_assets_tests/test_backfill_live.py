"""`make backfill` as a user runs it: months through every sink, re-run, a failed month
resumed; first without `make dev` (the CLI drives the backfill itself), last with its daemon up.
Tests run in file order on one project and build on each other (backfill_project.py).
"""

from __future__ import annotations

import sys

import dagster as dg

from taxi_assets.storage.local_postgres import free_port
from taxi_assets_tests.backfill_project import (
    assert_sinks_hold,
    days_of,
    months,
    module_project,  # noqa: F401 - the `project` fixture: this module's own
    publish,
)
from taxi_assets_tests.dagster_processes import (
    GraphQLClient,
    healthy_daemons,
    loaded_locations,
    start_process,
    wait_until,
)


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
