"""Which of a month's two monthly sinks is ahead when a run died between their publishes.

A month's Postgres partition is swapped first and its Parquet object replaced after it (the
object's asset depends on the partition's), so a failed Postgres load leaves both at the last
good version. A run that dies after the swap committed and before the object is replaced
(SIGKILL, or a failed lake write) leaves Postgres at the new version and the lake at the old
one. So the swap records, in its own transaction, that the month's lake object is behind
(`mark_lake_behind`); the object's write removes the record once the object is replaced
(`lake_caught_up`). A record present is that window's state, readable at any time
(`lake_behind`): the month's next run logs it and brings both sinks to its one version.

The records live in a schema of their own, so the trips' schemas hold only trips.
"""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg

SCHEMA = "taxi_assets_state"
TABLE = f"{SCHEMA}.lake_behind_postgres"


def create_table(conn) -> None:
    """The records' table, once; two first runs take turns creating it."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", (TABLE,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (postgres_table text, month text, "
            "run_id text NOT NULL, swapped_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (postgres_table, month))"
        )
    conn.commit()


def mark_lake_behind(cur, postgres_table: str, month: str, run_id: str) -> str | None:
    """Inside the swap's transaction: the month's lake object is behind until it is replaced.

    Returns the run whose swap was already waiting for its lake object, if one was.
    """
    key = (postgres_table, month)
    cur.execute(f"SELECT run_id FROM {TABLE} WHERE (postgres_table, month) = ($1, $2)", key)
    found = cur.fetchone()
    cur.execute(
        f"INSERT INTO {TABLE} (postgres_table, month, run_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (postgres_table, month) DO UPDATE "
        "SET run_id = EXCLUDED.run_id, swapped_at = now()",
        (*key, run_id),
    )
    return found[0] if found else None


def lake_behind(postgres_uri: str, postgres_table: str, month: str) -> str | None:
    """The run whose Postgres swap of the month the lake object has not caught up with."""
    with adbc.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass($1) IS NOT NULL", (TABLE,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(
            f"SELECT run_id FROM {TABLE} WHERE (postgres_table, month) = ($1, $2)",
            (postgres_table, month),
        )
        return (cur.fetchone() or [None])[0]


def lake_caught_up(postgres_uri: str, postgres_table: str, month: str, run_id: str) -> None:
    """After the month's object is replaced with what was written since run `run_id`'s swap
    was recorded behind: both sinks hold one version again. A later swap's record stays."""
    with adbc.connect(postgres_uri) as conn:
        with conn.cursor() as cur:
            cur.execute(
                f"DELETE FROM {TABLE} WHERE (postgres_table, month, run_id) = ($1, $2, $3)",
                (postgres_table, month, run_id),
            )
        conn.commit()


def warn_behind(log: dg.DagsterLogManager, postgres_table: str, month: str, run_id: str) -> None:
    log.warning(
        f"{month}: {postgres_table} holds run {run_id}'s version of the month, the lake's "
        "monthly object an older one (that run stopped between the two publishes); this "
        "run brings both to one version"
    )
