"""The README's offline quick start, run as written in a project of its own: `make run` over the
real sample, `make dev` (twice), `make stop`.

The project is a fresh TAXI_HOME and DAGSTER_HOME with free ports (TAXI_PG_PORT, and
DAGSTER_WEBSERVER_PORT for the UI), so a user's `.local/` and port 3000 are left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from taxi_assets.storage.local_postgres import free_port
from taxi_assets_tests.dagster_processes import (
    DAGSTER_YAML,
    REPO_ROOT,
    GraphQLClient,
    healthy_daemons,
    loaded_locations,
    start_process,
    wait_until,
)
from taxi_assets_tests.docs_commands import block_of

TIMEOUT = 600.0


def fresh_project(tmp: Path) -> dict[str, str]:
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_", "DAGSTER_"))}
    return env | {
        "DAGSTER_HOME": str(home),
        "TAXI_HOME": str(tmp / "taxi_home"),
        "TAXI_PG_PORT": str(free_port()),
        "DAGSTER_WEBSERVER_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_the_readmes_offline_quick_start_works_as_written(tmp_path):
    run, dev, stop = (c.shell for c in block_of("README.md", "TAXI_SOURCE_URL="))
    env = fresh_project(tmp_path)
    ui = f"http://127.0.0.1:{env['DAGSTER_WEBSERVER_PORT']}"
    try:
        loaded = shell(run, env)

        output = loaded.stdout + loaded.stderr
        assert loaded.returncode == 0, output
        assert "Loading yellow 2021-01 from taxi_assets_tests/data into the local" in output
        assert "2021-01 materialized in " in output
        assert "ny_taxi/yellow_trips           27,796   31" in output, output
        assert "Bytecode compiled" not in output  # the installer says nothing once installed
        assert loaded.stdout.strip().splitlines()[-1] == (
            f"The yellow taxi month in the UI: {ui}/assets/cleaned_yellow_trips"
            "?view=partitions&partition=2021-01-01"
        )

        served = start_process("make-dev", ["bash", "-c", dev], env, tmp_path / "logs")
        try:
            graphql = GraphQLClient(f"{ui}/graphql")
            wait_until(lambda: loaded_locations(graphql), "the UI's code location", [served])
            wait_until(lambda: healthy_daemons(graphql), "the UI's daemons", [served])

            again = shell(dev, env)

            assert again.returncode == 0, again.stdout + again.stderr
            assert f"The Dagster UI of this instance is already running: {ui} (" in again.stdout
        finally:
            served.stop()
    finally:
        stopped = shell(stop, env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped the project's PostgreSQL on port " in stopped.stdout, stopped.stdout
