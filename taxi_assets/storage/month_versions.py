"""One version of a month in its two monthly sinks: the Postgres partition and the lake object.

The month's run writes both from the same batches: the rows go by COPY into a staging table
while the same batches are written to the month's lake object under a hidden name beside the
current one (`lake_parquet.stage_month_object`). Nothing is visible yet. The Postgres swap's
own transaction then records, per table and month, that run's version of the month and the
hidden object holding it (`record_swap`): that commit is the month's one switch. Right after
it the object is published (renamed on disk, moved by the server on GCS) and the record says
the lake holds that version too (`settle`). A failure before the commit discards the hidden
object and leaves both sinks at the last good version; a run killed after it leaves a
recorded, staged object that the next run of the month, the month object's step of any run,
or the asset check `lake_month_matches_postgres` publishes (rolls forward) before anything
else touches the month. The window in which Postgres and the lake disagree is from that
commit to the next of those.

Versions are the runs that wrote them: each monthly object also carries its run in its
Parquet key-value metadata (`VERSION_KEY`), so a publish interrupted after the move and
before the record is told from a staged object that was lost. The records live in a schema
of their own, so the trips' schemas hold only trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import adbc_driver_postgresql.dbapi as adbc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from taxi_assets.storage.atomic_files import publish_staged

SCHEMA = "taxi_assets_state"
TABLE = f"{SCHEMA}.month_versions"
# The record's former shape, still found on existing instances: a row per month whose lake
# object was behind its partition.
EARLIER_TABLE = f"{SCHEMA}.lake_behind_postgres"
VERSION_KEY = "taxi_assets/version"
_COLUMNS = "month, postgres_run, lake_run, staged_object, lake_object"


@dataclass(frozen=True)
class MonthVersions:
    """Which run's version of `month` each sink holds (None: none recorded)."""

    month: str
    postgres_run: str | None
    lake_run: str | None
    # The hidden object holding postgres_run's version, committed with the swap, unpublished.
    staged_object: str | None
    lake_object: str | None

    @property
    def lake_behind(self) -> bool:
        return self.postgres_run is not None and self.lake_run != self.postgres_run

    def describe(self, postgres_table: str) -> str:
        lake = f"run {self.lake_run}'s" if self.lake_run else "an older one, not recorded"
        return (
            f"{self.month}: {postgres_table} holds run {self.postgres_run}'s version of the "
            f"month, the lake's monthly object {lake}"
        )


def create_table(conn) -> None:
    """The records' table, once; two first runs take turns creating it."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", (TABLE,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (postgres_table text, month text, "
            "postgres_run text, lake_run text, staged_object text, lake_object text, "
            "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (postgres_table, month))"
        )
        cur.execute("SELECT to_regclass($1) IS NOT NULL", (EARLIER_TABLE,))
        if cur.fetchone()[0]:
            # Its rows said the lake was behind, by an unrecorded version.
            cur.execute(
                f"INSERT INTO {TABLE} (postgres_table, month, postgres_run) "
                f"SELECT postgres_table, month, run_id FROM {EARLIER_TABLE} ON CONFLICT DO NOTHING"
            )
            cur.execute(f"DROP TABLE {EARLIER_TABLE}")
    conn.commit()


def _rows(cur, postgres_table: str, month: str | None, lock: bool = False) -> list[MonthVersions]:
    where, args = "postgres_table = $1", [postgres_table]
    if month is not None:
        where, args = where + " AND month = $2", [*args, month]
    cur.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE {where} ORDER BY month"
        + (" FOR UPDATE" if lock else ""),
        args,
    )
    return [MonthVersions(*row) for row in cur.fetchall()]


def record_swap(
    conn,
    postgres_table: str,
    month: str,
    run_id: str,
    staged_object: str | None,
    lake_object: str | None,
) -> None:
    """Inside the swap's transaction: the partition now holds run `run_id`'s version, and
    `staged_object` (if any) the same version for the lake's `lake_object`."""
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {TABLE} (postgres_table, month, postgres_run, staged_object, "
            "lake_object) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (postgres_table, month) DO "
            "UPDATE SET postgres_run = EXCLUDED.postgres_run, staged_object = "
            f"EXCLUDED.staged_object, lake_object = COALESCE(EXCLUDED.lake_object, "
            f"{TABLE}.lake_object), updated_at = now()",
            (postgres_table, month, run_id, staged_object, lake_object),
        )


def object_version(fs: pafs.FileSystem, path: str) -> str | None:
    """The run whose version the object at `path` holds (None: no object, or not recorded)."""
    try:
        with fs.open_input_file(path) as source:
            recorded = pq.ParquetFile(source).metadata.metadata or {}
    except FileNotFoundError:
        return None
    version = recorded.get(VERSION_KEY.encode())
    return version.decode() if version else None


def settle(
    postgres_uri: str,
    fs: pafs.FileSystem,
    postgres_table: str,
    month: str | None = None,
    log=None,
) -> list[MonthVersions]:
    """Publish every staged object a committed swap recorded (of `month`, or of every month),
    and return the months whose lake object is still behind their partition.

    Each publish holds its month's record locked, so two runs settling at once publish once.
    """
    with adbc.connect(postgres_uri) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass($1) IS NOT NULL", (TABLE,))
            if not cur.fetchone()[0]:
                return []
            staged = [r.month for r in _rows(cur, postgres_table, month) if r.staged_object]
        conn.commit()
        for key in staged:
            with conn.cursor() as cur:
                [row] = _rows(cur, postgres_table, key, lock=True)
                if row.staged_object:
                    _publish(conn, cur, fs, postgres_table, row, log)
            conn.commit()
        with conn.cursor() as cur:
            behind = [r for r in _rows(cur, postgres_table, month) if r.lake_behind]
        conn.commit()
    return behind


def _publish(conn, cur, fs, postgres_table: str, row: MonthVersions, log) -> None:
    try:
        published = publish_staged(fs, row.staged_object, row.lake_object)
    except BaseException:
        conn.rollback()
        raise
    # Not there: published by a run that died before saying so, or lost (then still behind).
    if published or object_version(fs, row.lake_object) == row.postgres_run:
        lake_run = row.postgres_run
    else:
        lake_run = row.lake_run
    cur.execute(
        f"UPDATE {TABLE} SET staged_object = NULL, lake_run = $3, updated_at = now() "
        "WHERE (postgres_table, month) = ($1, $2)",
        (postgres_table, row.month, lake_run),
    )
    if log is not None and lake_run == row.postgres_run:
        log.info(f"{row.month}: run {row.postgres_run}'s {row.lake_object} published")


def lake_written(
    postgres_uri: str, postgres_table: str, month: str, run_id: str, lake_object: str
) -> MonthVersions:
    """The month's object was written by run `run_id` on its own (not beside the partition)."""
    with adbc.connect(postgres_uri) as conn:
        create_table(conn)
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {TABLE} (postgres_table, month, lake_run, lake_object) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (postgres_table, month) DO UPDATE SET "
                "lake_run = EXCLUDED.lake_run, lake_object = EXCLUDED.lake_object, "
                "updated_at = now()",
                (postgres_table, month, run_id, lake_object),
            )
            [row] = _rows(cur, postgres_table, month)
        conn.commit()
    return row


def versions(postgres_uri: str, postgres_table: str, month: str) -> MonthVersions | None:
    """What the record says of the month (None: no record)."""
    with adbc.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass($1) IS NOT NULL", (TABLE,))
        if not cur.fetchone()[0]:
            return None
        found = _rows(cur, postgres_table, month)
        return found[0] if found else None
