"""Rows into a table of the DuckDB warehouse file, by name, on a connection the caller holds.

Inserts are `BY NAME` (a frame whose columns come in another order than the table's lands in
the right columns); columns the rows bring and the table lacks are added first (empty for the
old rows), and columns the table has and the rows lack are left NULL. A stream is pulled by
DuckDB batch by batch; local Parquet files are read by DuckDB itself. Identifiers meet SQL only
through `quoted`.
"""

from __future__ import annotations

import re
import time

import duckdb
import pandas as pd
import pyarrow as pa

from taxi_assets.tlc.batches import TripBatches

# How long a run waits for another process to let go of the DuckDB file before it fails
# naming that process (Dagster's own client retries for about 100 s, saying nothing).
LOCK_WAIT_SECONDS = 10.0
_HOLDER = re.compile(r"Conflicting lock is held in (.*?)(?:\. See also|$)")


class WarehouseLocked(RuntimeError):
    """Another process holds the DuckDB file."""


def connect_waiting_for_lock(database: str, config: dict, log=None):
    """A read-write connection to the DuckDB file; while another process holds it, wait up to
    LOCK_WAIT_SECONDS (saying so once through `log`), then fail naming the file and the
    holder."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    said = False
    while True:
        try:
            return duckdb.connect(database=database, read_only=False, config=config)
        except duckdb.IOException as error:
            found = _HOLDER.search(str(error))
            if found is None:
                raise
            holder = found.group(1)
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    f"the DuckDB warehouse {database} is locked by another process: {holder}. "
                    "Nothing was written; stop that process (a notebook or a DuckDB shell on "
                    "the file, or another `make dev`), or move the warehouse with TAXI_HOME"
                ) from None
            if not said and log is not None:
                log(
                    f"the DuckDB warehouse {database} is locked by {holder}; waiting up to "
                    f"{LOCK_WAIT_SECONDS:.0f} s for it"
                )
                said = True
            time.sleep(0.5)


def quoted(identifier: str) -> str:
    """An identifier as DuckDB reads it back verbatim: double quotes, inner ones doubled."""
    return '"' + identifier.replace('"', '""') + '"'


def table_exists(connection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables"
            " where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def insert_frame(connection, schema: str, table: str, frame: pd.DataFrame) -> None:
    """The frame's rows, its columns typed as DuckDB reads pandas'."""
    target = f"{quoted(schema)}.{quoted(table)}"
    # `frame` is found by DuckDB's replacement scan of this frame's local variables.
    connection.execute(f"create table if not exists {target} as select * from frame limit 0")
    types = _types(connection, pa.Schema.from_pandas(frame, preserve_index=False))
    _add_new_columns(connection, schema, table, types)
    connection.execute(f"insert into {target} by name select * from frame").fetchall()


def insert_stream(connection, schema: str, table: str, trips: TripBatches) -> None:
    """The stream's rows, pulled by DuckDB batch by batch."""
    target = f"{quoted(schema)}.{quoted(table)}"
    # `empty` and `stream` are found by DuckDB's replacement scan of these local variables.
    empty = trips.schema.empty_table()  # noqa: F841
    connection.execute(f"create table if not exists {target} as select * from empty")
    _add_new_columns(connection, schema, table, _types(connection, trips.schema))
    stream = trips.reader()  # noqa: F841
    connection.execute(f"insert into {target} by name select * from stream").fetchall()


def insert_files(
    connection,
    schema: str,
    table: str,
    files: list[str],
    normalised_names: bool,
    windows: list[tuple[str, pd.Timestamp, pd.Timestamp, str]],
) -> int:
    """The local Parquet files' rows, read by DuckDB: no byte passes through this process.
    With `normalised_names` the columns get the tutorial's names (spaces to underscores, lower
    case). Each of `windows` (column, naive start, naive end, how to name the window) must
    hold every row's value of its column: else nothing is written. Returns the rows inserted."""
    target = f"{quoted(schema)}.{quoted(table)}"
    # The day is in the files' path only, and not a column: no hive partitioning.
    source = "read_parquet($files, union_by_name = true, hive_partitioning = false)"
    files_param = {"files": files}
    types = connection.execute(
        f"select column_name, column_type from (describe select * from {source})", files_param
    ).fetchall()
    # The tutorial's names, made by SQL over the files' own names.
    rule = "lower(replace(name, ' ', '_'))" if normalised_names else "name"
    sources = [name for name, _ in types]
    [(targets,)] = connection.execute(
        f"select list_transform($names::varchar[], lambda name: {rule})", {"names": sources}
    ).fetchall()
    names = dict(zip(sources, targets, strict=True))
    columns = ", ".join(f"{quoted(name)} as {quoted(names[name])}" for name, _ in types)
    rows = f"select {columns} from {source}"
    for column, lo, hi, shown in windows:
        _check_inside_window(connection, rows, files_param, column, lo, hi, shown)
    connection.execute(f"create table if not exists {target} as {rows} limit 0", files_param)
    _add_new_columns(connection, schema, table, {names[name]: type_ for name, type_ in types})
    [(inserted,)] = connection.execute(
        f"insert into {target} by name {rows}", files_param
    ).fetchall()
    return inserted


def _check_inside_window(
    connection, rows: str, params: dict, column: str, lo, hi, shown: str
) -> None:
    """Raise if any row has `column` null or outside [lo, hi) (DuckDB reads that column)."""
    name = quoted(column)
    outside = (
        f"{name} is null or cast({name} as timestamp) < $lo or cast({name} as timestamp) >= $hi"
    )
    bounds = {**params, "lo": lo.to_pydatetime(), "hi": hi.to_pydatetime()}
    try:
        [(count, total, sample)] = connection.execute(
            f"select count(*) filter (where {outside}), count(*), "
            f"(list({name}) filter (where {outside}))[1:3] from ({rows})",
            bounds,
        ).fetchall()
    except duckdb.BinderException as error:
        raise ValueError(
            f"partition_expr {column!r} must name a column of the output: {error}"
        ) from error
    if count:
        raise ValueError(
            f"{count} of {total} rows have {column!r} outside the partition window {shown} "
            f"(e.g. {sample}); rerunning the partition would not replace them. Filter the "
            "output to the partition's window."
        )


def rows_per_day(connection, select: str, column: str) -> list[tuple[str, int]]:
    """How many of the selected rows fall on each day ("YYYY-MM-DD") of `column`."""
    return connection.execute(
        f"select cast(cast({column} as date) as varchar), count(*) from ({select}) group by 1"
    ).fetchall()


def _types(connection, schema: pa.Schema) -> dict[str, str]:
    """Each column's DuckDB type, as DuckDB reads the Arrow schema."""
    empty = schema.empty_table()  # noqa: F841 - found by DuckDB's replacement scan
    return dict(
        connection.execute(
            "select column_name, column_type from (describe select * from empty)"
        ).fetchall()
    )


def _add_new_columns(connection, schema: str, table: str, types: dict[str, str]) -> None:
    """Add the columns the rows bring (`types`: name → DuckDB type) and the table lacks."""
    held = {
        name
        for (name,) in connection.execute(
            "select column_name from information_schema.columns"
            " where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()
    }
    for name in types:
        if name not in held:
            connection.execute(
                f"alter table {quoted(schema)}.{quoted(table)} add column {quoted(name)} "
                f"{types[name]}"
            )
