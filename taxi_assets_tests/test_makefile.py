"""The Makefile hands its variables to the CLI as arguments: neither make nor the shell ever
evaluates a MONTH, DATASET or PORT, whatever it holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taxi_assets_tests.dagster_processes import REPO_ROOT

HOSTILE = [
    "2021-01; touch {marker}",
    "2021-01 && touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; '",
    '"; touch {marker}; "',
    "$(shell touch {marker})",
    "2021-01\\'; touch {marker} #",
]


def cli_arguments(tmp_path, target: str, **variables: str) -> list[str]:
    """The arguments `make <target>` gives the CLI; uv is a script that prints them."""
    printer = tmp_path / "uv"
    printer.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    printer.chmod(0o755)
    assignments = [f"{name}={value}" for name, value in variables.items()]
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO_ROOT), target, f"UV={printer}", *assignments],
        capture_output=True,
        text=True,
        check=True,
    )
    *_, cli = (json.loads(line) for line in done.stdout.splitlines())
    return cli[cli.index("taxi_assets.cli") + 1 :]


@pytest.mark.parametrize("template", HOSTILE)
def test_a_hostile_month_or_dataset_reaches_the_cli_as_text_and_runs_nothing(tmp_path, template):
    marker = tmp_path / "ran"
    value = template.format(marker=marker)

    arguments = cli_arguments(tmp_path, "run", MONTH=value, DATASET=value)

    assert arguments == ["run", "--dataset", value, "--month", value]
    assert not marker.exists()


def test_a_hostile_port_reaches_the_cli_as_text_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    value = f"3000; touch {marker}"

    assert cli_arguments(tmp_path, "dev", PORT=value) == ["dev", "--port", value]
    assert not marker.exists()


def test_the_defaults_still_reach_the_cli(tmp_path):
    assert cli_arguments(tmp_path, "run") == ["run", "--dataset", "yellow", "--month", "2021-01"]
    assert cli_arguments(tmp_path, "dev") == ["dev"]
