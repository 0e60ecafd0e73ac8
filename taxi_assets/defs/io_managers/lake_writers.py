"""IO managers for the Parquet lake: monthly objects, a hive dataset by day, daily exports.

Each says where a partition goes; storage/lake_parquet.py writes it (whole objects from a
stream, a range of days switched in at once through a manifest) and reads it back.

Layouts, relative to the lake root (the defaults: yellow's):
- MonthlyParquetIOManager  {name}/{YYYY-MM}.parquet                (name: nyc_taxi_data)
- DailyDatasetIOManager    {name}/tpep_pickup_date=YYYY-MM-DD/part-0.parquet
                                                                   (name: nyc_taxi_data_by_day)
- DailyExportIOManager     {YYYY}/{MM}/{DD}/{name}.parquet         (name: nyc_taxi_data)
- LakeObjectIOManager      {name}.parquet, unpartitioned
`name`, `date_column` (whose day a row belongs to) and `partition_column` are the IO manager's
fields. An asset whose layout differs says so in its metadata (`LakeLayout.as_metadata`), as
its dataset declares it: a dataset's whole pipeline comes from its declaration, and a new one
(taxi_assets_tests/test_third_dataset.py) needs no resource changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import ClassVar

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs

from taxi_assets.dagster_private import running_step_job_writes, running_step_run_tags
from taxi_assets.defs.resources import LakeResource, PostgresResource
from taxi_assets.shrink_guard import shrink_allowed
from taxi_assets.storage import lake_parquet, month_versions
from taxi_assets.storage.atomic_files import is_local, local_path
from taxi_assets.storage.lake_files import LakeDayFiles
from taxi_assets.storage.lake_parquet import month_object_path
from taxi_assets.storage.lake_versions import VersionedDays
from taxi_assets.tlc.batches import TripBatches

DATASET_FILE = "part-0.parquet"
LAYOUT_METADATA_KEY = "lake/layout"


@dataclasses.dataclass(frozen=True)
class LakeLayout:
    """Where one asset's partitions go in the lake, where they differ from the IO manager's
    defaults."""

    name: str
    # The daily layouts: the column whose day a row belongs to.
    date_column: str | None = None
    # The by-day dataset: the folders' key (`tpep_pickup_date=…`).
    partition_column: str | None = None
    # The monthly objects: the `schema.table` each month's object is one version with; the
    # table's IO manager writes the object beside its partition (month_versions.py).
    follows_postgres_table: str | None = None

    def as_metadata(self) -> dict:
        """The asset metadata that gives the asset this layout."""
        layout = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {LAYOUT_METADATA_KEY: layout}


def _layout_of(context: dg.OutputContext | dg.InputContext) -> LakeLayout | None:
    """The asset's layout from its metadata; an input's is the upstream asset's, where that
    one wrote its rows."""
    if isinstance(context, dg.InputContext):
        upstream = context.upstream_output
        metadata = upstream.definition_metadata if upstream else {}
    else:
        metadata = context.definition_metadata
    found = (metadata or {}).get(LAYOUT_METADATA_KEY)
    return LakeLayout(**found) if found else None


def _window_days(context: dg.OutputContext | dg.InputContext) -> list[dt.date]:
    window = context.asset_partitions_time_window
    start, end = window.start.date(), window.end.date()
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def _window_months(context: dg.OutputContext | dg.InputContext) -> list[dt.date]:
    window = context.asset_partitions_time_window
    months, month, end = [], window.start.date().replace(day=1), window.end.date()
    while month < end:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return months


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
        layout = _layout_of(context)
        return layout.name if layout else self.name

    def _publish(self, context: dg.OutputContext, path: str, obj, version=None) -> None:
        """`obj` (TripBatches or a DataFrame) as the one Parquet object at `path`; says where
        it is and what it holds."""
        self.lake.check_reachable()
        size, rows = lake_parquet.write_object(
            self.lake.filesystem(), path, TripBatches.of(obj), version
        )
        self._describe(context, path, size, rows)

    def _describe(self, context: dg.OutputContext, path: str, size: int, rows: int) -> None:
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(self.lake.uri(path)),
                "bytes": size,
                "dagster/row_count": rows,
            }
        )


class MonthlyParquetIOManager(_LakeIOManager):
    """One Parquet object per monthly partition: `{root}/{name}/{YYYY-MM}.parquet`.

    With `postgres`, an object whose layout names the table it is one version with
    (`follows_postgres_table`) is written beside that table's partition by its IO manager
    (month_versions.py). Here the month's recorded versions are settled first (a staged
    object a dead run committed is published); in a run that also writes that table the
    published object is then only described; a run without the table writes the object
    alone, its run recorded as the lake's version of the month.
    """

    name: str = "nyc_taxi_data"
    postgres: PostgresResource | None = None

    def _path(self, context, month: dt.date) -> str:
        return month_object_path(self._name(context), month)

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        months = _window_months(context)
        if len(months) != 1:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: one output must be one "
                f"month, got {len(months)}; do not backfill it as a single run"
            )
        path = self._path(context, months[0])
        layout = _layout_of(context)
        follows = layout and layout.follows_postgres_table
        if follows is None or self.postgres is None:
            self._publish(context, path, obj)
            return
        month, uri = months[0].isoformat(), self.postgres.uri()
        self.lake.check_reachable()
        fs = self.lake.filesystem()
        month_versions.settle(uri, fs, follows, month, context.log)
        recorded = month_versions.versions(uri, follows, month)
        if (
            recorded is not None
            and recorded.lake_run == recorded.postgres_run
            and running_step_job_writes(context, dg.AssetKey(follows.split(".")))
        ):
            # Written beside the partition by this run's Postgres step and published (or by a
            # run of the month that committed after it): one version, nothing to write.
            rows = lake_parquet.object_rows(fs, path)
            self._describe(context, path, fs.get_file_info(path).size, rows)
            return
        self._publish(context, path, obj, version=context.run_id)
        recorded = month_versions.lake_written(uri, follows, month, context.run_id, path)
        if recorded.lake_behind:
            context.log.warning(
                recorded.describe(follows) + ": this run wrote the object alone; running the "
                "month (its Postgres table with it) brings both to one version"
            )

    def versions_behind(self, postgres_table: str, log=None) -> list[month_versions.MonthVersions]:
        """Publish every staged object a swap of `postgres_table` committed; the months whose
        object is still behind their partition (none without `postgres`: no record)."""
        if self.postgres is None:
            return []
        self.lake.check_reachable()
        return month_versions.settle(
            self.postgres.uri(), self.lake.filesystem(), postgres_table, log=log
        )

    def load_input(self, context: dg.InputContext) -> TripBatches | pd.DataFrame:
        fs = self.lake.filesystem()
        paths = [self._path(context, m) for m in _window_months(context)]
        if context.dagster_type.typing_type is TripBatches:
            return lake_parquet.streamed(fs, paths)
        return lake_parquet.read_frame(fs, paths)


class _DailyLayoutIOManager(_LakeIOManager):
    """A layout of one file (or none) per day, a range of days replaced at once per output.

    Each output covers one or several daily partitions (a single-run backfill) and replaces
    exactly those days through the layout's manifest (lake_parquet.write_days).
    """

    date_column: str = "tpep_pickup_datetime"
    # Whether a day without rows keeps an (empty) object, or no file at all.
    keeps_empty_days: ClassVar[bool] = False

    def _versioned_days(self, context, fs: pafs.FileSystem) -> VersionedDays:
        raise NotImplementedError

    def _write_days(
        self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame
    ) -> lake_parquet.DaysWritten:
        self.lake.check_reachable()
        fs = self.lake.filesystem()
        layout = _layout_of(context)
        return lake_parquet.write_days(
            fs,
            self._versioned_days(context, fs),
            context.run_id,
            TripBatches.of(obj),
            (layout and layout.date_column) or self.date_column,
            _window_days(context),
            keeps_empty_days=self.keeps_empty_days,
            label=context.asset_key.to_user_string(),
            allow_shrink=shrink_allowed(running_step_run_tags(context)),
        )

    def _day_paths(self, context: dg.InputContext, fs: pafs.FileSystem) -> list[str]:
        current = self._versioned_days(context, fs).days()
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
            return LakeDayFiles(lake_parquet.streamed(fs, paths, columns), local, gcs_uris=gcs)
        if context.dagster_type.typing_type is TripBatches:
            return lake_parquet.streamed(fs, paths, columns)
        return lake_parquet.read_frame(fs, paths, columns)


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
        layout = _layout_of(context)
        column = (layout and layout.partition_column) or self.partition_column
        return f"{self._name(context)}/{column}={day}"

    def _versioned_days(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(
            fs,
            self._name(context),
            published_path=lambda day, rows: (
                f"{self._folder(context, day)}/{DATASET_FILE}" if rows else None
            ),
            stale_files=lambda day: lake_parquet.files_under(fs, self._folder(context, day)),
        )

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        written = self._write_days(context, obj)
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(self.lake.uri(self._name(context))),
                "bytes": written.bytes,
                **_row_count(context, written.rows),
                "days_written": written.with_rows,
                "days_without_rows": written.without_rows,
            }
        )

    def load_input(self, context: dg.InputContext) -> LakeDayFiles | TripBatches | pd.DataFrame:
        # An input may ask for some columns only (metadata "columns"), as Dagster's database
        # IO managers allow: a row count needs one column, not the month.
        return self._load(context, context.definition_metadata.get("columns"))

    def _unrecorded_paths(self, context, fs: pafs.FileSystem, day: dt.date) -> list[str]:
        return [
            path
            for path in lake_parquet.files_under(fs, self._folder(context, day))
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

    def _versioned_days(self, context, fs: pafs.FileSystem) -> VersionedDays:
        return VersionedDays(
            fs,
            f"_daily_exports/{self._name(context)}",
            published_path=lambda day, rows: self._path(context, day),
        )

    def handle_output(self, context: dg.OutputContext, obj: TripBatches | pd.DataFrame) -> None:
        written = self._write_days(context, obj)
        days = sorted(written.with_rows + written.without_rows)
        uris = [self.lake.uri(self._path(context, day)) for day in days]
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(uris[0] if len(uris) == 1 else self.lake.uri()),
                "objects": uris,
                "bytes": written.bytes,
                **_row_count(context, written.rows),
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
        return lake_parquet.read_frame(self.lake.filesystem(), [f"{self._name(context)}.parquet"])
