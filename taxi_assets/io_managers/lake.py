"""IO managers for the Parquet lake: monthly objects, a hive dataset by day, daily exports.

All three write through `_write_parquet`: the whole file is serialised in memory and then
published with a single write. On GCS an object only appears when its upload is finalised, so a
failed upload leaves the previous object readable (and pyarrow streaming row groups to GCS would
upload in 1 MiB pieces, several times slower). On local disk the bytes go to a hidden temporary
file that is renamed over the target, which is atomic.

Layouts, relative to the lake root:
- MonthlyParquetIOManager  {name}/{YYYY-MM}.parquet                (name: nyc_taxi_data)
- DailyDatasetIOManager    {name}/tpep_pickup_date=YYYY-MM-DD/part-0.parquet
                                                                   (name: nyc_taxi_data_by_day)
- DailyExportIOManager     {YYYY}/{MM}/{DD}/{name}.parquet         (name: nyc_taxi_data)
`name` is the IO manager's field, overridden per asset by the metadata key "lake/name".
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from taxi_assets.lake import LakeResource
from taxi_assets.schema import to_pandas

NAME_METADATA_KEY = "lake/name"
DATASET_FILE = "part-0.parquet"


def _write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> int:
    """Publish `table` as one Parquet object at `path`; returns its size in bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue()
    try:
        if _is_local(fs):
            _replace_local_file(fs, path, data)
        else:
            with fs.open_output_stream(path) as out:
                out.write(data)
    except OSError as error:
        raise OSError(f"writing {path} ({data.size:,} bytes) to the lake failed; any previous "
                      f"version is left as it was: {error}") from error
    return data.size


def _replace_local_file(fs: pafs.FileSystem, path: str, data: pa.Buffer) -> None:
    # Object stores need no folders (creating them on GCS adds placeholder objects); disks do.
    parent, _, file_name = path.rpartition("/")
    fs.create_dir(parent, recursive=True)
    # The leading dot keeps pyarrow's dataset discovery away from a half-written file.
    partial = "/".join(filter(None, [parent, f".{file_name}.{uuid.uuid4().hex}.tmp"]))
    try:
        with fs.open_output_stream(partial) as out:
            out.write(data)
        fs.move(partial, path)
    except BaseException:
        if fs.get_file_info(partial).type != pafs.FileType.NotFound:
            fs.delete_file(partial)
        raise


def _is_local(fs: pafs.FileSystem) -> bool:
    base = fs.base_fs if isinstance(fs, pafs.SubTreeFileSystem) else fs
    return isinstance(base, pafs.LocalFileSystem)


def _read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    try:
        # One GET for the whole object, mirroring the single write.
        with fs.open_input_file(path) as source:
            return pq.read_table(pa.BufferReader(source.read_buffer()), columns=columns)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path} is not in the lake: is its partition materialized? "
                                f"({error})") from error


def _files_under(fs: pafs.FileSystem, folder: str) -> list[str]:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    return sorted(info.path for info in fs.get_file_info(selector) if info.is_file)


def _to_pandas(tables: Sequence[pa.Table]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame()
    # A column that is all null in one file is typed null there; "default" promotes it.
    return to_pandas(pa.concat_tables(tables, promote_options="default"))


def _days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def _months_between(start: dt.date, end: dt.date) -> list[dt.date]:
    months, month = [], start.replace(day=1)
    while month < end:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return months


def _window_days(context: dg.OutputContext | dg.InputContext) -> list[dt.date]:
    window = context.asset_partitions_time_window
    return _days_between(window.start.date(), window.end.date())


def _split_by_day(
    table: pa.Table, column: str, days: Iterable[dt.date] | None
) -> Iterator[tuple[dt.date, pa.Table]]:
    """Rows per day of `column`; every day of `days` gets an entry, possibly empty.

    Days are cut one at a time as the caller asks, so a month is never held twice over.

    Rows outside `days` are an error, not dropped: writing them would overwrite another
    partition's data, and dropping them would lose trips silently.
    """
    if table[column].null_count:
        raise ValueError(f"{table[column].null_count} rows have no {column}: they belong to no day")
    row_days = pc.cast(table[column], pa.date32())
    present = set(pc.unique(row_days).to_pylist())
    wanted = sorted(present) if days is None else list(days)
    outside = sorted(present - set(wanted))
    if outside:
        raise ValueError(
            f"rows with {column} on {[d.isoformat() for d in outside[:5]]} (and maybe more) fall "
            f"outside the partitions being written ({wanted[0]} .. {wanted[-1]}); filter them "
            "in the asset or widen its partitions"
        )
    for day in wanted:
        yield day, table.filter(pc.equal(row_days, pa.scalar(day, pa.date32())))


def _as_table(obj: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(obj, preserve_index=False)


def _row_count(context: dg.OutputContext, rows: int) -> dict:
    # Output metadata is copied onto every partition a run covers, and the UI would show the
    # whole run's rows as each day's count.
    if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
        return {"rows_in_run": rows}
    return {"dagster/row_count": rows}


class _LakeIOManager(dg.ConfigurableIOManager):
    lake: LakeResource
    name: str

    def _name(self, context: dg.OutputContext | dg.InputContext) -> str:
        if isinstance(context, dg.InputContext):
            upstream = context.upstream_output
            metadata = upstream.definition_metadata if upstream else {}
        else:
            metadata = context.definition_metadata
        return str((metadata or {}).get(NAME_METADATA_KEY, self.name))


class MonthlyParquetIOManager(_LakeIOManager):
    """One Parquet object per monthly partition: `{root}/{name}/{YYYY-MM}.parquet`."""

    name: str = "nyc_taxi_data"

    def _path(self, context, month: dt.date) -> str:
        return f"{self._name(context)}/{month:%Y-%m}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        window = context.asset_partitions_time_window
        months = _months_between(window.start.date(), window.end.date())
        if len(months) != 1:
            raise ValueError(f"{context.asset_key.to_user_string()}: one output must be one "
                             f"month, got {len(months)}; do not backfill it as a single run")
        path = self._path(context, months[0])
        size = _write_parquet(self.lake.filesystem(), path, _as_table(obj))
        context.add_output_metadata({
            "uri": dg.MetadataValue.path(self.lake.uri(path)),
            "bytes": size,
            "dagster/row_count": len(obj),
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        fs = self.lake.filesystem()
        window = context.asset_partitions_time_window
        months = _months_between(window.start.date(), window.end.date())
        return _to_pandas([_read_parquet(fs, self._path(context, m)) for m in months])


class DailyDatasetIOManager(_LakeIOManager):
    """A hive-partitioned dataset, one folder per day of `date_column`:
    `{root}/{name}/{partition_column}=YYYY-MM-DD/part-0.parquet`.

    An output covers one or several daily partitions (a single-run backfill) and replaces
    exactly those days' folders: each day present gets one file, each day without rows is
    emptied, other days are not touched. The day is in the path only; files hold the asset's
    columns unchanged and loading returns them unchanged.
    """

    name: str = "nyc_taxi_data_by_day"
    date_column: str = "tpep_pickup_datetime"
    partition_column: str = "tpep_pickup_date"

    def _folder(self, context, day: dt.date) -> str:
        return f"{self._name(context)}/{self.partition_column}={day.isoformat()}"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        fs = self.lake.filesystem()
        days = _window_days(context) if context.has_asset_partitions else None
        written, cleared, size = [], [], 0
        for day, rows in _split_by_day(_as_table(obj), self.date_column, days):
            folder = self._folder(context, day)
            target = f"{folder}/{DATASET_FILE}"
            if rows.num_rows:
                # Written before stale files go, so the day never reads as empty meanwhile.
                size += _write_parquet(fs, target, rows)
                written.append(day.isoformat())
            else:
                cleared.append(day.isoformat())
            for stale in _files_under(fs, folder):
                if stale != target or not rows.num_rows:
                    fs.delete_file(stale)
        context.add_output_metadata({
            "uri": dg.MetadataValue.path(self.lake.uri(self._name(context))),
            "bytes": size,
            **_row_count(context, len(obj)),
            "days_written": written,
            "days_without_rows": cleared,
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        fs = self.lake.filesystem()
        # An input may ask for some columns only (metadata "columns"), as Dagster's database
        # IO managers allow: a row count needs one column, not the month.
        columns = context.definition_metadata.get("columns")
        tables = [
            _read_parquet(fs, path, columns)
            for day in _window_days(context)
            for path in _files_under(fs, self._folder(context, day))
            if not path.rpartition("/")[2].startswith((".", "_"))
        ]
        return _to_pandas(tables)


class DailyExportIOManager(_LakeIOManager):
    """One object per day: `{root}/{YYYY}/{MM}/{DD}/{name}.parquet`.

    A multi-day output is split by the day of `date_column`; a day without rows still gets
    its (empty) object, so every materialised partition can be loaded.
    """

    name: str = "nyc_taxi_data"
    date_column: str = "tpep_pickup_datetime"

    def _path(self, context, day: dt.date) -> str:
        return f"{day:%Y/%m/%d}/{self._name(context)}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        fs = self.lake.filesystem()
        uris, days, size = [], [], 0
        by_day = _split_by_day(_as_table(obj), self.date_column, _window_days(context))
        for day, rows in by_day:
            path = self._path(context, day)
            size += _write_parquet(fs, path, rows)
            uris.append(self.lake.uri(path))
            days.append(day.isoformat())
        context.add_output_metadata({
            "uri": dg.MetadataValue.path(uris[0] if len(uris) == 1 else self.lake.uri()),
            "objects": uris,
            "bytes": size,
            **_row_count(context, len(obj)),
            "days_written": days,
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        fs = self.lake.filesystem()
        days = _window_days(context)
        return _to_pandas([_read_parquet(fs, self._path(context, day)) for day in days])
