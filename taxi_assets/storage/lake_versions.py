"""Crash-consistent writes of many lake files at once: new versions beside the old, one switch.

A daily layout (the by-day dataset, the daily exports) is rewritten a range of days per run.
A single object write is atomic on GCS and on local disk (written aside, renamed over), but a
range is many objects, and GCS has no rename. So each layout keeps a manifest, one small JSON
object that names the current file of every day it holds, and a run goes through it:

1. write each day's new file under `_versions/<run id>/` (nothing a reader looks at changes);
2. **switch**: write the manifest naming those versions, one object write: the commit point;
3. publish: copy each version to the day's usual path (for yellow
   `tpep_pickup_date=…/part-0.parquet`, `YYYY/MM/DD/nyc_taxi_data.parquet`), each an atomic
   replace, so a day is never missing (on disk a hard link, on GCS a server-side copy: no byte
   goes through this process again);
4. write the manifest again naming the usual paths, and delete the versions.

Readers that go through the manifest (the IO managers' loads) see the old range or the new
range, whatever instant the writer dies at. A writer killed before step 2 leaves only files
under `_versions/`, which no reader opens; one killed after it leaves a committed switch that
is not yet published. The next write of the layout first finishes that (`recover`): publishes
what the manifest names and removes every version left over. Writers of one layout take turns
(the asset's concurrency pool), so a version left under `_versions/` is always a dead run's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from taxi_assets.storage.atomic_files import is_local, link_file, local_path, replace_file

# What moves a local lake, for errors about its disk.
LOCAL_LAKE_SETTING = "TAXI_HOME"
MANIFEST = "_manifest.json"
VERSIONS = "_versions"


def write_object(fs: pafs.FileSystem, path: str, data: pa.Buffer | bytes) -> None:
    """Replace the object at `path` with `data` in one step: readers see old or new bytes.

    On GCS an object only appears when its upload is finalised; on disk the bytes are written
    aside and renamed over the file (atomic_files.replace_file), after a free-space check.
    """
    data = pa.py_buffer(data) if isinstance(data, bytes) else data
    try:
        if is_local(fs):
            replace_file(
                local_path(fs, path),
                lambda out: out.write(data),
                size_hint=data.size,
                setting=LOCAL_LAKE_SETTING,
            )
        else:
            with fs.open_output_stream(path) as out:
                out.write(data)
    except OSError as error:
        raise OSError(
            f"writing {path} ({data.size:,} bytes) to the lake failed; any previous "
            f"version is left as it was: {error}"
        ) from error


def copy_object(fs: pafs.FileSystem, source: str, target: str) -> None:
    """Replace `target` with a copy of `source`, atomically: on disk a hard link (no byte is
    copied), on GCS a server-side copy (no byte goes through this process)."""
    if is_local(fs):
        link_file(local_path(fs, source), local_path(fs, target))
    else:
        fs.copy_file(source, target)


def _remove_tree(fs: pafs.FileSystem, folder: str) -> None:
    # File by file: GCS has no folders, and deleting one as pyarrow does asks for a marker
    # object that was never made.
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            fs.delete_file(info.path)
    if is_local(fs) and fs.get_file_info(folder).type == pafs.FileType.Directory:
        fs.delete_dir(folder)


@dataclass(frozen=True)
class DayEntry:
    """A day's current file (None: the day has no rows and no file) and its row count."""

    path: str | None
    rows: int


class VersionedDays:
    """One daily layout's manifest: `{root}/_manifest.json`, versions under `{root}/_versions/`.

    `published_path(day)` is where a day's file lives once published; None for a layout that
    keeps no file for a day without rows (its files are deleted instead).
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        published_path: Callable[[str, int], str | None],
        stale_files: Callable[[str], list[str]] = lambda day: [],
    ):
        self.fs, self.root = fs, root.strip("/")
        self._published_path = published_path
        self._stale_files = stale_files

    @property
    def manifest_path(self) -> str:
        return f"{self.root}/{MANIFEST}"

    @property
    def versions_dir(self) -> str:
        return f"{self.root}/{VERSIONS}"

    def days(self) -> dict[str, DayEntry]:
        """Every day the manifest holds; empty for a layout never written through it."""
        try:
            with self.fs.open_input_file(self.manifest_path) as source:
                recorded = json.loads(source.read().decode())
        except FileNotFoundError:
            return {}
        return {day: DayEntry(**entry) for day, entry in recorded["days"].items()}

    def rows(self, days: list[str]) -> int | None:
        """Rows the layout holds for `days`; None when a day is not in the manifest."""
        current = self.days()
        if any(day not in current for day in days):
            return None
        return sum(current[day].rows for day in days)

    def recover(self) -> None:
        """Finish a switch a dead writer committed, and remove every version left behind."""
        current = self.days()
        unpublished = {
            d: e
            for d, e in current.items()
            if e.path and e.path.startswith(self.versions_dir + "/")
        }
        if unpublished:
            self._publish(current, unpublished)
        _remove_tree(self.fs, self.versions_dir)

    def new_version(self, run_id: str) -> DaysVersion:
        return DaysVersion(self, run_id)

    def _write_manifest(self, days: dict[str, DayEntry]) -> None:
        body = {"days": {day: {"path": e.path, "rows": e.rows} for day, e in sorted(days.items())}}
        write_object(self.fs, self.manifest_path, json.dumps(body, indent=0).encode())

    def _publish(self, current: dict[str, DayEntry], switched: dict[str, DayEntry]) -> None:
        published = {}
        for day, entry in sorted(switched.items()):
            target = self._published_path(day, entry.rows)
            if entry.path is not None and target is not None:
                copy_object(self.fs, entry.path, target)
            for stale in self._stale_files(day):
                if stale != target:
                    self.fs.delete_file(stale)
            published[day] = DayEntry(target, entry.rows)
        self._write_manifest({**current, **published})
        for entry in switched.values():
            if entry.path and entry.path.startswith(self.versions_dir + "/"):
                self.fs.delete_file(entry.path)


class DaysVersion:
    """A run's new files for some days, invisible until `commit` switches them in at once."""

    def __init__(self, layout: VersionedDays, run_id: str):
        self.layout, self.run_id = layout, run_id
        self.entries: dict[str, DayEntry] = {}

    def path_for(self, day: str) -> str:
        """Where the day's new file is to be written (by the caller, whole, in one step)."""
        return f"{self.layout.versions_dir}/{self.run_id}/{day}.parquet"

    def record(self, day: str, path: str | None, rows: int) -> None:
        """The day's new file as written at `path_for(day)` (None: the day has no file)."""
        self.entries[day] = DayEntry(path, rows)

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.entries.values())

    def discard(self) -> None:
        """Remove what was staged (best effort: the next `recover` removes what is left)."""
        try:
            _remove_tree(self.layout.fs, f"{self.layout.versions_dir}/{self.run_id}")
        except OSError:
            pass

    def commit(self) -> None:
        current = self.layout.days()
        # The switch: from this write on, the manifest's readers see every staged day.
        self.layout._write_manifest({**current, **self.entries})
        self.layout._publish({**current, **self.entries}, self.entries)
