"""`make run` and `make dev` as a new user runs them: the CLI's runs in the UI, its console, ports.

The CLI entry point (`python -m taxi_assets.cli`) runs as a subprocess with a project of its own:
a fresh TAXI_HOME (so its own embedded PostgreSQL, on a free port given as TAXI_PG_PORT) and a
DAGSTER_HOME holding the repository's dagster.yaml. `cli dev --port` serves the UI over the
same instance; the tests talk to it through the webserver's GraphQL API, as the UI does. The
source is the suite's loopback HTTP server. Tests run in file order and build on each other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from taxi_assets import dev_server
from taxi_assets.storage.local_postgres import free_port
from taxi_assets.defs.sensors import AUTOMATION_SENSOR
from taxi_assets_tests.conftest import HttpSource, sample
from taxi_assets_tests.docs_commands import block_of
from taxi_assets_tests.browser import ui_page
from taxi_assets_tests.dagster_processes import (
    DAGSTER_YAML,
    REPO_ROOT,
    DagsterProcess,
    GraphQLClient,
    healthy_daemons,
    loaded_locations,
    start_process,
    wait_until,
)

MONTH = "2021-01"
SAMPLE = "yellow_tripdata_2021-01.csv.gz"
RUN_TIMEOUT = 600.0
SCREEN_LINES = 50  # a terminal screen, give or take
RUN_ID = re.compile(r": run ([0-9a-f-]{36})$", re.MULTILINE)

JOB_RUNS = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId status } }
    ... on PythonError { message }
  }
}
"""

RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { runId status parentRunId } }
}
"""

RUN_CONFIG = """
query RunConfig($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runConfig } } }
"""

STEP_FAILURES = """
query Failures($id: ID!) {
  logsForRun(runId: $id) {
    __typename
    ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { stepKey failureMetadata {
        description metadataEntries { label } } } } }
  }
}
"""

ENGINE_EVENTS = """
query Events($id: ID!) {
  logsForRun(runId: $id) {
    __typename
    ... on EventConnection { events { __typename
      ... on EngineEvent { message metadataEntries { label
        ... on JsonMetadataEntry { jsonString } } } } }
  }
}
"""

REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""

BACKFILL_RUNS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status runs { runId status tags { key value } } }
  }
}
"""

CHECK_STATUS = """
query Check($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { __typename ... on AssetNode {
    assetChecksOrError { __typename ... on AssetChecks { checks {
      name
      executionForLatestMaterialization { status }
      partitionStatuses { __typename
        ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } } } } }
}
"""


@dataclass
class Project:
    env: dict[str, str]
    taxi_home: Path
    dev: DagsterProcess
    graphql: GraphQLClient
    pg_port: int
    source: HttpSource

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return cli(self.env | env, *args)

    def selector(self, job: str) -> dict:
        return {
            "pipelineName": job,
            "repositoryName": "__repository__",
            "repositoryLocationName": "taxi_assets",
        }

    def job_runs(self, job: str) -> dict[str, str]:
        result = self.graphql(JOB_RUNS, {"selector": self.selector(job)})["pipelineOrError"]
        assert result["__typename"] == "Pipeline", result
        return {run["runId"]: run["status"] for run in result["runs"]}

    def reexecute(self, run_id: str, strategy: str) -> str:
        launched = self.graphql(
            REEXECUTE, {"params": {"parentRunId": run_id, "strategy": strategy}}
        )
        launched = launched["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def step_failures(self, run_id: str) -> list[dict]:
        events = self.graphql(STEP_FAILURES, {"id": run_id})["logsForRun"]["events"]
        return [e for e in events if e["__typename"] == "ExecutionStepFailureEvent"]

    def wait_for(self, run_id: str) -> dict:
        def finished():
            run = self.graphql(RUN, {"id": run_id})["runOrError"]
            run.pop("__typename")
            return run if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED") else None

        return wait_until(finished, f"run {run_id}", [self.dev], timeout=RUN_TIMEOUT, interval=1.0)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taxi_assets.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def project_env(tmp: Path, source_url: str, pg_port: int) -> dict[str, str]:
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TAXI_", "DAGSTER_"))
    }
    return env | {
        "DAGSTER_HOME": str(home),
        "TAXI_HOME": str(tmp / "taxi_home"),
        "TAXI_PG_PORT": str(pg_port),
        "TAXI_SOURCE_URL": source_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory, _http_server) -> Iterator[Project]:
    tmp = tmp_path_factory.mktemp("cli_live")
    _http_server.clear()
    pg_port, ui_port = free_port(), free_port()
    env = project_env(tmp, _http_server.url, pg_port)
    started = cli(env, "postgres")
    assert started.returncode == 0, started.stderr
    dev = start_process(
        "make-dev",
        [sys.executable, "-m", "taxi_assets.cli", "dev", "--port", str(ui_port)],
        env,
        tmp / "logs",
    )
    graphql = GraphQLClient(f"http://127.0.0.1:{ui_port}/graphql")
    try:
        wait_until(lambda: loaded_locations(graphql), "make dev's code location", [dev])
        wait_until(lambda: healthy_daemons(graphql), "make dev's daemons", [dev])
        yield Project(env, tmp / "taxi_home", dev, graphql, pg_port, _http_server)
    finally:
        dev.stop()
        cli(env, "stop")
        _http_server.clear()


def assert_fits_a_screen(output: str) -> None:
    lines = output.splitlines()
    assert len(lines) <= SCREEN_LINES, output
    assert "Warning" not in output and "Traceback" not in output, output


def test_an_unpublished_month_is_refused_before_any_run_is_created(project):
    """The source answers that it lacks the month: no run shows as failed in the UI, and the
    console says nothing was touched."""
    refused = project.cli("run", "--month", MONTH)

    assert refused.returncode == 1
    output = refused.stdout + refused.stderr
    assert_fits_a_screen(output)
    lines = output.strip().splitlines()
    assert lines[0].startswith(f"Loading yellow {MONTH} from {project.source.url} "), output
    assert lines[-3:] == [
        f"--month {MONTH}: {project.source.url}/yellow_tripdata_{MONTH}.csv.gz: "
        "not published (HTTP 404)",
        "Nothing was run; every sink is as it was.",
        "Setting that fixes it: TAXI_SOURCE_URL (where the monthly files come from)",
    ], output
    assert project.job_runs("monthly_yellow_trips") == {}

    project.source.publish(MONTH, SAMPLE)


def test_a_good_run_prints_a_screen_and_each_of_its_runs_reexecutes(project):
    done = project.cli("run", "--month", MONTH)

    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert_fits_a_screen(output)
    assert "DEBUG" not in output
    taxi_home = project.taxi_home
    for where in (
        "PostgreSQL table ny_taxi.yellow_cab_data",
        f"file://{taxi_home}/lake/YYYY/MM/DD/nyc_taxi_data.parquet",
        f"file://{taxi_home}/lake/nyc_taxi_data/2021-01.parquet",
        f"DuckDB {taxi_home}/warehouse.duckdb, table ny_taxi.yellow_trips",
    ):
        assert where in output
    assert "The yellow taxi days hold 16 fewer trips than the month" in output
    assert re.search(r"ny_taxi/yellow_trips +27,796 +31 ", output), output
    monthly_run, daily_run = RUN_ID.findall(output)
    assert project.job_runs("monthly_yellow_trips")[monthly_run] == "SUCCESS"
    assert project.job_runs("daily_yellow_trips") == {daily_run: "SUCCESS"}

    again = [project.reexecute(run, "ALL_STEPS") for run in (monthly_run, daily_run)]

    for run_id, parent in zip(again, (monthly_run, daily_run)):
        assert project.wait_for(run_id) == {
            "runId": run_id,
            "status": "SUCCESS",
            "parentRunId": parent,
        }
    assert set(again) <= set(project.job_runs("monthly_yellow_trips")) | set(
        project.job_runs("daily_yellow_trips")
    )


def test_the_reconciliation_check_reads_the_same_everywhere(project):
    def settled():
        # The re-executions above make the automation rebuild the days (and the dbt models
        # below them): its run may still be evaluating the check.
        checks = project.graphql(CHECK_STATUS, {"key": {"path": ["ny_taxi", "yellow_trips"]}})
        [check] = checks["assetNodeOrError"]["assetChecksOrError"]["checks"]
        latest = check["executionForLatestMaterialization"]
        return check if latest and latest["status"] != "IN_PROGRESS" else None

    check = wait_until(settled, "the check's latest evaluation", [project.dev], timeout=RUN_TIMEOUT)

    assert check["name"] == "warehouse_matches_lake"
    assert check["executionForLatestMaterialization"]["status"] == "SUCCEEDED"
    ranges = check["partitionStatuses"]["ranges"]
    assert [(r["startKey"], r["endKey"], r["status"]) for r in ranges] == [
        ("2021-01-01", "2021-01-31", "SUCCEEDED")
    ]


def test_a_backfill_over_unpublished_months_says_so_on_each_run(project):
    launched = project.graphql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "assetSelection": [{"path": ["raw_yellow_trips"]}],
                "partitionNames": ["2021-03-01", "2021-04-01"],
                "fromFailure": False,
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    def finished():
        result = project.graphql(BACKFILL_RUNS, {"id": launched["backfillId"]})
        result = result["partitionBackfillOrError"]
        runs = result["runs"]
        done = len(runs) == 2 and all(r["status"] in ("SUCCESS", "FAILURE") for r in runs)
        return runs if done and result["status"] not in ("REQUESTED", "CANCELING") else None

    runs = wait_until(finished, "the backfill", [project.dev], timeout=RUN_TIMEOUT, interval=1.0)

    for run in runs:
        month = {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"][:7]
        [failure] = project.step_failures(run["runId"])
        assert run["status"] == "FAILURE"
        assert failure["failureMetadata"]["description"] == (
            f"{month} is not published by the source: {project.env['TAXI_SOURCE_URL']}/"
            f"yellow_tripdata_{month}.csv.gz: not published (HTTP 404)\n"
            "Every sink is unchanged: ny_taxi/yellow_cab_data, yellow_trips_parquet, "
            "yellow_trips_by_day, yellow_trips_daily_export, ny_taxi/yellow_trips."
        )
        assert {"month", "setting", "sinks_unchanged"} <= {
            m["label"] for m in failure["failureMetadata"]["metadataEntries"]
        }

    # Once the month is out, the failed run re-executes from its failure.
    project.source.publish("2021-03", SAMPLE)
    failed = next(r["runId"] for r in runs if "2021-03-01" in str(r["tags"]))
    retry = project.reexecute(failed, "FROM_FAILURE")

    assert project.wait_for(retry) == {"runId": retry, "status": "SUCCESS", "parentRunId": failed}


def test_verbose_shows_every_event(project):
    verbose = project.cli("run", "--month", MONTH, "-v")

    assert verbose.returncode == 0
    assert "STEP_START" in verbose.stdout and "ASSET_MATERIALIZATION" in verbose.stdout


AUTOMATION_STATE = """
query Automation($sensor: SensorSelector!) {
  instance { autoMaterializePaused }
  sensorOrError(sensorSelector: $sensor) {
    __typename ... on Sensor { sensorState { status } }
  }
}
"""


def test_the_auto_materialize_header_says_what_the_automation_sensor_does(project):
    # The job and asset headers' "Auto-materialize on/off" is the instance's autoMaterializePaused.
    said = project.graphql(
        AUTOMATION_STATE,
        {
            "sensor": {
                "repositoryName": "__repository__",
                "repositoryLocationName": "taxi_assets",
                "sensorName": AUTOMATION_SENSOR,
            }
        },
    )

    assert said["sensorOrError"]["sensorState"]["status"] == "RUNNING", said
    assert said["instance"]["autoMaterializePaused"] is False


def test_a_shell_run_reexecutes_from_its_own_source_not_the_uis(project, tmp_path):
    """`make dev` was started with the HTTP source; this run reads a folder (the README's
    offline source). Re-executed from the UI while the HTTP source lacks the month, it reads the
    folder again, and says so on its page (its run config)."""
    folder = tmp_path / "offline"
    folder.mkdir()
    shutil.copyfile(sample(SAMPLE), folder / SAMPLE)
    shell = project.cli("run", "--month", MONTH, TAXI_SOURCE_URL=str(folder))
    assert shell.returncode == 0, shell.stdout + shell.stderr
    monthly_run, _ = RUN_ID.findall(shell.stdout)
    project.source.clear()
    try:
        again = project.reexecute(monthly_run, "ALL_STEPS")

        assert project.wait_for(again)["status"] == "SUCCESS"
        assert project.source.requests == []
        for run_id in (monthly_run, again):
            config = project.graphql(RUN_CONFIG, {"id": run_id})["runOrError"]["runConfig"]
            assert config["resources"]["taxi_source"] == {
                "config": {"kind": "datatalks", "base_url": str(folder)}
            }
    finally:
        project.source.publish(MONTH, SAMPLE)


@contextlib.contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def test_ports_name_the_setting_that_moves_them(project, tmp_path):
    other = free_port()
    asked_elsewhere = project.cli("postgres", TAXI_PG_PORT=str(other))
    assert asked_elsewhere.returncode != 0
    assert (
        f"already running on port {project.pg_port}, not on TAXI_PG_PORT={other}"
        in asked_elsewhere.stderr
    )

    taken = free_port()
    with listening(taken):
        fresh = project_env(tmp_path, project.env["TAXI_SOURCE_URL"], taken)
        busy_pg = cli(fresh, "postgres")
        busy_ui = project.cli("dev", "--port", str(taken))
    assert busy_pg.returncode != 0 and "set TAXI_PG_PORT to a free port" in busy_pg.stderr
    assert "Address already in use" not in busy_pg.stderr
    assert busy_ui.returncode == 0 and "already running" in busy_ui.stdout


def test_a_second_make_dev_points_at_the_first_and_starts_nothing(project):
    ui = project.graphql.url.removesuffix("/graphql")

    again = project.cli("dev", "--port", str(free_port()))

    assert again.returncode == 0, again.stderr
    assert f"The Dagster UI of this instance is already running: {ui} (" in again.stdout
    assert project.dev.alive


def test_a_taken_port_names_what_holds_it(project):
    ui = project.graphql.url.removesuffix("/graphql")
    ui_port = int(ui.rpartition(":")[2])
    taken = free_port()
    with listening(taken):
        program = dev_server.port_taken("127.0.0.1", taken)
    assert program.startswith(f"127.0.0.1:{taken} is in use by another program: ")
    assert f"`make dev PORT={taken + 1}`" in program
    assert dev_server.port_taken("127.0.0.1", ui_port).startswith(
        f"127.0.0.1:{ui_port} is in use by a Dagster UI of another instance"
    )


def test_the_docs_backfill_commands_run_on_the_instance(project, tmp_path):
    """docs/operating.md's command-line backfill, run as written from a checkout (`$PWD`) whose
    `.local` is this project's: the months queued for `make dev`'s daemon, the days in the
    terminal. Green's commands are yellow's with green's names and months."""
    export, months, days, green_months, green_days = (
        c.shell for c in block_of("docs/operating.md", "export DAGSTER_HOME=")
    )
    assert green_months == months.replace("yellow", "green").replace(
        "--from 2021-01-01 --to 2021-03-01", "--from 2020-10-01 --to 2020-12-01"
    )
    assert green_days == days.replace("yellow", "green").replace(
        "2021-01-01...2021-01-31", "2020-10-01...2020-12-31"
    )
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("workspace.yaml", "dagster.yaml"):
        shutil.copyfile(REPO_ROOT / name, checkout / name)
    (checkout / ".local").symlink_to(project.taxi_home)
    # What a user's shell has: no DAGSTER_HOME, and the checkout's .local as TAXI_HOME (the
    # default, which `$(… cli postgres)` reads before the export takes effect).
    env = {k: v for k, v in project.env.items() if k != "DAGSTER_HOME"}
    env["TAXI_HOME"] = str(checkout / ".local")

    before = set(project.job_runs("monthly_yellow_trips"))

    done = subprocess.run(
        ["bash", "-c", "\n".join(["set -e", export, months, days])],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "RUN_SUCCESS" in done.stdout + done.stderr

    def months_done():
        runs = {
            run_id: status
            for run_id, status in project.job_runs("monthly_yellow_trips").items()
            if run_id not in before
        }
        ended = len(runs) == 3 and all(s in ("SUCCESS", "FAILURE") for s in runs.values())
        return runs if ended else None

    runs = wait_until(months_done, "the months", [project.dev], timeout=RUN_TIMEOUT)
    assert "SUCCESS" in runs.values()  # 2021-01; the source lacks the others


def test_make_devs_terminal_says_how_each_run_ended_and_nothing_else(project):
    """Every run of the module so far started from the shell or the UI: the `make dev` terminal
    has a line for each end, with the failures' causes and pages, and no ticks or run events."""
    ui = project.graphql.url.removesuffix("/graphql")

    def ends_said():
        """Each run's end line, once every run has ended (automation may still be running
        the days and models the shell's months started)."""
        runs = {
            run_id: status
            for job in ("monthly_yellow_trips", "daily_yellow_trips", "__ASSET_JOB")
            for run_id, status in project.job_runs(job).items()
        }
        if any(status not in ("SUCCESS", "FAILURE", "CANCELED") for status in runs.values()):
            return None
        text = project.dev.log_path.read_text()
        ends = {
            run_id: [
                line
                for line in text.splitlines()
                if f": run {run_id} " in line and not line.endswith(" started")
            ]
            for run_id in runs
        }
        return (runs, ends, text) if all(ends.values()) else None

    runs, ends, terminal = wait_until(
        ends_said, "make dev's lines", [project.dev], timeout=RUN_TIMEOUT
    )

    for run_id, status in runs.items():
        [line] = ends[run_id]
        if status == "FAILURE":
            assert "FAILED" in line and f"({ui}/runs/{run_id})" in line, line
            assert "not published" in line, line
        else:
            assert " succeeded in " in line, line
    for noise in ("Tick produced", "DEBUG", "STEP_START", "Stack Trace", "Traceback"):
        assert noise not in terminal, terminal


UX_SCREENSHOTS = REPO_ROOT / "test-output" / "ux"


@pytest.fixture
def browser_page():
    with ui_page() as page:
        yield page
        shoot(page, "last-page")


def shoot(page, name: str) -> None:
    UX_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=UX_SCREENSHOTS / f"{name}.png")


def test_the_ui_shows_a_runs_source_the_loaded_month_and_what_each_check_means(
    project, browser_page
):
    """In a browser: a shell run's page shows its source; the month link `make run` prints
    opens on the loaded month; each check says whether it blocks."""
    page = browser_page
    ui = project.graphql.url.removesuffix("/graphql")
    shell_run = next(
        run_id
        for run_id in project.job_runs("monthly_yellow_trips")
        if (project.graphql(RUN_CONFIG, {"id": run_id})["runOrError"]["runConfig"] or {}).get(
            "resources"
        )
    )

    page.goto(f"{ui}/runs/{shell_run}")
    page.get_by_role("button", name="View tags and config").click()
    expect(page.get_by_text("taxi_source").first).to_be_visible()
    expect(page.get_by_text("base_url").first).to_be_visible()
    shoot(page, "run-source")

    page.goto(f"{ui}/assets/cleaned_yellow_trips?view=partitions&partition={MONTH}-01")
    expect(page.get_by_text("Materialized (1)").first).to_be_visible()
    expect(page.get_by_text(f"{MONTH}-01").first).to_be_visible()
    shoot(page, "loaded-month")

    page.goto(f"{ui}/assets/cleaned_yellow_trips?view=checks")
    expect(page.get_by_text("Warns only:").first).to_be_visible()  # the first, a warning
    page.get_by_text("no_shrink", exact=True).first.click()
    expect(page.get_by_text("Blocking: a failure stops").first).to_be_visible()
    expect(page.get_by_text("No description provided")).to_have_count(0)
    shoot(page, "checks")


HOLD_THE_WAREHOUSE = """
import duckdb, sys
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""
SINKS_LINE = re.compile(r"^Sinks written: (.*)\. Unchanged: (.*)\.$", re.MULTILINE)


def test_a_run_that_failed_after_writing_some_sinks_says_which_it_wrote(project):
    """A real fault half-way: another process holds the DuckDB warehouse file, so the day
    run's warehouse step fails (once its wait for the lock is over) after the month's and the
    days' lake sinks were written. The console says which sinks the command wrote and which
    it left; the run's page says the same of the run, from its own materializations."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_WAREHOUSE, str(project.taxi_home / "warehouse.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        failed = project.cli("run", "--month", MONTH)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "Cause (ny_taxi__yellow_trips): WarehouseLocked: " in output, output
    said = SINKS_LINE.findall(output)
    assert len(said) == 1, output
    [(written, unchanged)] = said
    assert set(written.split(", ")) == {
        "ny_taxi/yellow_cab_data",
        "yellow_trips_parquet",
        "yellow_trips_by_day",
        "yellow_trips_daily_export",
    }, output
    assert unchanged == "ny_taxi/yellow_trips", output

    monthly_run, daily_run = RUN_ID.findall(output)
    events = project.graphql(ENGINE_EVENTS, {"id": daily_run})["logsForRun"]["events"]
    said = [e for e in events if e.get("message", "").startswith(("Sinks written", "No sink"))]
    assert [e["message"] for e in said] == [
        "Sinks written: yellow_trips_by_day, yellow_trips_daily_export. "
        "Unchanged: ny_taxi/yellow_trips."
    ]
    assert {m["label"]: m["jsonString"] for m in said[0]["metadataEntries"]} == {
        "sinks_written": '["yellow_trips_by_day", "yellow_trips_daily_export"]',
        "sinks_unchanged": '["ny_taxi/yellow_trips"]',
    }
    # The month's run failed nothing, so its page says nothing of the kind.
    events = project.graphql(ENGINE_EVENTS, {"id": monthly_run})["logsForRun"]["events"]
    assert not [e for e in events if e.get("message", "").startswith("Sinks written")]


def test_the_checkout_stays_clean(project):
    """Neither the runs nor the UI leave Dagster state in the project; run artifacts are in one
    folder of TAXI_HOME."""
    assert project.graphql("{ shouldShowNux }") == {"shouldShowNux": False}
    dagster_home = Path(project.env["DAGSTER_HOME"])
    assert sorted(p.name for p in dagster_home.iterdir()) == ["dagster.yaml"]
    top = sorted(p.name for p in project.taxi_home.iterdir())
    assert not [name for name in top if re.fullmatch(r"[0-9a-f-]{36}", name)], top
    assert any((project.taxi_home / "storage").glob("*/compute_logs"))


def test_make_stop_says_what_it_stopped(project, tmp_path):
    nothing = cli(project_env(tmp_path, project.source.url, free_port()), "stop")
    assert nothing.returncode == 0
    assert nothing.stdout.startswith("Nothing to stop: the project's PostgreSQL ("), nothing.stdout

    stopped = project.cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(
        f"Stopped the project's PostgreSQL on port {project.pg_port} ("
    ), stopped.stdout
    assert "`make dev` (process " in stopped.stdout
    # With its database gone, `make dev` spends half a minute retrying it on SIGTERM; there is
    # nothing left for a clean shutdown to keep, so the module's teardown need not wait for one.
    project.dev.stop(timeout=0)
