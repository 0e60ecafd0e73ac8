"""IO managers for the Parquet lake: monthly objects, a hive dataset by day, daily exports.

Every file is published with a single write (lake_versions.write_parquet): on GCS an object
only appears when its upload is finalised, on local disk a hidden temporary file is renamed
over the target. A monthly object is one file. The daily layouts write a range of days per run
through a manifest (lake_versions.VersionedDays), so the range switches at once; their loads
read the files the manifest names.

Layouts, relative to the lake root:
- MonthlyParquetIOManager  {name}/{YYYY-MM}.parquet                (name: nyc_taxi_data)
- DailyDatasetIOManager    {name}/tpep_pickup_date=YYYY-MM-DD/part-0.parquet
                                                                   (name: nyc_taxi_data_by_day)
- DailyExportIOManager     {YYYY}/{MM}/{DD}/{name}.parquet         (name: nyc_taxi_data)
`name` is the IO manager's field, overridden per asset by the metadata key "lake/name".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from taxi_assets.io_managers.lake_versions import VersionedDays, write_parquet
from taxi_assets.lake import LakeResource
from taxi_assets.schema import to_pandas
from taxi_assets.shrink_guard import ShrinkRefused, shrink_allowed, shrink_refusal

NAME_METADATA_KEY = "lake/name"
DATASET_FILE = "part-0.parquet"


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
        self.lake.check_reachable()
        size = write_parquet(self.lake.filesystem(), path, _as_table(obj))
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


class _DailyLayoutIOManager(_LakeIOManager):
    """A layout of one file (or none) per day, a range of days replaced at once per output.

    Each output covers one or several daily partitions (a single-run backfill) and replaces
    exactly those days through the layout's manifest (see lake_versions.py), after the shrink
    guard: a range that would keep fewer than half the rows the lake holds for it is refused.
    """

    date_column: str = "tpep_pickup_datetime"

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        raise NotImplementedError

    def _write_days(self, context: dg.OutputContext, obj: pd.DataFrame) -> tuple[list, list, int]:
        """Stage every day of the output's window, then switch them in; returns the days with
        rows, the days without, and the bytes written."""
        self.lake.check_reachable()
        fs = self.lake.filesystem()
        layout = self._layout(context, fs)
        layout.recover()  # a dead run's switch finished, its leftovers removed
        days = _window_days(context)
        table = _as_table(obj)
        names = [day.isoformat() for day in days]
        refusal = shrink_refusal(
            f"{context.asset_key.to_user_string()} {names[0]}..{names[-1]}",
            layout.rows(names), table.num_rows)
        # The run's tags are only reachable through the step context in an IO manager.
        if refusal and not shrink_allowed(context.step_context.run_tags):
            raise ShrinkRefused(refusal)
        version = layout.new_version(context.run_id)
        written, empty, size = [], [], 0
        try:
            for day, rows in _split_by_day(table, self.date_column, days):
                size += version.put(day.isoformat(), rows)
                (written if rows.num_rows else empty).append(day.isoformat())
        except BaseException:
            version.discard()
            raise
        version.commit()
        return written, empty, size

    def _day_paths(self, context: dg.InputContext, fs: pafs.FileSystem) -> list[str]:
        current = self._layout(context, fs).days()
        paths = []
        for day in _window_days(context):
            entry = current.get(day.isoformat())
            if entry is None:  # written before the layout had a manifest
                paths += self._unrecorded_paths(context, fs, day)
            elif entry.path is not None:
                paths.append(entry.path)
        return paths

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        raise NotImplementedError


class DailyDatasetIOManager(_DailyLayoutIOManager):
    """A hive-partitioned dataset, one folder per day of `date_column`:
    `{root}/{name}/{partition_column}=YYYY-MM-DD/part-0.parquet`, manifest `{name}/_manifest.json`.

    Each day with rows gets one file, each day without rows is emptied, other days are not
    touched. The day is in the path only; files hold the asset's columns unchanged and loading
    returns them unchanged.
    """

    name: str = "nyc_taxi_data_by_day"
    partition_column: str = "tpep_pickup_date"

    def _folder(self, context, day: dt.date | str) -> str:
        day = day if isinstance(day, str) else day.isoformat()
        return f"{self._name(context)}/{self.partition_column}={day}"

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(
            fs, self._name(context),
            published_path=lambda day, rows: (
                f"{self._folder(context, day)}/{DATASET_FILE}" if rows else None),
            stale_files=lambda day: _files_under(fs, self._folder(context, day)),
        )

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        written, cleared, size = self._write_days(context, obj)
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
        return _to_pandas([_read_parquet(fs, path, columns)
                           for path in self._day_paths(context, fs)])

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        return [path for path in _files_under(fs, self._folder(context, day))
                if not path.rpartition("/")[2].startswith((".", "_"))]


class DailyExportIOManager(_DailyLayoutIOManager):
    """One object per day: `{root}/{YYYY}/{MM}/{DD}/{name}.parquet`, manifest
    `{root}/_daily_exports/{name}/_manifest.json`.

    A multi-day output is split by the day of `date_column`; a day without rows still gets
    its (empty) object, so every materialised partition can be loaded.
    """

    name: str = "nyc_taxi_data"

    def _path(self, context, day: dt.date | str) -> str:
        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        return f"{day:%Y/%m/%d}/{self._name(context)}.parquet"

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(fs, f"_daily_exports/{self._name(context)}",
                             published_path=lambda day, rows: self._path(context, day))

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        written, empty, size = self._write_days(context, obj)
        days = sorted(written + empty)
        uris = [self.lake.uri(self._path(context, day)) for day in days]
        context.add_output_metadata({
            "uri": dg.MetadataValue.path(uris[0] if len(uris) == 1 else self.lake.uri()),
            "objects": uris,
            "bytes": size,
            **_row_count(context, len(obj)),
            "days_written": days,
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        fs = self.lake.filesystem()
        return _to_pandas([_read_parquet(fs, path) for path in self._day_paths(context, fs)])

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        return [self._path(context, day)]
