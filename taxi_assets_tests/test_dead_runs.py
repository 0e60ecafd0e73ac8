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
import signal
import subprocess
import sys
import threading
import time

import dagster as dg
import psycopg
import pytest

from taxi_assets.definitions import defs
from taxi_assets.run_health import LocalRunLauncher, prepare_run
from taxi_assets.schedules import MONTHLY_JOB
from taxi_assets_tests.dagster_processes import create_database, dagster_env
from taxi_assets_tests.pipeline import materialize, partition_state, pipeline_resources, query

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


def slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return instance.event_log_storage.get_concurrency_info(POOL).active_run_ids


@pytest.fixture
def home_instance(tmp_path, http_source, postgres, monkeypatch):
    env = dagster_env(tmp_path, dagster_pg_url=create_database(postgres, "dagster_dead_runs"),
                      source_url=http_source.url, postgres=postgres)
    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL", "TAXI_HOME"):
        monkeypatch.setenv(name, env[name])
    with dg.DagsterInstance.get() as instance:
        yield instance, env


def test_a_killed_runs_slot_is_freed_and_the_waiting_writer_proceeds(
        tmp_path, http_source, postgres, home_instance):
    instance, env = home_instance
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    state = tmp_path / "state"
    resources = pipeline_resources(state, http_source.url, postgres)
    assert materialize(resources, instance=instance).success
    good = partition_state(postgres)

    holder = psycopg.connect(postgres.uri, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (SWAP_LOCK,))
    spec = {"postgres": {f.name: getattr(postgres, f.name) for f in dataclasses.fields(postgres)
                         if f.name != "server"},
            "state": str(state), "source_url": http_source.url,
            "selection": "ny_taxi/yellow_cab_data", "instance": "home"}
    stuck = subprocess.Popen([sys.executable, "-m", "taxi_assets_tests.killed_run",
                              json.dumps(spec)])
    waiter = None
    try:
        [run_id] = wait_for("the run to take the pool's slot", lambda: slot_holders(instance),
                            stuck)
        launcher = LocalRunLauncher()
        launcher.register_instance(instance)
        health = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
        assert health.status.value == "RUNNING", health

        # make run, while the slot is held: it says by which run, and Ctrl-C stops it.
        cli = subprocess.Popen([sys.executable, "-m", "taxi_assets.cli", "run", "--month",
                                "2021-01"], env={**env, "TAXI_PROFILE": "gcp"},
                               stderr=subprocess.PIPE, text=True)
        said = cli.stderr.readline()
        while "waits for the pool" not in said and said:
            said = cli.stderr.readline()
        assert f"waits for the pool {POOL}: its slot is held by run {run_id}" in said, said
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=HANG_BOUND) != 0
        assert slot_holders(instance) == {run_id}, "Ctrl-C must not disturb the other run"

        # The next writer, prepared as make run prepares each job, waits for the same pool.
        said_by_waiter: list[str] = []
        job = defs.resolve_job_def(MONTHLY_JOB)
        waiter = threading.Thread(target=prepare_run, args=(instance, job, said_by_waiter.append))
        waiter.start()
        wait_for("the waiter to say who holds the pool", lambda: said_by_waiter)
        assert said_by_waiter[0] == (
            f"{MONTHLY_JOB} waits for the pool {POOL}: its slot is held by run {run_id}")

        stuck.send_signal(signal.SIGKILL)
        stuck.wait()
        holder.close()
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        health = launcher.check_run_worker_health(instance.get_run_by_id(run_id))
        assert health.status.value == "FAILED" and "is gone" in health.msg, health
        waiter.join(timeout=HANG_BOUND)
        assert not waiter.is_alive()
    finally:
        if stuck.poll() is None:
            stuck.kill()
        holder.close()

    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert any("marked it failed and freed its pool slots" in m for m in said_by_waiter), \
        said_by_waiter
    assert slot_holders(instance) == set()
    assert partition_state(postgres) == good, "the killed run's load was never committed"
    assert materialize(resources, instance=instance, selection="ny_taxi/yellow_cab_data").success
    assert partition_state(postgres) == good
