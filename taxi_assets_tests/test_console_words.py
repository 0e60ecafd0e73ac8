"""How the consoles say times, sizes and a month a folder source lacks."""

import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import dagster as dg
import pytest

from taxi_assets import console, human
from taxi_assets.tlc import source
from taxi_assets.datasets import YELLOW
from taxi_assets_tests.conftest import sample


@pytest.mark.parametrize(
    "seconds, said",
    [(4.21, "4.2 s"), (192, "3 min 12 s"), (3840, "1 h 04 min")],
)
def test_times_read_as_a_person_says_them(seconds, said):
    assert human.duration(seconds) == said


@pytest.mark.parametrize(
    "n_bytes, said",
    [(812, "812 bytes"), (502_113, "502.1 kB"), (25_300_000, "25.3 MB"), (1_900_000_000, "1.9 GB")],
)
def test_sizes_read_as_a_person_says_them(n_bytes, said):
    assert human.size(n_bytes) == said


def remote_error(folder, file_name) -> str:
    with pytest.raises(source.SourceNotPublished) as error:
        source.remote_file(str(folder), file_name, timeout=5)
    return str(error.value)


def test_a_month_missing_from_a_folder_names_the_months_it_holds(tmp_path):
    for month in ("2021-01", "2021-02"):
        shutil.copyfile(
            sample("yellow_tripdata_2021-01.csv.gz"), tmp_path / f"yellow_tripdata_{month}.csv.gz"
        )

    said = remote_error(tmp_path, "yellow_tripdata_2021-03.csv.gz")

    assert said.endswith("; the folder holds yellow_tripdata files of 2 month(s): 2021-01, 2021-02")


def test_a_dataset_missing_from_a_folder_says_how_to_make_its_files(tmp_path):
    shutil.copyfile(
        sample("yellow_tripdata_2021-01.csv.gz"), tmp_path / "yellow_tripdata_2021-01.csv.gz"
    )

    said = remote_error(tmp_path, "green_tripdata_2020-10.csv.gz")

    assert "; the folder holds only yellow_tripdata files; " in said
    assert "python -m taxi_assets_tests.green_files FOLDER YYYY-MM" in said


def finished_run(job_name: str, materialized: list[str], failed_step: str):
    """A failed run's events as the console reads them (built here: which step fails is the
    point, and no real sink fails on demand in the step we choose)."""
    events = [
        SimpleNamespace(
            event_type_value="ASSET_MATERIALIZATION",
            event_specific_data=SimpleNamespace(
                materialization=SimpleNamespace(asset_key=dg.AssetKey.from_user_string(asset))
            ),
        )
        for asset in materialized
    ]
    failure = SimpleNamespace(
        user_failure_data=None,
        error=SimpleNamespace(cls_name="OSError", message="disk full", cause=None, context=None),
    )
    events.append(
        SimpleNamespace(
            event_type_value="STEP_FAILURE", step_key=failed_step, event_specific_data=failure
        )
    )
    return SimpleNamespace(
        run_id="f00", dagster_run=SimpleNamespace(job_name=job_name), all_events=events
    )


def test_a_failed_download_says_every_sink_is_unchanged_and_names_them():
    result = finished_run(YELLOW.monthly_job, [], YELLOW.raw_asset)

    lines = console.failure_summary(result, "http://127.0.0.1:3000")

    assert lines[2] == (
        "No sink was written: every sink is unchanged (ny_taxi/yellow_cab_data, "
        "yellow_trips_parquet, yellow_trips_by_day, yellow_trips_daily_export, "
        "ny_taxi/yellow_trips)."
    )


def test_a_failed_sink_step_says_which_sinks_were_written_before_it():
    monthly = finished_run(
        YELLOW.monthly_job,
        ["raw_yellow_trips", "cleaned_yellow_trips", "ny_taxi/yellow_cab_data"],
        "",
    )
    daily = finished_run(YELLOW.daily_job, ["yellow_trips_by_day"], "ny_taxi__yellow_trips")

    lines = console.failure_summary(daily, "http://127.0.0.1:3000", earlier=[monthly])

    assert lines[2] == (
        "Sinks written: ny_taxi/yellow_cab_data, yellow_trips_by_day. "
        "Unchanged: yellow_trips_parquet, yellow_trips_daily_export, ny_taxi/yellow_trips."
    )


def test_make_runs_first_line_comes_before_the_heavy_imports(tmp_path):
    # -X importtime writes a line to stderr as each import ends; with stdout on the same pipe,
    # the order of the lines is the order of the events. The gcp profile without
    # DAGSTER_PG_URL exits right after the first line, before anything starts.
    env = {
        **os.environ,
        "TAXI_PROFILE": "gcp",
        "TAXI_HOME": str(tmp_path),
        "TAXI_SOURCE_URL": "/srv/samples",
    }
    env.pop("DAGSTER_PG_URL", None)
    said = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "taxi_assets.cli", "run", "--month", "2021-02"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    ).stdout.splitlines()

    first = [n for n, line in enumerate(said) if line.startswith("Loading ")]
    assert first, said
    assert said[first[0]] == (
        "Loading yellow 2021-02 from /srv/samples into the gcp profile's sinks: "
        "each month's run, then its days' run."
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in said[: first[0]]]
    assert not {"dagster", "pyarrow", "pandas"} & set(imported), imported
    # Said once, and the package went on to load as before.
    assert len(first) == 1
    later = {line.rsplit("|", 1)[-1].strip() for line in said[first[0] :]}
    assert {"dagster", "pyarrow", "taxi_assets.datasets"} <= later
    assert (
        said[-1] == "TAXI_PROFILE=gcp needs DAGSTER_PG_URL (the PostgreSQL for Dagster's storage)"
    )
