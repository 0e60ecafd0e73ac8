"""Parquet in the lake, local or GCS: objects written whole from a stream, and read back.

Every object is written as its batches arrive, row group by row group, into a `ParquetObject`
that only becomes the object at its path once whole (atomic_files.PendingObject: on disk a
hidden file renamed over the target, on GCS a spool uploaded to a hidden object the server then
moves), so a half object is never readable and a failed write leaves the previous one in place.
Only a few row groups are in memory at a time, whatever the month's size. A range of days is
written as versions beside the current files and switched in by one manifest write
(lake_versions.VersionedDays).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from taxi_assets.shrink_guard import ShrinkRefused, shrink_refusal
from taxi_assets.storage.atomic_files import PendingObject
from taxi_assets.storage.lake_versions import LOCAL_LAKE_SETTING, VersionedDays
from taxi_assets.storage.month_versions import VERSION_KEY
from taxi_assets.tlc import batches as batching
from taxi_assets.tlc.batches import TripBatches, conformed, rebatched
from taxi_assets.tlc.schema import to_pandas


def _row_group_rows() -> int:
    return 2 * batching.BATCH_ROWS


class ParquetObject:
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
                self._writer.add_key_value_metadata({VERSION_KEY: version})

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
    fs: pafs.FileSystem, name: str, month: str, schema: pa.Schema, version: str
) -> ParquetObject:
    """The month's new object, to be written batch by batch (`append`) and staged beside the
    current one; published by month_versions once the Postgres swap recorded it."""
    return ParquetObject(fs, month_object_path(name, month), plain(schema), version)


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise OSError(
            f"writing {path} to the lake failed; any previous version is left as it was: {error}"
        ) from error


@contextlib.contextmanager
def _all_or_none(pending: dict[object, ParquetObject]) -> Iterator[None]:
    """On any failure, discard every pending object, so none of them is ever published."""
    try:
        yield
    except BaseException:
        for obj in pending.values():
            obj.discard()
        raise


def write_object(
    fs: pafs.FileSystem, path: str, trips: TripBatches, version: str | None = None
) -> tuple[int, int]:
    """Publish the batches as one Parquet object at `path`; returns (bytes, rows)."""
    pending = {path: ParquetObject(fs, path, plain(trips.schema), version)}
    with _all_or_none(pending):
        for table in rebatched(trips, _row_group_rows()):
            pending[path].write(table)
        return pending[path].publish(), pending[path].rows


def plain(schema: pa.Schema) -> pa.Schema:
    # pandas' metadata would make a reader rebuild an index the rows never had.
    return schema.remove_metadata()


def _open_input(fs: pafs.FileSystem, path: str) -> pa.NativeFile:
    try:
        return fs.open_input_file(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{path} is not in the lake: is its partition materialized? ({error})"
        ) from error


def object_rows(fs: pafs.FileSystem, path: str) -> int:
    """The rows the object at `path` holds, from its footer."""
    with _open_input(fs, path) as source:
        return pq.ParquetFile(source).metadata.num_rows


def read_frame(
    fs: pafs.FileSystem, paths: Sequence[str], columns: list[str] | None = None
) -> pd.DataFrame:
    """The objects' rows at once, one GET each: for notebooks, which ask for a month or a day."""
    tables = []
    for path in paths:
        with _open_input(fs, path) as source:
            tables.append(pq.read_table(pa.BufferReader(source.read_buffer()), columns=columns))
    if not tables:
        return pd.DataFrame()
    # A column that is all null in one file is typed null there; "default" promotes it.
    return to_pandas(pa.concat_tables(tables, promote_options="default"))


def streamed(
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


def files_under(fs: pafs.FileSystem, folder: str) -> list[str]:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    return sorted(info.path for info in fs.get_file_info(selector) if info.is_file)


class _DaySplit:
    """A stream's rows into one pending object per day of `column`, without holding the month.

    Rows wait per day until a day has a row group's worth; when all days together hold more
    than a few row groups, the fullest day is written out early. Every row must fall on one of
    `days`: writing a row elsewhere would overwrite another partition's data, and dropping it
    would lose a trip silently.
    """

    def __init__(
        self,
        open_day: Callable[[dt.date, pa.Schema], ParquetObject],
        column: str,
        days: Iterable[dt.date],
    ):
        self._open_day, self._column = open_day, column
        self._days = list(days)
        self.pending: dict[dt.date, ParquetObject] = {}
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
            self.pending[day] = self._open_day(day, plain(waiting[0].schema))
        self.pending[day].write(pa.Table.from_batches(waiting))


@dataclass(frozen=True)
class DaysWritten:
    """What `write_days` switched in: the days with rows and without, bytes and rows."""

    with_rows: list[str]
    without_rows: list[str]
    bytes: int
    rows: int


def write_days(
    fs: pafs.FileSystem,
    layout: VersionedDays,
    run_id: str,
    trips: TripBatches,
    date_column: str,
    days: list[dt.date],
    *,
    keeps_empty_days: bool,
    label: str,
    allow_shrink: bool,
) -> DaysWritten:
    """Replace exactly `days` of the layout with the stream's rows, split by the day of
    `date_column`, all at once: each day's object is written as a version, the shrink guard
    compares their rows with what the manifest holds for those days (fewer than half is refused
    unless `allow_shrink`), and one manifest write switches them in. A day without rows keeps
    an empty object if `keeps_empty_days`, else no file."""
    layout.recover()  # a dead run's switch finished, its leftovers removed
    version = layout.new_version(run_id)
    split = _DaySplit(
        lambda day, schema: ParquetObject(fs, version.path_for(day.isoformat()), schema),
        date_column,
        days,
    )
    written, empty, size = [], [], 0
    try:
        with _all_or_none(split.pending):
            split.split(trips)
            for day in days:
                if keeps_empty_days and day not in split.pending:
                    split.pending[day] = ParquetObject(
                        fs, version.path_for(day.isoformat()), plain(trips.schema)
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
            f"{label} {names[0]}..{names[-1]}", layout.rows(names), version.rows
        )
        if refusal and not allow_shrink:
            raise ShrinkRefused(refusal)
    except BaseException:
        version.discard()
        raise
    version.commit()
    return DaysWritten(written, empty, size, version.rows)
