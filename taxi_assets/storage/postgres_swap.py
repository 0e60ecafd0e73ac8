"""Rows into PostgreSQL by binary COPY into a staging table, swapped in by one transaction.

A partitioned table (the trips) gets one list partition per partition value: the rows land by
ADBC `adbc_ingest` in a staging table that nobody reads; the same transaction then detaches the
partition's old table and attaches the new one, a short last step and the only one readers
wait for. A small table (the zone lookup) is replaced whole the same way. A reader sees the
old rows or the new rows, never neither, and a failed load, even one whose server dies midway,
leaves the old rows and nothing else. Identifiers meet SQL only through `quote`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa

from taxi_assets.tlc.schema import to_pandas


class TargetTableMismatch(ValueError):
    """The table the rows go to exists with a shape this project does not write."""


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def rolled_back_on_failure(conn) -> Iterator[None]:
    """Roll the connection's transaction back on any failure, and re-raise it."""
    try:
        yield
    except BaseException:
        try:
            conn.rollback()
        except adbc.Error:
            pass  # the connection is gone, and its transaction with it; report the cause
        raise


@dataclass(frozen=True)
class Partition:
    """The list partition of `schema.table` holding the rows whose `column` is DATE `value`;
    its own table is `name`."""

    schema: str
    table: str
    column: str
    value: str  # YYYY-MM-DD
    name: str

    @property
    def target(self) -> str:
        return f"{quote(self.schema)}.{quote(self.table)}"


def replace_partition(
    conn,
    partition: Partition,
    staging: str,
    rows: pa.RecordBatchReader,
    *,
    before_swap: Callable[[], None] = lambda: None,
    with_swap: Callable[[object], None] = lambda conn: None,
) -> None:
    """The rows become the partition, in one transaction from the staging table's creation to
    the swap's commit: if the run or the server dies at any point, the server discards it all,
    staging included. `before_swap()` runs once the rows are in; `with_swap(conn)` writes in
    the swap's transaction, committed with it."""
    p = partition
    create_schema(conn, p.schema)
    check_target(conn, p.schema, p.table, p.column)
    with rolled_back_on_failure(conn):
        with conn.cursor() as cur:
            # The driver sends the COPY with the GIL released while a thread reads and
            # prepares the next batches: client and server work at once.
            cur.adbc_ingest(staging, rows, mode="create", db_schema_name=p.schema)
            # The constraint lets ATTACH skip its validating scan of the new rows.
            cur.execute(
                f"ALTER TABLE {quote(p.schema)}.{quote(staging)} ADD CONSTRAINT "
                f"{quote(staging + '_partition')} CHECK ({quote(p.column)} IS NOT "
                f"NULL AND {quote(p.column)} = DATE '{p.value}')"
            )
        before_swap()
        _swap(conn, p, staging)
        with_swap(conn)
        conn.commit()


def replace_table(conn, schema: str, table: str, rows: pa.Table, staging: str) -> None:
    """The rows become the whole of `schema.table`, in one transaction."""
    target = f"{quote(schema)}.{quote(table)}"
    create_schema(conn, schema)
    with rolled_back_on_failure(conn):
        with conn.cursor() as cur:
            cur.adbc_ingest(staging, rows, mode="create", db_schema_name=schema)
            # Runs replacing the same table queue here rather than interleave.
            cur.execute(f"SELECT pg_advisory_xact_lock(hashtext({_literal(target)}))")
            cur.execute(f"DROP TABLE IF EXISTS {target}")
            cur.execute(f"ALTER TABLE {quote(schema)}.{quote(staging)} RENAME TO {quote(table)}")
        conn.commit()


def read_rows(uri: str, schema: str, table: str, column: str | None = None, values=()):
    """The table's rows as pandas; with `column`, only those whose DATE is in `values`."""
    where = ""
    if column is not None:
        dates = ", ".join(f"DATE {_literal(value)}" for value in values)
        where = f" WHERE {quote(column)} IN ({dates})"
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote(schema)}.{quote(table)}{where}")
        return to_pandas(cur.fetch_arrow_table())


def create_schema(conn, schema: str) -> None:
    with conn.cursor() as cur:
        # Two first runs would both miss the schema and the second would fail creating it.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))"
            % _literal(f"CREATE SCHEMA {quote(schema)}")
        )
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    conn.commit()


def check_target(conn, schema: str, table: str, column: str) -> None:
    """Refuse, before any row moves, a table of that name this project did not make."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relkind, (SELECT string_agg(a.attname, ',') FROM pg_partitioned_table p"
            " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY(p.partattrs)"
            " WHERE p.partrelid = c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE n.nspname = {_literal(schema)} AND c.relname = {_literal(table)}"
        )
        found = cur.fetchone()
    conn.commit()
    if found is None:
        return
    kind, partition_key = found
    name = f"{schema}.{table}"
    fix = (
        f"Nothing was loaded. Keep its rows under another name (ALTER TABLE {name} "
        f"RENAME TO {table}_old) or drop it, then run again: the project creates {name} "
        f"itself, list-partitioned on {column}, one partition per month."
    )
    if kind != "p" or partition_key != column:
        what = (
            "a plain table"
            if kind == "r"
            else (f"partitioned on {partition_key}" if kind == "p" else f"of relkind {kind!r}")
        )
        raise TargetTableMismatch(
            f"{name} exists but is not the project's table ({what}, e.g. one the "
            f"tutorial's to_sql made). {fix}"
        )
    # Other columns than the rows' are the schema evolving (a new column, or a month without
    # one): _align_columns reconciles them in the swap, and refuses a changed type there.


def _swap(conn, p: Partition, staging: str) -> None:
    """The staged rows become the partition; committed by the caller."""
    schema = quote(p.schema)
    with conn.cursor() as cur:
        # Runs writing the same table queue here rather than interleave their swaps.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))" % _literal(p.target))
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {p.target} "
            f"(LIKE {schema}.{quote(staging)}) PARTITION BY LIST ({quote(p.column)})"
        )
        _align_columns(cur, p.schema, p.table, staging)
        cur.execute(
            "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = {_literal(p.schema)} AND c.relname = {_literal(p.name)}"
        )
        if cur.fetchone():
            cur.execute(f"ALTER TABLE {p.target} DETACH PARTITION {schema}.{quote(p.name)}")
            cur.execute(f"DROP TABLE {schema}.{quote(p.name)}")
        cur.execute(f"ALTER TABLE {schema}.{quote(staging)} RENAME TO {quote(p.name)}")
        cur.execute(
            f"ALTER TABLE {p.target} ATTACH PARTITION {schema}.{quote(p.name)} "
            f"FOR VALUES IN (DATE '{p.value}')"
        )


def _columns(cur, schema: str, table: str) -> dict[str, str]:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = {_literal(schema)} AND c.relname = {_literal(table)} "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )
    return dict(cur.fetchall())


def _align_columns(cur, schema: str, table: str, staging: str) -> None:
    """Give the table the month's new columns, and the month the table's, so ATTACH fits.

    Adding a nullable column to the partitioned table adds it, empty, to every partition: a
    catalogue change, no rewrite. A column whose type differs is refused before any change.
    """
    held, loaded = _columns(cur, schema, table), _columns(cur, schema, staging)
    for name in [n for n in loaded if n in held]:
        if held[name] != loaded[name]:
            raise TypeError(
                f"{schema}.{table}: column {name!r} is {held[name]} in the table "
                f"but {loaded[name]} in this partition's rows"
            )
    for name in [n for n in loaded if n not in held]:
        cur.execute(
            f"ALTER TABLE {quote(schema)}.{quote(table)} ADD COLUMN {quote(name)} {loaded[name]}"
        )
    for name in [n for n in held if n not in loaded]:
        cur.execute(
            f"ALTER TABLE {quote(schema)}.{quote(staging)} ADD COLUMN {quote(name)} {held[name]}"
        )
