"""The lake IO managers on toy assets, against a local folder and a real GCS API (fake-gcs-server).

The toy assets stand in for the pipeline's: a monthly asset that returns a month's trips, and
daily assets (single-run backfills) that return the trips picked up inside their partitions.
Data is the real head of the January 2021 file: 28,401 trips, 16 of them picked up on
2020-12-31, the rest on 2021-01-01 and 2021-01-02.

What is stored is checked with a listing that does not go through pyarrow (the folder itself,
or the emulator's JSON API), and what is read back goes through Dagster's input loading.
"""

import contextlib
import io
import resource
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.defs.io_managers.lake_writers import (
    DailyDatasetIOManager,
    DailyExportIOManager,
    MonthlyParquetIOManager,
)
from taxi_assets.defs.resources import LakeResource
from taxi_assets.tlc.schema import read_trips, to_pandas
from taxi_assets_tests.emulators.gcs import CuttableLink, GcsEmulator, running_gcs_emulator


SAMPLE = Path(__file__).parent / "data" / "yellow_tripdata_2021-01.csv.gz"
PICKUP = "tpep_pickup_datetime"
MONTHS = dg.MonthlyPartitionsDefinition(start_date="2020-12-01", end_date="2021-03-01")
DAYS = dg.DailyPartitionsDefinition(start_date="2020-12-25", end_date="2021-01-15")


@pytest.fixture(scope="module")
def trips() -> pd.DataFrame:
    return to_pandas(read_trips(SAMPLE))


def pickup_day(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    return frame[frame[PICKUP].dt.strftime("%Y-%m-%d") == day]


# --- the lake under test: a local folder or a prefix in the emulator's bucket -----------------


@dataclass
class LakeUnderTest:
    resource: LakeResource
    local_root: Path | None = None
    emulator: GcsEmulator | None = None
    prefix: str = ""

    def objects(self) -> dict[str, int]:
        """Relative path -> size of every stored file or object, hidden ones included, but for
        the daily layouts' manifests (`_manifest.json`, which name the files a reader takes)."""
        if self.local_root is not None:
            stored = {
                path.relative_to(self.local_root).as_posix(): path.stat().st_size
                for path in self.local_root.rglob("*")
                if path.is_file()
            }
        else:
            stored = {
                name.removeprefix(self.prefix + "/"): size
                for name, size in self.emulator.objects(self.prefix + "/").items()
            }
        return {
            name: size
            for name, size in stored.items()
            if name.rpartition("/")[2] != "_manifest.json"
        }


@pytest.fixture(params=["local", "gcs"])
def lake(request, tmp_path) -> LakeUnderTest:
    if request.param == "local":
        root = tmp_path / "lake"
        return LakeUnderTest(LakeResource(root=str(root)), local_root=root)
    emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
    prefix = f"lake-{uuid.uuid4().hex[:8]}"  # the session's emulator is shared by tests
    return LakeUnderTest(
        LakeResource(root=f"gs://{emulator.bucket}/{prefix}", endpoint=emulator.url),
        emulator=emulator,
        prefix=prefix,
    )


# --- toy assets -------------------------------------------------------------------------------


@dataclass
class Toys:
    """The toy assets, fed from `source` and reporting what they load into `loaded`."""

    source: dict
    loaded: dict
    assets: list

    def run(
        self,
        lake: LakeResource,
        *names: str,
        partition: str | None = None,
        days: tuple[str, str] | None = None,
        raise_on_error: bool = True,
    ):
        tags = {}
        if days:  # how a single-run backfill tags its run
            tags = {
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[1],
            }
        return dg.materialize(
            self.assets,
            selection=list(names),
            partition_key=partition,
            tags=tags,
            raise_on_error=raise_on_error,
            resources={
                "monthly_lake": MonthlyParquetIOManager(lake=lake),
                "dataset_lake": DailyDatasetIOManager(lake=lake),
                "export_lake": DailyExportIOManager(lake=lake),
            },
        )


@pytest.fixture
def toys() -> Toys:
    source: dict = {}
    loaded: dict = {}

    def picked_up_in(context: dg.AssetExecutionContext) -> pd.DataFrame:
        frame = source["trips"]
        if source.get("ignore_partition"):
            return frame
        window = context.partition_time_window
        start, end = window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)
        return frame[(frame[PICKUP] >= start) & (frame[PICKUP] < end)]

    @dg.asset(partitions_def=MONTHS, io_manager_key="monthly_lake")
    def month_trips() -> pd.DataFrame:
        return source["month"]

    @dg.asset(
        partitions_def=DAYS,
        io_manager_key="dataset_lake",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def trips_by_day(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return picked_up_in(context)

    @dg.asset(
        partitions_def=DAYS,
        io_manager_key="export_lake",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def daily_export(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return picked_up_in(context)

    @dg.asset(partitions_def=MONTHS)
    def read_month(month_trips: pd.DataFrame) -> None:
        loaded["month"] = month_trips

    @dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def read_by_day(trips_by_day: pd.DataFrame) -> None:
        loaded["by_day"] = trips_by_day

    @dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def read_export(daily_export: pd.DataFrame) -> None:
        loaded["export"] = daily_export

    return Toys(
        source,
        loaded,
        [month_trips, trips_by_day, daily_export, read_month, read_by_day, read_export],
    )


def output_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The output's metadata; a multi-partition run records it once per partition."""
    recorded = [
        {key: value.value for key, value in materialization.metadata.items()}
        for materialization in result.asset_materializations_for_node(asset)
    ]
    assert recorded and all(metadata == recorded[0] for metadata in recorded)
    return recorded[0]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    return failure.event_specific_data.error.to_string()


def checksum(frame: pd.DataFrame) -> tuple[int, float]:
    return len(frame), round(float(frame["total_amount"].sum()), 6)


# --- tests ------------------------------------------------------------------------------------


def test_monthly_object_round_trip_and_rerun(lake: LakeUnderTest, toys: Toys, trips):
    toys.source["month"] = trips
    result = toys.run(lake.resource, "month_trips", partition="2021-01-01")

    assert lake.objects().keys() == {"nyc_taxi_data/2021-01.parquet"}
    metadata = output_metadata(result, "month_trips")
    assert metadata["uri"] == lake.resource.uri("nyc_taxi_data/2021-01.parquet")
    assert metadata["uri"].startswith("gs://" if lake.emulator else "file:///")
    assert metadata["bytes"] == lake.objects()["nyc_taxi_data/2021-01.parquet"]
    assert metadata["dagster/row_count"] == len(trips) == 28_401

    toys.run(lake.resource, "read_month", partition="2021-01-01")
    pd.testing.assert_frame_equal(
        toys.loaded["month"].reset_index(drop=True), trips.reset_index(drop=True)
    )
    assert checksum(toys.loaded["month"]) == checksum(trips)

    # A rerun replaces the month's object rather than adding to it.
    toys.source["month"] = trips.head(1000)
    toys.run(lake.resource, "month_trips", partition="2021-01-01")
    toys.run(lake.resource, "read_month", partition="2021-01-01")
    assert lake.objects().keys() == {"nyc_taxi_data/2021-01.parquet"}
    assert checksum(toys.loaded["month"]) == checksum(trips.head(1000))


def test_dataset_single_run_writes_every_day_and_clears_emptied_days(
    lake: LakeUnderTest, toys: Toys, trips
):
    """Trips picked up on 2020-12-31 (in the January file) land in their own day's folder,
    written by that day's partition; a backfill of 2021-01-01..03 neither touches nor
    duplicates them. Day 3 first gets rows (moved from day 2), then loses them again."""
    day2 = pickup_day(trips, "2021-01-02")
    moved = trips.copy()
    moved.loc[day2.index[::2], PICKUP] += pd.Timedelta(days=1)
    toys.source["trips"] = moved

    toys.run(lake.resource, "trips_by_day", partition="2020-12-31")
    result = toys.run(lake.resource, "trips_by_day", days=("2021-01-01", "2021-01-03"))

    folder = "nyc_taxi_data_by_day/tpep_pickup_date="
    assert lake.objects().keys() == {
        f"{folder}{day}/part-0.parquet"
        for day in ("2020-12-31", "2021-01-01", "2021-01-02", "2021-01-03")
    }
    metadata = output_metadata(result, "trips_by_day")
    assert metadata["days_written"] == ["2021-01-01", "2021-01-02", "2021-01-03"]
    # A multi-day run's count is the run's, not each day's, and is labelled so.
    assert metadata["rows_in_run"] == len(trips) - 16 and "dagster/row_count" not in metadata
    assert metadata["uri"] == lake.resource.uri("nyc_taxi_data_by_day")

    # The same range again, now with nothing on day 3: its folder is emptied, the others
    # hold one copy of their rows, and 2020-12-31 is untouched.
    toys.source["trips"] = trips
    before = lake.objects()
    result = toys.run(lake.resource, "trips_by_day", days=("2021-01-01", "2021-01-03"))
    metadata = output_metadata(result, "trips_by_day")
    assert metadata["days_written"] == ["2021-01-01", "2021-01-02"]
    assert metadata["days_without_rows"] == ["2021-01-03"]
    after = lake.objects()
    assert after.keys() == {
        f"{folder}{day}/part-0.parquet" for day in ("2020-12-31", "2021-01-01", "2021-01-02")
    }
    new_year_eve = f"{folder}2020-12-31/part-0.parquet"
    assert after[new_year_eve] == before[new_year_eve]

    toys.run(lake.resource, "read_by_day", days=("2020-12-31", "2021-01-03"))
    assert checksum(toys.loaded["by_day"]) == checksum(trips)
    toys.run(lake.resource, "read_by_day", partition="2021-01-02")
    assert checksum(toys.loaded["by_day"]) == checksum(pickup_day(trips, "2021-01-02"))


@pytest.mark.parametrize(
    "asset, reader, stored",
    [
        (
            "trips_by_day",
            "read_by_day",
            "nyc_taxi_data_by_day/tpep_pickup_date=2021-01-02/part-0.parquet",
        ),
        ("daily_export", "read_export", "2021/01/02/nyc_taxi_data.parquet"),
    ],
)
def test_rerun_of_a_day_leaves_one_copy(
    lake: LakeUnderTest, toys: Toys, trips, asset, reader, stored
):
    toys.source["trips"] = trips
    day = pickup_day(trips, "2021-01-02")
    for _ in range(2):
        result = toys.run(lake.resource, asset, partition="2021-01-02")
    assert lake.objects().keys() == {stored}
    assert output_metadata(result, asset)["dagster/row_count"] == len(day)

    toys.run(lake.resource, reader, partition="2021-01-02")
    assert checksum(toys.loaded[reader.removeprefix("read_")]) == checksum(day)


def test_daily_export_objects_per_day(lake: LakeUnderTest, toys: Toys, trips):
    toys.source["trips"] = trips
    result = toys.run(lake.resource, "daily_export", days=("2020-12-31", "2021-01-03"))

    names = {day: f"2021/01/{day:02d}/nyc_taxi_data.parquet" for day in (1, 2, 3)}
    names[31] = "2020/12/31/nyc_taxi_data.parquet"
    stored = lake.objects()
    assert stored.keys() == set(names.values())
    metadata = output_metadata(result, "daily_export")
    assert metadata["days_written"] == ["2020-12-31", "2021-01-01", "2021-01-02", "2021-01-03"]
    assert metadata["objects"] == [lake.resource.uri(names[d]) for d in (31, 1, 2, 3)]
    assert metadata["bytes"] == sum(stored.values())
    assert metadata["rows_in_run"] == len(trips)

    toys.run(lake.resource, "read_export", days=("2020-12-31", "2021-01-03"))
    assert checksum(toys.loaded["export"]) == checksum(trips)
    # A day without trips still has its object, holding no rows but the columns.
    toys.run(lake.resource, "read_export", partition="2021-01-03")
    assert len(toys.loaded["export"]) == 0
    assert list(toys.loaded["export"].columns) == list(trips.columns)


@pytest.mark.parametrize("asset", ["trips_by_day", "daily_export"])
def test_rows_outside_the_partitions_fail_the_run(lake: LakeUnderTest, toys: Toys, trips, asset):
    """Writing them would overwrite another partition; dropping them would lose trips."""
    toys.source.update(trips=trips, ignore_partition=True)
    result = toys.run(lake.resource, asset, partition="2021-01-01", raise_on_error=False)
    assert not result.success
    assert "fall outside the partitions being written" in failure_text(result)
    assert lake.objects() == {}


def test_objects_are_plain_parquet_to_other_gcs_clients(
    gcs_emulator: GcsEmulator, toys: Toys, trips
):
    """What the lake writes is what google-cloud-storage (the BigQuery side's client) reads."""
    prefix = f"lake-{uuid.uuid4().hex[:8]}"
    lake = LakeResource(root=f"gs://{gcs_emulator.bucket}/{prefix}", endpoint=gcs_emulator.url)
    toys.source["month"] = trips
    toys.run(lake, "month_trips", partition="2021-01-01")

    blob = (
        gcs_emulator.storage_client()
        .bucket(gcs_emulator.bucket)
        .blob(f"{prefix}/nyc_taxi_data/2021-01.parquet")
    )
    table = pq.read_table(io.BytesIO(blob.download_as_bytes()))
    assert checksum(table.to_pandas()) == checksum(trips)


# --- failures in the middle of a write --------------------------------------------------------


@pytest.fixture
def gcs_behind_link(tmp_path):
    """An emulator reached through a CuttableLink; the emulator answers for the link's address."""
    emulator = GcsEmulator(log_path=tmp_path / "fake-gcs-server.log")
    with CuttableLink(emulator.port) as link:
        emulator.public_port = link.port
        emulator.start()
        try:
            yield emulator, link
        finally:
            emulator.stop()


def test_upload_cut_midway_fails_the_run_and_keeps_the_previous_object(
    gcs_behind_link, toys: Toys, trips
):
    """The network to GCS dies 64 KiB into the upload of a ~1 MB object.

    Stopping the emulator instead would lose its objects (memory backend) and prove nothing
    about them, so the fault is injected between client and server: a relay passes 64 KiB of
    the new upload and then resets every connection, old and new, as if the server had gone.
    The emulator itself stays up, so afterwards we can see what GCS kept: the old object,
    byte for byte, and readable through the IO manager once the network is back.
    """
    emulator, link = gcs_behind_link
    lake = LakeUnderTest(
        LakeResource(
            root=f"gs://{emulator.bucket}/lake", endpoint=link.endpoint, retry_time_limit_seconds=1
        ),
        emulator=emulator,
        prefix="lake",
    )
    toys.source["month"] = trips.head(1000)
    toys.run(lake.resource, "month_trips", partition="2021-01-01")
    old = lake.objects()

    toys.source["month"] = trips
    new_size = len(_parquet_bytes(trips))
    assert new_size > 10 * 64 * 1024, "the cut must land well inside the upload"
    link.cut_after(64 * 1024)
    result = toys.run(lake.resource, "month_trips", partition="2021-01-01", raise_on_error=False)

    assert link.cuts == 1
    assert not result.success
    error = failure_text(result)
    assert "writing nyc_taxi_data/2021-01.parquet" in error and "UNAVAILABLE" in error
    assert lake.objects() == old

    link.restore()
    toys.run(lake.resource, "read_month", partition="2021-01-01")
    assert checksum(toys.loaded["month"]) == checksum(trips.head(1000))
    toys.run(lake.resource, "month_trips", partition="2021-01-01")
    toys.run(lake.resource, "read_month", partition="2021-01-01")
    assert checksum(toys.loaded["month"]) == checksum(trips)


def test_stopped_emulator_fails_the_run_with_a_clear_error(tmp_path, toys: Toys, trips):
    """The literal case: the GCS endpoint is gone when the write comes. The run fails before
    serialising anything, naming the lake and the settings that point at it; `start()` brings
    back an empty server (memory backend), ready for the next run."""
    with running_gcs_emulator(tmp_path) as emulator:
        lake = LakeResource(
            root=f"gs://{emulator.bucket}", endpoint=emulator.url, retry_time_limit_seconds=1
        )
        toys.source["month"] = trips.head(100)
        emulator.stop()
        result = toys.run(lake, "month_trips", partition="2021-01-01", raise_on_error=False)
        assert not result.success
        error = failure_text(result)
        assert f"the lake gs://{emulator.bucket} cannot be reached" in error, error
        assert "UNAVAILABLE" in error and "Check TAXI_GCS_BUCKET, TAXI_GCS_ENDPOINT" in error

        emulator.start()
        assert emulator.objects() == {}
        toys.run(lake, "month_trips", partition="2021-01-01")
        assert emulator.objects().keys() == {"nyc_taxi_data/2021-01.parquet"}


def test_local_write_failing_midway_keeps_the_previous_file(tmp_path, toys: Toys, trips):
    """The disk refuses the write after 256 KiB: RLIMIT_FSIZE makes the kernel fail write()
    part-way through the file (as a full disk would), with no mock in the IO path. The month
    keeps its previous file, intact, and no partial file is left behind."""
    root = tmp_path / "lake"
    lake = LakeUnderTest(LakeResource(root=str(root)), local_root=root)
    toys.source["month"] = trips.head(1000)
    toys.run(lake.resource, "month_trips", partition="2021-01-01")
    old = lake.objects()
    limit = 256 * 1024
    assert old["nyc_taxi_data/2021-01.parquet"] < limit < len(_parquet_bytes(trips))

    toys.source["month"] = trips
    with _file_size_limit(limit):
        result = toys.run(
            lake.resource, "month_trips", partition="2021-01-01", raise_on_error=False
        )
    assert not result.success
    assert "File too large" in failure_text(result)
    assert lake.objects() == old

    toys.run(lake.resource, "read_month", partition="2021-01-01")
    assert checksum(toys.loaded["month"]) == checksum(trips.head(1000))


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


@contextlib.contextmanager
def _file_size_limit(n_bytes: int):
    """Files of this process cannot grow past n_bytes: write() fails with EFBIG beyond it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Without this the kernel kills the process with SIGXFSZ instead of failing the write.
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
