"""How the consoles say times, sizes and a month a folder source lacks."""

import shutil

import pytest

from taxi_assets import human, source
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
