"""IO managers for the Parquet lake: monthly objects, a hive dataset by day, daily exports.

All three write their batches as they arrive, row group by row group, into a `_PendingObject`
that only becomes the object at its path once whole: on local disk a hidden temporary file
beside the target, renamed over it (atomic); on GCS a local spool file, uploaded in large
pieces to a hidden object that is then copied to the target by the server, so a half object
is never readable and a failed upload leaves the previous one in place. Only a few row groups
are in memory at a time, whatever the month's size. A monthly object is one such object,
written beside its month's Postgres load and published with its swap (month_publishes.py). The
daily layouts write a range of days per run through a manifest (lake_versions.VersionedDays):
each day's object is written as a version beside the current files, and one manifest write
switches the whole range; their loads read the files the manifest names.

Layouts, relative to the lake root (the defaults: yellow's; each dataset's assets name theirs):
- MonthlyParquetIOManager  {name}/{YYYY-MM}.parquet                (name: nyc_taxi_data)
- DailyDatasetIOManager    {name}/tpep_pickup_date=YYYY-MM-DD/part-0.parquet
                                                                   (name: nyc_taxi_data_by_day)
- DailyExportIOManager     {YYYY}/{MM}/{DD}/{name}.parquet         (name: nyc_taxi_data)
`name`, `date_column` (whose day a row belongs to) and `partition_column` are the IO manager's
fields, overridden per asset by the metadata keys "lake/name", "lake/date_column" and
"lake/partition_column".
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from taxi_assets.tlc import batches as batching
from taxi_assets.storage.atomic_files import PendingObject, is_local, local_path
from taxi_assets.tlc.batches import TripBatches, conformed, rebatched
from taxi_assets.dagster_private import running_step_job_writes, running_step_run_tags
from taxi_assets.defs.io_managers import month_publishes
from taxi_assets.storage.lake_versions import LOCAL_LAKE_SETTING, VersionedDays
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.defs.resources import LakeResource, PostgresResource
from taxi_assets.tlc.schema import to_pandas
from taxi_assets.shrink_guard import ShrinkRefused, shrink_allowed, shrink_refusal

NAME_METADATA_KEY = "lake/name"
DATE_COLUMN_METADATA_KEY = "lake/date_column"
PARTITION_COLUMN_METADATA_KEY = "lake/partition_column"
# The `schema.table` a monthly object is one version with (month_publishes.py).
FOLLOWS_POSTGRES_METADATA_KEY = "lake/follows_postgres_table"
# On a Postgres trips asset: the month object's `lake/name`, written beside the partition, and
# a column the partition has that the object leaves out.
MONTH_OBJECT_METADATA_KEY = "lake/month_object"
MONTH_OBJECT_OMITS_METADATA_KEY = "lake/month_object_omits"

DATASET_FILE = "part-0.parquet"


def _row_group_rows() -> int:
    return 2 * batching.BATCH_ROWS


class _PendingObject:
    """A Parquet object being written; `publish()` makes it visible at `path`, whole.

    `version` (the run writing it) is kept in the file's key-value metadata, so the object
    itself says which run's version of its month it holds.
    """

    def __init__(
        self, fs: pafs.FileSystem, path: str, schema: pa.Schema, version: str | None = None
    ):
        self.path, self.schema, self.rows = path, schema, 0
        self._waiting: list[pa.RecordBatch] = []
        with _naming(path):
            self._object = PendingObject(fs, path, LOCAL_LAKE_SETTING)
            self._writer = pq.ParquetWriter(self._object.stream, schema)
            if version is not None:
                self._writer.add_key_value_metadata({month_publishes.VERSION_KEY: version})

    @property
    def hidden(self) -> str:
        return self._object.hidden

    def write(self, table: pa.Table) -> None:
        with _naming(self.path):
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def append(self, batch: pa.RecordBatch) -> None:
        """Add a batch; written out a row group at a time."""
        self._waiting.append(batch)
        if sum(b.num_rows for b in self._waiting) >= _row_group_rows():
            self._flush()

    def _flush(self) -> None:
        if self._waiting:
            self.write(pa.Table.from_batches(self._waiting))
            self._waiting = []

    def stage(self) -> int:
        """Finish the file under its hidden name, not yet at `path`; returns its size."""
        self._flush()
        with _naming(self.path):
            self._writer.close()
            return self._object.stage()

    def publish(self) -> int:
        """Finish the file and put it at `path` in one step; returns its size in bytes."""
        self.stage()
        with _naming(self.path):
            return self._object.publish()

    def release(self) -> None:
        """Keep the staged file for whoever publishes it by its recorded hidden name."""
        self._object.release()

    def discard(self) -> None:
        """Drop what was written; the object at `path` stays as it was."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._object.discard()


def month_object_path(name: str, month: dt.date | str) -> str:
    """Where a month's object lives in the lake: `{name}/{YYYY-MM}.parquet`."""
    month = dt.date.fromisoformat(month) if isinstance(month, str) else month
    return f"{name}/{month:%Y-%m}.parquet"


def stage_month_object(
    lake: LakeResource, name: str, month: str, schema: pa.Schema, version: str
) -> _PendingObject:
    """The month's new object, to be written batch by batch (`append`) and staged beside the
    current one; published by month_publishes once the Postgres swap recorded it."""
    return _PendingObject(
        lake.filesystem(), month_object_path(name, month), _plain(schema), version
    )


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise OSError(
            f"writing {path} to the lake failed; any previous version is left as it was: {error}"
        ) from error


@contextlib.contextmanager
def _all_or_none(pending: dict[object, _PendingObject]) -> Iterator[None]:
    """On any failure, discard every pending object, so none of them is ever published."""
    try:
        yield
    except BaseException:
        for obj in pending.values():
            obj.discard()
        raise


def _write_object(
    fs: pafs.FileSystem, path: str, trips: TripBatches, version: str | None = None
) -> tuple[int, int]:
    """Publish the batches as one Parquet object at `path`; returns (bytes, rows)."""
    pending = {path: _PendingObject(fs, path, _plain(trips.schema), version)}
    with _all_or_none(pending):
        for table in rebatched(trips, _row_group_rows()):
            pending[path].write(table)
        return pending[path].publish(), pending[path].rows


def _plain(schema: pa.Schema) -> pa.Schema:
    # pandas' metadata would make a reader rebuild an index the rows never had.
    return schema.remove_metadata()


def _open_input(fs: pafs.FileSystem, path: str) -> pa.NativeFile:
    try:
        return fs.open_input_file(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{path} is not in the lake: is its partition materialized? ({error})"
        ) from error


def _read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    # One GET for the whole object: only for notebooks, which ask for a month or a day.
    with _open_input(fs, path) as source:
        return pq.read_table(pa.BufferReader(source.read_buffer()), columns=columns)


def _streamed(
    fs: pafs.FileSystem, paths: Sequence[str], columns: list[str] | None = None
) -> TripBatches:
    """The objects' rows as a stream, one row group at a time, under one schema."""
    schemas = []
    for path in paths:
        with _open_input(fs, path) as source:
            schemas.append(pq.ParquetFile(source).schema_arrow)
    # A column that is all null in one file is typed null there; "default" promotes it.
    schema = pa.unify_schemas(schemas, promote_options="default") if schemas else pa.schema([])
    if columns and schemas:
        schema = pa.schema([schema.field(name) for name in columns])

    def batches():
        for path in paths:
            with _open_input(fs, path) as source:
                for batch in pq.ParquetFile(source).iter_batches(
                    batch_size=batching.BATCH_ROWS, columns=columns
                ):
                    yield conformed(batch, schema)

    return TripBatches(schema, batches)


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


class _DaySplit:
    """A stream's rows into one pending object per day of `column`, without holding the month.

    Rows wait per day until a day has a row group's worth; when all days together hold more
    than a few row groups, the fullest day is written out early. Every row must fall on one of
    `days` (all days present, if None): writing a row elsewhere would overwrite another
    partition's data, and dropping it would lose a trip silently.
    """

    def __init__(
        self,
        open_day: Callable[[dt.date, pa.Schema], _PendingObject],
        column: str,
        days: Iterable[dt.date] | None,
    ):
        self._open_day, self._column = open_day, column
        self._days = None if days is None else list(days)
        self.pending: dict[dt.date, _PendingObject] = {}
        self._waiting: dict[dt.date, list[pa.RecordBatch]] = {}
        self._waiting_rows: dict[dt.date, int] = {}

    def split(self, trips: TripBatches) -> None:
        for batch in trips:
            self._add(batch)
        for day in list(self._waiting):
            self._flush(day)

    def _add(self, batch: pa.RecordBatch) -> None:
        dates = batch.column(self._column)
        if dates.null_count:
            raise ValueError(
                f"{dates.null_count} rows have no {self._column}: they belong to no day"
            )
        row_days = pc.cast(dates, pa.date32())
        present = pc.unique(row_days).to_pylist()
        if self._days is not None:
            outside = sorted(set(present) - set(self._days))
            if outside:
                raise ValueError(
                    f"rows with {self._column} on {[d.isoformat() for d in outside[:5]]} (and "
                    f"maybe more) fall outside the partitions being written ({self._days[0]} .. "
                    f"{self._days[-1]}); filter them in the asset or widen its partitions"
                )
        for day in present:
            rows = (
                batch
                if len(present) == 1
                else batch.filter(pc.equal(row_days, pa.scalar(day, pa.date32())))
            )
            self._waiting.setdefault(day, []).append(rows)
            self._waiting_rows[day] = self._waiting_rows.get(day, 0) + rows.num_rows
            if self._waiting_rows[day] >= _row_group_rows():
                self._flush(day)
        while sum(self._waiting_rows.values()) > 4 * _row_group_rows():
            self._flush(max(self._waiting_rows, key=self._waiting_rows.__getitem__))

    def _flush(self, day: dt.date) -> None:
        waiting = self._waiting.pop(day)
        del self._waiting_rows[day]
        if day not in self.pending:
            self.pending[day] = self._open_day(day, _plain(waiting[0].schema))
        self.pending[day].write(pa.Table.from_batches(waiting))


def _row_count(context: dg.OutputContext, rows: int) -> dict:
    # Output metadata is copied onto every partition a run covers, and the UI would show the
    # whole run's rows as each day's count.
    if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
        return {"rows_in_run": rows}
    return {"dagster/row_count": rows}


class _LakeIOManager(dg.ConfigurableIOManager):
    lake: LakeResource
    name: str

    @staticmethod
    def _setting(context: dg.OutputContext | dg.InputContext, key: str, default: str) -> str:
        """The asset's metadata `key` (`lake/name`, …), else the IO manager's own setting."""
        if isinstance(context, dg.InputContext):
            upstream = context.upstream_output
            metadata = upstream.definition_metadata if upstream else {}
        else:
            metadata = context.definition_metadata
        return str((metadata or {}).get(key, default))

    def _name(self, context: dg.OutputContext | dg.InputContext) -> str:
        return self._setting(context, NAME_METADATA_KEY, self.name)

    def _publish(
        self,
        context: dg.OutputContext,
        path: str,
        obj: TripBatches | pd.DataFrame,
        version: str | None = None,
    ) -> None:
        """`obj` as the one Parquet object at `path`; says where it is and what it holds."""
        self.lake.check_reachable()
        size, rows = _write_object(self.lake.filesystem(), path, TripBatches.of(obj), version)
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(self.lake.uri(path)),
                "bytes": size,
                "dagster/row_count": rows,
            }
        )


class MonthlyParquetIOManager(_LakeIOManager):
    """One Parquet object per monthly partition: `{root}/{name}/{YYYY-MM}.parquet`.

    With `postgres`, an object whose asset names the table it is one version with (metadata
    "lake/follows_postgres_table") is written beside that table's partition by its IO manager
    (month_publishes.py). Here the month's recorded versions are settled first (a staged
    object a dead run committed is published); in a run that also writes that table the
    published object is then only described; a run without the table writes the object
    alone, its run recorded as the lake's version of the month.
    """

    name: str = "nyc_taxi_data"
    postgres: PostgresResource | None = None

    def _path(self, context, month: dt.date) -> str:
        return month_object_path(self._name(context), month)

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        window = context.asset_partitions_time_window
        months = _months_between(window.start.date(), window.end.date())
        if len(months) != 1:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: one output must be one "
                f"month, got {len(months)}; do not backfill it as a single run"
            )
        path = self._path(context, months[0])
        follows = context.definition_metadata.get(FOLLOWS_POSTGRES_METADATA_KEY)
        if follows is None or self.postgres is None:
            self._publish(context, path, obj)
            return
        month, uri = months[0].isoformat(), self.postgres.uri()
        self.lake.check_reachable()
        fs = self.lake.filesystem()
        month_publishes.settle(uri, fs, follows, month, context.log)
        recorded = month_publishes.versions(uri, follows, month)
        if (
            recorded is not None
            and recorded.lake_run == recorded.postgres_run
            and running_step_job_writes(context, dg.AssetKey(follows.split(".")))
        ):
            # Written beside the partition by this run's Postgres step and published (or by a
            # run of the month that committed after it): one version, nothing to write.
            with _open_input(fs, path) as source:
                rows = pq.ParquetFile(source).metadata.num_rows
            context.add_output_metadata(
                {
                    "uri": dg.MetadataValue.path(self.lake.uri(path)),
                    "bytes": fs.get_file_info(path).size,
                    "dagster/row_count": rows,
                }
            )
            return
        self._publish(context, path, obj, version=context.run_id)
        recorded = month_publishes.lake_written(uri, follows, month, context.run_id, path)
        if recorded.lake_behind:
            context.log.warning(
                recorded.describe(follows) + ": this run wrote the object alone; running the "
                "month (its Postgres table with it) brings both to one version"
            )

    def versions_behind(self, postgres_table: str, log=None) -> list[month_publishes.MonthVersions]:
        """Publish every staged object a swap of `postgres_table` committed; the months whose
        object is still behind their partition (none without `postgres`: no record)."""
        if self.postgres is None:
            return []
        self.lake.check_reachable()
        return month_publishes.settle(
            self.postgres.uri(), self.lake.filesystem(), postgres_table, log=log
        )

    def load_input(self, context: dg.InputContext) -> TripBatches | pd.DataFrame:
        fs = self.lake.filesystem()
        window = context.asset_partitions_time_window
        months = _months_between(window.start.date(), window.end.date())
        paths = [self._path(context, m) for m in months]
        if context.dagster_type.typing_type is TripBatches:
            return _streamed(fs, paths)
        return _to_pandas([_read_parquet(fs, path) for path in paths])


class _DailyLayoutIOManager(_LakeIOManager):
    """A layout of one file (or none) per day, a range of days replaced at once per output.

    Each output covers one or several daily partitions (a single-run backfill) and replaces
    exactly those days through the layout's manifest (see lake_versions.py): the days' objects
    are written as versions, the shrink guard compares their rows with what the manifest holds
    for those days (fewer than half is refused), and one manifest write switches them in.
    """

    date_column: str = "tpep_pickup_datetime"
    # Whether a day without rows keeps an (empty) object, or no file at all.
    keeps_empty_days: ClassVar[bool] = False

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        raise NotImplementedError

    def _write_days(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame):
        """Stage every day of the output's window, then switch them in; returns the days with
        rows, the days without, the bytes and the rows written."""
        self.lake.check_reachable()
        fs = self.lake.filesystem()
        layout = self._layout(context, fs)
        layout.recover()  # a dead run's switch finished, its leftovers removed
        days = _window_days(context)
        trips = TripBatches.of(obj)
        version = layout.new_version(context.run_id)
        split = _DaySplit(
            lambda day, schema: _PendingObject(fs, version.path_for(day.isoformat()), schema),
            self._setting(context, DATE_COLUMN_METADATA_KEY, self.date_column),
            days,
        )
        written, empty, size = [], [], 0
        try:
            with _all_or_none(split.pending):
                split.split(trips)
                for day in days:
                    if self.keeps_empty_days and day not in split.pending:
                        split.pending[day] = _PendingObject(
                            fs, version.path_for(day.isoformat()), _plain(trips.schema)
                        )
            for day in days:
                pending = split.pending.pop(day, None)
                if pending is None:
                    version.record(day.isoformat(), None, 0)
                else:
                    with _all_or_none({day: pending, **split.pending}):
                        size += pending.publish()
                    version.record(day.isoformat(), pending.path, pending.rows)
                (written if pending is not None and pending.rows else empty).append(day.isoformat())
            names = [day.isoformat() for day in days]
            refusal = shrink_refusal(
                f"{context.asset_key.to_user_string()} {names[0]}..{names[-1]}",
                layout.rows(names),
                version.rows,
            )
            if refusal and not shrink_allowed(running_step_run_tags(context)):
                raise ShrinkRefused(refusal)
        except BaseException:
            version.discard()
            raise
        version.commit()
        return written, empty, size, version.rows

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

    def _load(self, context: dg.InputContext, columns: list[str] | None = None):
        fs = self.lake.filesystem()
        paths = self._day_paths(context, fs)
        if context.dagster_type.typing_type is LakeDayFiles:
            local = tuple(str(local_path(fs, path)) for path in paths) if is_local(fs) else None
            gcs = tuple(self.lake.uri(path) for path in paths) if self.lake.is_gcs else None
            return LakeDayFiles(_streamed(fs, paths, columns), local, gcs_uris=gcs)
        if context.dagster_type.typing_type is TripBatches:
            return _streamed(fs, paths, columns)
        return _to_pandas([_read_parquet(fs, path, columns) for path in paths])


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
        column = self._setting(context, PARTITION_COLUMN_METADATA_KEY, self.partition_column)
        return f"{self._name(context)}/{column}={day}"

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(
            fs,
            self._name(context),
            published_path=lambda day, rows: (
                f"{self._folder(context, day)}/{DATASET_FILE}" if rows else None
            ),
            stale_files=lambda day: _files_under(fs, self._folder(context, day)),
        )

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        written, cleared, size, rows = self._write_days(context, obj)
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(self.lake.uri(self._name(context))),
                "bytes": size,
                **_row_count(context, rows),
                "days_written": written,
                "days_without_rows": cleared,
            }
        )

    def load_input(self, context: dg.InputContext) -> LakeDayFiles | TripBatches | pd.DataFrame:
        # An input may ask for some columns only (metadata "columns"), as Dagster's database
        # IO managers allow: a row count needs one column, not the month.
        return self._load(context, context.definition_metadata.get("columns"))

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        return [
            path
            for path in _files_under(fs, self._folder(context, day))
            if not path.rpartition("/")[2].startswith((".", "_"))
        ]


class DailyExportIOManager(_DailyLayoutIOManager):
    """One object per day: `{root}/{YYYY}/{MM}/{DD}/{name}.parquet`, manifest
    `{root}/_daily_exports/{name}/_manifest.json`.

    A multi-day output is split by the day of `date_column`; a day without rows still gets
    its (empty) object, so every materialised partition can be loaded.
    """

    name: str = "nyc_taxi_data"
    keeps_empty_days: ClassVar[bool] = True

    def _path(self, context, day: dt.date | str) -> str:
        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        return f"{day:%Y/%m/%d}/{self._name(context)}.parquet"

    def _layout(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(
            fs,
            f"_daily_exports/{self._name(context)}",
            published_path=lambda day, rows: self._path(context, day),
        )

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        written, empty, size, rows = self._write_days(context, obj)
        days = sorted(written + empty)
        uris = [self.lake.uri(self._path(context, day)) for day in days]
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(uris[0] if len(uris) == 1 else self.lake.uri()),
                "objects": uris,
                "bytes": size,
                **_row_count(context, rows),
                "days_written": days,
            }
        )

    def load_input(self, context: dg.InputContext) -> TripBatches | pd.DataFrame:
        return self._load(context)

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        return [self._path(context, day)]


class LakeObjectIOManager(_LakeIOManager):
    """An unpartitioned asset as one Parquet object: `{root}/{name}.parquet`, replaced whole."""

    name: str = "misc/object"

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        self._publish(context, f"{self._name(context)}.parquet", obj)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        return _to_pandas([_read_parquet(self.lake.filesystem(), f"{self._name(context)}.parquet")])
