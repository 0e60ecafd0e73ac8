"""A new instance is set up by one process at a time: two `make run` started together on a
fresh TAXI_HOME would otherwise both create its PostgreSQL data directory, Dagster's tables
and the pools' rows, and one of them fail half-way.

The first process to take TAXI_HOME's setup lock does it all; the others wait on the lock (a
second or two), then find each part done and go on. Every part is idempotent, so a process
killed midway leaves nothing the next one cannot finish.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

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
    """Dagster's tables (created when the instance is first opened) and every job's pools."""
    from taxi_assets.definitions import defs

    pools = {pool for job in defs.resolve_all_job_defs() for pool in job_pools(job)}
    with dg.DagsterInstance.get() as instance:
        ensure_pools(instance, pools)
