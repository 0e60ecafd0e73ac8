"""Dead runs: a run whose process is gone stops holding its pool slot, and the next writer goes on.

A real run, in a process of its own on an instance in PostgreSQL (as `make run` and `make dev`
keep it), is held inside its pooled Postgres write: the test holds the advisory lock the write
queues on, as a concurrent writer would. While it lives, `make run` waits for the pool saying
which run holds it, and stops on Ctrl-C. Then the run is SIGKILLed: it stays STARTED with the
slot claimed, until the next `make run` (here its preparation, `prepare_run`) sees the process
gone, marks the run failed and frees the slot; the waiting writer then runs to the end. The
daemon's path, run monitoring asking the launcher about each worker, is the same health check
(`LocalRunLauncher`), asked once here as the daemon asks it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from taxi_assets.definitions import defs
from taxi_assets.run_health import LocalRunLauncher, prepare_run, run_worker
from taxi_assets.datasets import YELLOW
from taxi_assets_tests.dagster_processes import create_database, dagster_env, dagster_stack
from taxi_assets_tests.pipeline import (
    JANUARY,
    materialize,
    partition_state,
    pipeline_resources,
    query,
)

pytestmark = pytest.mark.faults

POOL = "postgres_yellow_cab_data"
SWAP_LOCK = '"ny_taxi"."yellow_cab_data"'
KEPT_ROWS = 27_812
HANG_BOUND = 180.0  # only bounds a hang; nothing asserts how long anything took


def wait_for(what: str, check, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + HANG_BOUND
    while not (found := check()):
        assert process is None or process.poll() is None, f"{what}: the process ended"
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)
    return found


FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


POSTGRES_STEP = "ny_taxi__yellow_cab_data"
# The month's Postgres write through the job's own executor, as `make run` executes it.
WRITER = """
import dagster as dg
from taxi_assets.month_run import LOCATION_NAME
from taxi_assets.dagster_private import WorkspaceLocation, execute_in_process
from taxi_assets.defs.resources import PROJECT_ROOT
with dg.DagsterInstance.get() as instance, WorkspaceLocation.open(
        PROJECT_ROOT / "workspace.yaml", LOCATION_NAME, instance) as location:
    run = location.create_run(instance, "monthly_yellow_trips",
                              tags={"dagster/partition": "2021-01-01"},
                              asset_selection=[dg.AssetKey(["ny_taxi", "yellow_cab_data"])])
    with execute_in_process(run, instance) as result:
        raise SystemExit(0 if result.success else 1)
"""


def said_at_info(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        e.user_message
        for e in instance.all_logs(run_id)
        if e.level == logging.INFO and e.dagster_event is None
    ]


def slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(POOL).active_run_ids


@pytest.fixture
def home_instance(tmp_path, http_source, postgres, monkeypatch):
    env = dagster_env(
        tmp_path,
        dagster_pg_url=create_database(postgres, "dagster_dead_runs"),
        source_url=http_source.url,
        postgres=postgres,
    )
    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL", "TAXI_HOME"):
        monkeypatch.setenv(name, env[name])
    with dg.DagsterInstance.get() as instance:
        yield instance, env


@dataclasses.dataclass
class StuckWriter:
    """A run in a process of its own, holding the Postgres pool's slot inside its write."""

    process: subprocess.Popen
    holder: psycopg.Connection
    run_id: str
    resources: dict
    good: tuple


def start_stuck_writer(instance, env, http_source, postgres) -> StuckWriter:
    """The month loaded once (`good`), then a run of its Postgres write in a process of its own,
    held inside its pooled write by the advisory lock the write queues on, as by a concurrent
    writer; returned once it holds the pool's slot."""
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    # The local profile's layout under TAXI_HOME, for the writers that run as make run does.
    state = Path(env["TAXI_HOME"])
    resources = pipeline_resources(state, http_source.url, postgres)
    assert materialize(resources, instance=instance).success
    good = partition_state(postgres)

    holder = psycopg.connect(postgres.uri, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (SWAP_LOCK,))
    spec = {
        "postgres": {
            f.name: getattr(postgres, f.name)
            for f in dataclasses.fields(postgres)
            if f.name != "server"
        },
        "state": str(state),
        "source_url": http_source.url,
        "selection": "ny_taxi/yellow_cab_data",
        "instance": "home",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "taxi_assets_tests.killed_run", json.dumps(spec)]
    )
    try:
        [run_id] = wait_for(
            "the run to take the pool's slot", lambda: slot_holders(instance), process
        )
    except BaseException:
        process.kill()
        holder.close()
        raise
    return StuckWriter(process, holder, run_id, resources, good)


def test_a_killed_runs_slot_is_freed_and_the_waiting_writer_proceeds(
    http_source, postgres, home_instance
):
    instance, env = home_instance
    stuck_writer = start_stuck_writer(instance, env, http_source, postgres)
    stuck, holder, run_id = stuck_writer.process, stuck_writer.holder, stuck_writer.run_id
    resources, good = stuck_writer.resources, stuck_writer.good
    waiter = writer = None
    try:
        launcher = LocalRunLauncher()
        launcher.register_instance(instance)
        health = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
        assert health.status.value == "RUNNING", health

        # make run, while the slot is held: it says by which run, and Ctrl-C stops it.
        cli = subprocess.Popen(
            [sys.executable, "-m", "taxi_assets.cli", "run", "--month", "2021-01"],
            env={**env, "TAXI_PROFILE": "gcp"},
            stderr=subprocess.PIPE,
            text=True,
        )
        said = cli.stderr.readline()
        while "waits for the pool" not in said and said:
            said = cli.stderr.readline()
        assert f"waits for the pool {POOL}: its slot is held by run {run_id}" in said, said
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=HANG_BOUND) != 0
        assert slot_holders(instance) == {run_id}, "Ctrl-C must not disturb the other run"

        # A writer that reaches the pool anyway (launched by the daemon, or between make run's
        # check and its step) waits in Dagster's executor, which says who holds the slot.
        def waiting_writers() -> set[str]:
            told = f"{POSTGRES_STEP} waits for the pool {POOL}: its slot is held by run {run_id}"
            return {
                r.run_id
                for r in instance.get_runs()
                if r.run_id != run_id and told in said_at_info(instance, r.run_id)
            }

        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER], env={**env, "TAXI_PROFILE": "local"}
        )
        [writer_run] = wait_for("the writer to say who holds the pool", waiting_writers, writer)
        # Its wait sleeps and hears Ctrl-C: a second such writer is stopped with SIGINT.
        stopped = subprocess.Popen(
            [sys.executable, "-c", WRITER], env={**env, "TAXI_PROFILE": "local"}
        )
        [stopped_run] = wait_for(
            "a second writer to wait", lambda: waiting_writers() - {writer_run}, stopped
        )
        stopped.send_signal(signal.SIGINT)
        assert stopped.wait(timeout=HANG_BOUND) != 0
        assert instance.get_run_by_id(stopped_run).status == dg.DagsterRunStatus.FAILURE
        assert slot_holders(instance) == {run_id}

        # The next writer, prepared as make run prepares each job, waits for the same pool.
        said_by_waiter: list[str] = []
        job = defs.resolve_job_def(YELLOW.monthly_job)
        waiter = threading.Thread(target=prepare_run, args=(instance, job, said_by_waiter.append))
        waiter.start()
        wait_for("the waiter to say who holds the pool", lambda: said_by_waiter)
        assert said_by_waiter[0] == (
            f"{YELLOW.monthly_job} waits for the pool {POOL}: its slot is held by run {run_id}"
        )

        stuck.send_signal(signal.SIGKILL)
        stuck.wait()
        holder.close()
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        health = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
        assert health.status.value == "FAILED" and "is gone" in health.msg, health
        waiter.join(timeout=HANG_BOUND)
        assert not waiter.is_alive()
        assert writer.wait(timeout=HANG_BOUND) == 0, "the writer should load the month"
    finally:
        for process in (stuck, writer):
            if process is not None and process.poll() is None:
                process.kill()
        holder.close()

    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert any("marked it failed and freed its pool slots" in m for m in said_by_waiter), (
        said_by_waiter
    )
    assert slot_holders(instance) == set()
    assert partition_state(postgres) == good, "the killed run's load was never committed"
    assert materialize(resources, instance=instance, selection="ny_taxi/yellow_cab_data").success
    assert partition_state(postgres) == good


def test_a_slot_held_by_a_run_marked_ended_before_its_process_died_is_freed(
    http_source, postgres, home_instance
):
    """A run process can outlive its run's record: when the Dagster database stops answering
    under a backfill, the next command marks the runs it cannot follow failed while their
    processes may still hold, or go on to claim, a pool slot. Here the run is marked failed
    while its process holds the slot (as that command does), then the process dies. Nothing
    but the daemon's run monitoring would free the slot; the next writer's preparation does."""
    instance, env = home_instance
    stuck = start_stuck_writer(instance, env, http_source, postgres)
    try:
        instance.report_run_failed(instance.get_run_by_id(stuck.run_id), "its database went away")
        stuck.process.send_signal(signal.SIGKILL)
        stuck.process.wait()
    finally:
        stuck.process.kill()
        stuck.holder.close()
    assert slot_holders(instance) == {stuck.run_id}

    said: list[str] = []
    waiter = threading.Thread(
        target=prepare_run, args=(instance, defs.resolve_job_def(YELLOW.monthly_job), said.append)
    )
    waiter.start()
    waiter.join(timeout=HANG_BOUND)
    assert not waiter.is_alive(), f"the next writer still waits for the pool: {said}"
    job_name = instance.get_run_by_id(stuck.run_id).job_name
    freed = f"run {stuck.run_id} ({job_name}) had ended (FAILURE) but still held pool slots"
    assert any(line.startswith(freed) and line.endswith("is gone: freed them") for line in said), (
        said
    )
    assert slot_holders(instance) == set()
    assert materialize(
        stuck.resources, instance=instance, selection="ny_taxi/yellow_cab_data"
    ).success
    assert partition_state(postgres) == stuck.good


# --- under the daemon (make dev) -------------------------------------------------------------

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""


def test_the_daemon_fails_a_killed_run_and_the_waiting_writer_proceeds(
    tmp_path, http_source, postgres, monkeypatch
):
    """`make dev`'s webserver and daemon, with the project's dagster.yaml but for shorter
    monitoring intervals (so the test does not sit out the production minutes). The run's
    worker dies with the code server that started it, as when the OOM killer takes both (a live
    code server would notice its child's death and fail the run itself): only run monitoring,
    asking the launcher's health check, can find it. Meanwhile another writer of the table
    waits at its pooled step for the slot the dead run holds."""
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    env = dagster_env(
        tmp_path,
        dagster_pg_url=create_database(postgres, "dagster_dead_daemon"),
        source_url=http_source.url,
        postgres=postgres,
    )
    config = Path(env["DAGSTER_HOME"], "dagster.yaml")
    text = config.read_text()
    for setting, value in (("poll_interval_seconds", 1), ("free_slots_after_run_end_seconds", 1)):
        text, replaced = re.subn(rf"{setting}: \d+", f"{setting}: {value}", text)
        assert replaced == 1, setting
    config.write_text(text)
    # The daemon's runs use the local profile's resources under TAXI_HOME; so does the writer.
    resources = pipeline_resources(Path(env["TAXI_HOME"]), http_source.url, postgres)

    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL", "TAXI_HOME"):
        monkeypatch.setenv(name, env[name])

    holder = psycopg.connect(postgres.uri, autocommit=True)
    with dagster_stack(env, tmp_path / "logs") as stack, dg.DagsterInstance.get() as instance:
        writer_result: list = []
        writer = threading.Thread(
            target=lambda: writer_result.append(
                materialize(
                    resources,
                    instance=instance,
                    selection="ny_taxi/yellow_cab_data",
                    raise_on_error=False,
                )
            )
        )
        try:
            # Held inside its pooled Postgres write, as by a concurrent writer's lock.
            holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (SWAP_LOCK,))
            launched = stack.graphql(
                LAUNCH_RUN,
                {
                    "params": {
                        "selector": {
                            "repositoryLocationName": "taxi_assets",
                            "repositoryName": "__repository__",
                            "jobName": YELLOW.monthly_job,
                        },
                        "executionMetadata": {
                            "tags": [{"key": "dagster/partition", "value": JANUARY}]
                        },
                    }
                },
            )["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            dead = launched["run"]["runId"]
            stack.wait_until(
                lambda: slot_holders(instance) == {dead},
                "the run to take the pool's slot",
                HANG_BOUND,
            )
            writer.start()
            stack.wait_until(
                lambda: (
                    instance.event_log_storage.get_concurrency_info(POOL).pending_run_ids - {dead}
                ),
                "the writer to wait for the slot",
                HANG_BOUND,
            )
            pid, _ = run_worker(instance, dead)
            with open(f"/proc/{pid}/stat") as stat:
                code_server = int(stat.read().rpartition(")")[2].split()[1])
            os.kill(code_server, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            holder.close()

            stack.wait_until(
                lambda: instance.get_run_by_id(dead).status in FINISHED,
                "the daemon to fail the dead run",
                HANG_BOUND,
            )
            writer.join(timeout=HANG_BOUND)
            assert not writer.is_alive(), "the writer should have got the slot"
        finally:
            holder.close()
        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        said = [e.message for e in instance.all_logs(dead) if e.message]
        assert any(f"its process (pid {pid}) is gone" in m for m in said), said[-3:]
        [result] = writer_result
        assert result.success
    assert partition_state(postgres)[0] == KEPT_ROWS
