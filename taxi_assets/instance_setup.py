"""A new instance is set up by one process at a time: two `make run` started together on a
fresh TAXI_HOME would otherwise both create its PostgreSQL data directory, Dagster's tables
and the pools' rows, and one of them fail half-way.

The first process to take TAXI_HOME's setup lock does it all; the others wait on the lock (a
second or two), then find each part done and go on. Every part is idempotent, so a process
killed midway leaves nothing the next one cannot finish.
"""

from __future__ import annotations

import fcntl
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.exc
from dagster_postgres.utils import DagsterPostgresException

from taxi_assets import settings
from taxi_assets.run_health import ensure_pools, job_pools

LOCK_FILE = ".setup.lock"


@contextmanager
def setup_lock(home: Path) -> Iterator[None]:
    """Held while this process sets up the instance under `home`; released at exit, or by the
    kernel when the process dies."""
    with open(home / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def set_up_instance() -> None:
    """Dagster's tables (created when the instance is first opened) and every job's pools;
    exits in one line naming DAGSTER_PG_URL when its database cannot be reached."""
    from taxi_assets.definitions import defs

    pools = {pool for job in defs.resolve_all_job_defs() for pool in job_pools(job)}
    with exits_when_dagster_storage_fails():
        with dg.DagsterInstance.get() as instance:
            ensure_pools(instance, pools)
            show_automation_as_it_runs(instance)


@contextmanager
def exits_when_dagster_storage_fails(then: str = "") -> Iterator[None]:
    """Exits in one line naming DAGSTER_PG_URL (never its password), and `then`, when Dagster's
    database cannot be reached or stops answering, instead of a traceback after
    dagster-postgres's warning at each of its retries."""
    root = logging.getLogger()
    root.addFilter(_no_connection_retries)
    try:
        yield
    except sqlalchemy.exc.ArgumentError:
        sys.exit("DAGSTER_PG_URL is not a PostgreSQL URL (postgresql://user:password@host:port/db)")
    except (sqlalchemy.exc.OperationalError, DagsterPostgresException) as error:
        cause = error.__cause__ if isinstance(error, DagsterPostgresException) else error
        url = sqlalchemy.engine.make_url(settings.value("DAGSTER_PG_URL"))
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        sys.exit(
            f"DAGSTER_PG_URL ({url.render_as_string(hide_password=True)}), the database of "
            f"Dagster's runs and events, cannot be used: {reason}" + (f". {then}" if then else "")
        )
    finally:
        root.removeFilter(_no_connection_retries)


def show_automation_as_it_runs(instance: dg.DagsterInstance) -> None:
    """The UI's job and asset headers say "Auto-materialize off" on a new instance: they read
    the on/off switch of Dagster's sensorless automation daemon, which nothing here uses (the
    automation sensor runs automation, and that switch does not stop it). Set the switch to
    what the automation sensor does unless a user stops it in the UI."""
    from taxi_assets.dagster_private import set_auto_materialize_paused
    from taxi_assets.defs.sensors import automation_sensor

    running = automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    set_auto_materialize_paused(instance, not running)


def _no_connection_retries(record: logging.LogRecord) -> bool:
    # dagster-postgres warns, with the whole error, at each of its retries.
    return not record.getMessage().startswith("Retrying failed database connection")
