"""Intermediate asset values as one Parquet file per asset partition on local disk, and the raw
trips as the landed source file itself.

The IO manager says where a partition's file is (`{base_dir}/{asset key}/{partition}.parquet`)
and which partitions an input reads; storage/staged_files.py writes and reads the files as a
stream. A raw month (`LandedTrips`) is not copied into rows: the landed file is hard-linked
into `{partition}.{version}/` and `{partition}.recipe.json`, written last, says which version
is the month's and how to read it (tlc/landed_trips.py), so its rows are read once, by the step
that cleans them. Steps that take `TripBatches` get that stream; anything else (a notebook's
`load_asset_value`, an asset asking for a DataFrame) gets the rows as one pandas DataFrame.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from taxi_assets.dagster_private import running_step_time_window
from taxi_assets.storage.atomic_files import link_or_copy_file, replace_file
from taxi_assets.storage.staged_files import read_staged, write_staged
from taxi_assets.tlc.batches import TripBatches
from taxi_assets.tlc.landed_trips import LandedTrips, ReadRecipe


# An asset's staging folder, where it is not its key's path: the name it keeps when its key is
# renamed, so the values staged before stay readable.
STAGING_NAME_METADATA_KEY = "staging/name"
# Beside a raw month's versions: which one is the month's, and how to read it.
RECIPE_SUFFIX = ".recipe.json"


class StagingParquetIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def _path(
        self, key: dg.AssetKey, metadata: Mapping[str, object] | None, partition: str | None
    ) -> Path:
        name = (metadata or {}).get(STAGING_NAME_METADATA_KEY)
        folder = [str(name)] if name else key.path
        return Path(self.base_dir, *folder, f"{partition or 'all'}.parquet")

    def handle_output(
        self, context: dg.OutputContext, obj: LandedTrips | TripBatches | pd.DataFrame
    ) -> None:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(context.asset_key, context.definition_metadata, partition)
        if isinstance(obj, LandedTrips):
            stored = _store_landed(path, obj)
            context.log.info(
                f"{context.asset_key.to_user_string()}: the landed file kept as {stored}; "
                "its rows are read where they are cleaned"
            )
            context.add_output_metadata({"path": dg.MetadataValue.path(str(stored))})
            return
        trips = TripBatches.of(obj)
        # Written aside and renamed, so a reader never meets half a file.
        rows = write_staged(path, trips, setting="TAXI_HOME")
        context.log.info(f"{context.asset_key.to_user_string()}: staged {rows:,} rows")
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": rows,
                **trips.metadata,
            }
        )

    def load_input(self, context: dg.InputContext) -> TripBatches | pd.DataFrame:
        key = context.asset_key
        upstream = context.upstream_output
        metadata = upstream.definition_metadata if upstream else None
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        # Input metadata "window_column" asks for the rows whose date in that column falls in
        # the running step's time window, from every upstream partition mapped to it: the
        # partitions overlapping the window are required, the ones after it (late-filed trips
        # in the next month's file) are read when they exist. Only those rows are kept.
        column = context.definition_metadata.get("window_column")
        window = _naive_window(running_step_time_window(context)) if column else None
        files = []
        for partition in partitions:
            path = self._path(key, metadata, partition)
            landed = _landed(path)
            if landed is not None:
                if len(partitions) > 1 or window:
                    raise ValueError(
                        f"{key.to_user_string()} is a landed file per partition: it is read "
                        "one whole partition at a time"
                    )
                _, trips = landed.read()
                return (
                    trips if context.dagster_type.typing_type is TripBatches else trips.to_pandas()
                )
            if path.exists():
                # Opened now: a run replacing the file meanwhile cannot change what this reads.
                files.append(pq.ParquetFile(path))
            elif (
                window
                and _naive_window(
                    context.asset_partitions_def.time_window_for_partition_key(partition)
                )[0]
                >= window[1]
            ):
                context.log.info(
                    f"{key.to_user_string()} {partition} is not materialized yet: "
                    "reading without it"
                )
            else:
                raise FileNotFoundError(
                    f"{key.to_user_string()} partition {partition} is not materialized "
                    f"(no {path}); materialize it first"
                )
        if not files:
            raise FileNotFoundError(f"{key.to_user_string()}: no partition is materialized")
        trips = read_staged(files, column, window)
        if context.dagster_type.typing_type is TripBatches:
            return trips
        return trips.to_pandas()


def _landed(path: Path) -> LandedTrips | None:
    """The raw month staged at `path`'s place as a landed file, if it is (else a Parquet stage,
    as every other asset's and as raw months staged before are)."""
    recipe_path = path.with_suffix(RECIPE_SUFFIX)
    if not recipe_path.exists():
        return None
    try:
        stored = json.loads(recipe_path.read_text())
        recipe = ReadRecipe(**{key: value for key, value in stored.items() if key != "version"})
        landed = LandedTrips(path.parent / stored["version"] / recipe.file_name, recipe)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"{recipe_path} is not a raw month's recipe ({error}): materialize the month's raw "
            "trips again"
        ) from error
    if not landed.path.exists():
        raise FileNotFoundError(
            f"{recipe_path} names {landed.path}, which is gone: materialize the month's raw "
            "trips again"
        )
    return landed


def _version(recipe_path: Path) -> str | None:
    """The version folder the recipe names, if it names one."""
    try:
        return json.loads(recipe_path.read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def _store_landed(path: Path, landed: LandedTrips) -> Path:
    """Keep the landed file as the month at `path`'s place: linked (or copied) into a new
    version folder, then published by renaming its recipe over the month's. Returns the kept
    file. The version the recipe replaced stays, for a reader that read that recipe a moment
    ago; older ones, and a Parquet copy of the rows staged by earlier code, go."""
    folder, month = path.parent, path.stem
    version = f"{month}.{uuid.uuid4().hex[:12]}"
    kept = folder / version / landed.recipe.file_name
    recipe_path = path.with_suffix(RECIPE_SUFFIX)
    folder.mkdir(parents=True, exist_ok=True)
    # Runs storing the same month take turns, or one could delete the other's new version.
    with open(folder / f".{month}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        replaced = _version(recipe_path)
        link_or_copy_file(landed.path, kept, setting="TAXI_HOME")
        recipe = json.dumps({"version": version, **asdict(landed.recipe)}, indent=1)
        replace_file(recipe_path, lambda out: out.write(recipe.encode()), setting="TAXI_HOME")
        keep = {version, replaced}
        for other in folder.glob(f"{month}.*"):
            if other.is_dir() and other.name not in keep:
                shutil.rmtree(other, ignore_errors=True)
        path.unlink(missing_ok=True)
    return kept


def _naive_window(window: dg.TimeWindow) -> tuple[pd.Timestamp, pd.Timestamp]:
    # Trip times are naive wall-clock times; partition windows are in UTC.
    return pd.Timestamp(window.start).tz_localize(None), pd.Timestamp(window.end).tz_localize(None)
