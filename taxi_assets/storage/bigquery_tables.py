"""BigQuery tables as the warehouse uses them, apart from Dagster: the client, identifiers,
a table's schema from Arrow's, a frame as Parquet shaped like its table, the staging table
a partition's rows are loaded into (from the worker, or from Cloud Storage by load jobs), and
the one transaction that swaps them in.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from taxi_assets.google_credentials import check_key_file


def bigquery_client(
    project: str | None, location: str | None = None, api_endpoint: str | None = None
) -> bigquery.Client:
    """A BigQuery client; with `api_endpoint` (an emulator) it sends no credentials."""
    if not api_endpoint:
        # Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server).
        check_key_file()
        return bigquery.Client(project=project, location=location)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=api_endpoint),
    )


def quoted(identifier: str) -> str:
    """An identifier in BigQuery's backticks, its backslashes and backticks escaped."""
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


# -- Table creation --------------------------------------------------------------------------


def _bigquery_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):  # pandas Categorical, dictionary-encoded ArrowDtype
        return _bigquery_type(arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_floating(arrow_type):
        return "FLOAT64"
    if pa.types.is_decimal(arrow_type):
        return "NUMERIC" if arrow_type.precision <= 38 and arrow_type.scale <= 9 else "BIGNUMERIC"
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "STRING"
    if pa.types.is_null(arrow_type):  # an all-null object column
        return "STRING"
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_binary_view(arrow_type)
    ):
        return "BYTES"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP" if arrow_type.tz is not None else "DATETIME"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_time(arrow_type):
        return "TIME"
    raise TypeError(f"no BigQuery column type for Arrow type {arrow_type}")


def bigquery_schema(obj: pd.DataFrame | pa.Schema) -> list[bigquery.SchemaField]:
    """The table schema for a DataFrame (or Arrow schema): names unchanged, every column NULLABLE.

    Takes numpy, pandas-nullable (`Int64`, `string`) and Arrow-backed (`int64[pyarrow]`) columns
    alike, through the Arrow type each converts to.
    """
    arrow_schema = (
        obj if isinstance(obj, pa.Schema) else pa.Schema.from_pandas(obj, preserve_index=False)
    )
    fields = []
    for field in arrow_schema:
        try:
            fields.append(bigquery.SchemaField(field.name, _bigquery_type(field.type)))
        except TypeError as exc:
            raise TypeError(f"column {field.name!r}: {exc}") from exc
    return fields


# The Arrow type a load writes for each BigQuery column type (as the client library maps them).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "INT64": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT64": pa.float64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
}


def parquet_for_table(
    obj: pd.DataFrame | pa.Table, schema: Sequence[bigquery.SchemaField]
) -> io.BytesIO:
    """`obj` as Parquet whose columns have the table's order and types.

    Order, because some servers (bqemulator) match a Parquet file's columns by position. Types,
    because the frame's may be narrower or wider than the table's (int32, nanosecond
    timestamps): cast safely, so a value the column can't hold fails the write.
    """
    present = obj.column_names if isinstance(obj, pa.Table) else list(obj.columns)
    names = [f.name for f in schema if f.name in present]
    # Columns the table lacks stay, for the load job to refuse by name.
    names += [c for c in present if c not in names]
    table = (
        obj.select(names)
        if isinstance(obj, pa.Table)
        else pa.Table.from_pandas(obj[names], preserve_index=False)
    )
    field_types = {f.name: f.field_type for f in schema}
    columns = []
    for name, column in zip(table.column_names, table.columns):
        target = _ARROW_TYPES.get(field_types.get(name, ""))
        if target is None or column.type == target:
            columns.append(column)
            continue
        if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(target):
            if (column.type.tz is None) != (target.tz is None):
                # Arrow would read naive times as UTC, or drop a zone keeping the UTC wall clock.
                raise TypeError(
                    f"column {name!r}: {column.type} values can't go into a"
                    f" {field_types[name]} column (naive vs time-zone aware)"
                )
        try:
            columns.append(column.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TypeError(
                f"column {name!r}: {column.type} values don't fit the table's"
                f" {field_types[name]} column: {exc}"
            ) from exc
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns, names=table.column_names), buffer)
    buffer.seek(0)
    return buffer


# -- Staging a load ---------------------------------------------------------------------------


# BigQuery's limit on source URIs in one load job's configuration
# (https://cloud.google.com/bigquery/quotas#load_jobs: "Maximum number of source URIs in job
# configuration: 10,000 URIs").
MAX_URIS_PER_LOAD_JOB = 10_000


def load_from_storage(
    connection: bigquery.Client,
    uris: Sequence[str],
    destination: bigquery.Table,
    *,
    location: str | None = None,
    timeout: float | None = None,
) -> int:
    """Append the Parquet objects at `uris` (gs://…) to `destination`; returns the jobs run.

    As few load jobs as BigQuery allows (one for up to MAX_URIS_PER_LOAD_JOB objects): the
    objects go from Cloud Storage to BigQuery without a byte through this process. The table's
    own schema is sent with each job, so the files are checked against it rather than typed
    by inference; the files' columns must be the table's, in its order.
    """
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        schema=destination.schema,
    )
    starts = range(0, len(uris), MAX_URIS_PER_LOAD_JOB)
    for start in starts:
        connection.load_table_from_uri(
            list(uris[start : start + MAX_URIS_PER_LOAD_JOB]),
            destination.reference,
            job_config=config,
            location=location,
            timeout=timeout,
        ).result()
    return len(starts)


def _staging_prefix(table: bigquery.Table) -> str:
    return f"{table.table_id}__load_"


def _drop_dead_staging_tables(connection: bigquery.Client, table: bigquery.Table) -> None:
    """Drop the staging tables a killed run left (they would expire in a day anyway).

    Writers of one table take turns (its asset's concurrency pool), so any staging table of
    `table` that exists before a write belongs to a run that is gone. Nobody reads them.
    """
    for listed in connection.list_tables(f"{table.project}.{table.dataset_id}"):
        if listed.table_id.startswith(_staging_prefix(table)):
            connection.delete_table(listed.reference, not_found_ok=True)


@contextmanager
def staging_table(
    connection: bigquery.Client,
    table: bigquery.Table,
    schema: Sequence[bigquery.SchemaField] | None = None,
) -> Iterator[bigquery.Table]:
    """An empty table for one load into `table`, shaped like it or with `schema` (the files'
    own columns, when they are renamed on the way in); dropped after, expiring if we die first."""
    _drop_dead_staging_tables(connection, table)
    staging = bigquery.Table(
        f"{table.project}.{table.dataset_id}.{_staging_prefix(table)}{uuid.uuid4().hex[:12]}",
        schema=list(schema) if schema is not None else table.schema,
    )
    staging.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    staging = connection.create_table(staging)
    try:
        yield staging
    finally:
        connection.delete_table(staging.reference, not_found_ok=True)


@contextmanager
def staged_objects(
    connection: bigquery.Client,
    table: bigquery.Table,
    uris: Sequence[str],
    file_schema: pa.Schema,
    names: Sequence[str],
    *,
    location: str | None = None,
    timeout: float | None = None,
) -> Iterator[tuple[str, int]]:
    """The Parquet objects at `uris`, loaded into a staging table beside `table`.

    The staging table takes the files' own columns (`file_schema`, in its order: a load job can
    neither rename nor reorder, and some servers match Parquet columns by position). Yields a
    query selecting the staged rows with each column renamed to `names` (column for column),
    and the load jobs run.
    """
    fields = bigquery_schema(file_schema)
    with staging_table(connection, table, fields) as staging:
        jobs = load_from_storage(connection, uris, staging, location=location, timeout=timeout)
        renamed = ", ".join(
            f"{quoted(field.name)} AS {quoted(name)}"
            for field, name in zip(fields, names, strict=True)
        )
        yield (
            f"SELECT {renamed} FROM `{staging.project}.{staging.dataset_id}.{staging.table_id}`",
            jobs,
        )


def count_outside(
    connection: bigquery.Client,
    rows: str,
    condition: str,
    *,
    location: str | None = None,
    timeout: float | None = None,
) -> tuple[int, int]:
    """How many rows the query `rows` selects fail `condition` (or leave it null), of how many."""
    [(outside, total)] = connection.query(
        f"SELECT COUNTIF(NOT COALESCE({condition}, FALSE)), COUNT(*) FROM ({rows})",
        location=location,
        timeout=timeout,
    ).result()
    return outside, total


def replace_rows(
    connection: bigquery.Client,
    table_id: str,
    where: str,
    columns: Sequence[str],
    rows: str,
    *,
    location: str | None = None,
    timeout: float | None = None,
) -> None:
    """In one transaction, delete the rows of `table_id` that `where` selects and insert into
    `columns` those the query `rows` selects: readers see the old rows or the new, never both."""
    names = ", ".join(map(quoted, columns))
    connection.query(
        f"BEGIN TRANSACTION;\nDELETE FROM `{table_id}` WHERE\n{where};\n"
        f"INSERT INTO `{table_id}` ({names})\n{rows};\n"
        "COMMIT TRANSACTION;",
        location=location,
        timeout=timeout,
    ).result()
