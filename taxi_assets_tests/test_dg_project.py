"""The package is a `dg` project: `dg check defs` loads it, and `dg list defs` lists what
`taxi_assets.definitions` defines.

Both run as a user runs them, in a subprocess from the checkout. Neither needs the project's
instance, so DAGSTER_HOME is an empty one of the test's own (the checkout's dagster.yaml wants
the PostgreSQL that `make dev` and `make run` start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxi_assets.definitions import defs

REPO_ROOT = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"


@pytest.fixture
def run_dg(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DG), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    return run


def test_dg_check_defs_loads_the_project(run_dg):
    checked = run_dg("check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully." in checked.stdout


def test_dg_list_defs_lists_the_code_locations_definitions(run_dg):
    listed = run_dg("list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    repository = defs.get_repository_def()
    assert {asset["asset_key"] for asset in found["assets"]} == {
        key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()
    }
    assert {job["name"] for job in found["jobs"]} == {
        job.name for job in repository.get_all_jobs() if not job.name.startswith("__")
    }
    assert {sensor["name"] for sensor in found["sensors"]} == {
        sensor.name for sensor in repository.sensor_defs
    }
    assert {schedule["name"] for schedule in found["schedules"]} == {
        schedule.name for schedule in repository.schedule_defs
    }
    assert {resource["name"] for resource in found["resources"]} == set(
        repository.get_top_level_resources()
    )
