"""`make backfill` interrupted as users interrupt it: Ctrl-C, a killed terminal, Dagster's
database going away. The same command carries on from where it was left, and every sink ends
whole (backfill_project.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import urllib.parse

from taxi_assets_tests.backfill_project import (
    ACTIVE,
    TIMEOUT,
    assert_sinks_hold,
    backfill_with_a_run_started,
    days_of,
    months,
    module_project,  # noqa: F401 - the `project` fixture: this module's own
    publish,
    started_project,
)
from taxi_assets_tests.test_cli_live import cli


def test_ctrl_c_leaves_a_canceled_backfill_and_the_same_command_resumes(project, tmp_path):
    publish(project, *months("2021-07", "2021-08"))
    before = set(project.backfills())
    interrupted = backfill_with_a_run_started(project, "2021-07", "2021-08", tmp_path)
    # As a terminal's Ctrl-C: to the whole foreground process group.
    os.killpg(interrupted.popen.pid, signal.SIGINT)
    interrupted.popen.wait(TIMEOUT)
    output = interrupted.log_path.read_text()

    assert interrupted.popen.returncode == 130, output
    assert "Run the same command again to resume" in output
    [new] = set(project.backfills()) - before
    assert project.backfills()[new] == "CANCELED"
    assert not [s for s in project.runs().values() if s in ACTIVE]

    resumed = project.backfill("2021-07", "2021-08")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_sinks_hold(project, months("2021-07", "2021-08"), days_of("2021-07-01", "2021-08-30"))


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
    running = None
    with started_project(tmp_path / "outage", project.feed) as outage:
        publish(outage, *months("2022-03", "2022-04"))
        try:
            running = backfill_with_a_run_started(outage, "2022-03", "2022-04", tmp_path)
            # Its PostgreSQL, which holds Dagster's runs and events, stops under the backfill (a
            # full disk, a restart).
            stopped = cli(outage.env, "stop")
            assert stopped.returncode == 0, stopped.stderr
            running.popen.wait(TIMEOUT)
            output = running.log_path.read_text()
        finally:
            if running is not None:  # the code server's runs, should one outlive the outage
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.popen.pid, signal.SIGKILL)

    assert running.popen.returncode == 1, output
    assert "Traceback" not in output and "Retrying failed database connection" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("DAGSTER_PG_URL (postgresql://"), output
    assert "run the same command again" in last
    password = urllib.parse.urlsplit(outage.env["DAGSTER_PG_URL"]).password
    assert not password or password not in output
