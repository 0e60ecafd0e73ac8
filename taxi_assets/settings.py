"""Every environment variable the project reads: its name, default and meaning, and the one place
that reads them (docs/settings.md lists the same, a test keeps the two equal).

Values are read when asked for, never at import: the CLI sets some before Dagster loads, and
tests set them per test. The sinks' secrets are named here for the docs, and the resources take
them as `dg.EnvVar`, which Dagster resolves at launch and keeps out of run config and logs.
Standard library only, as `first_line` imports it before the package's heavy imports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # "" for none
    meaning: str
    secret: bool = False


SETTINGS = (
    Setting("TAXI_PROFILE", "local", "where everything goes: `local` or `gcp`"),
    Setting(
        "TAXI_HOME",
        str(PROJECT_ROOT / ".local"),
        "the folder of the local state: PostgreSQL, lake, warehouse",
    ),
    Setting("TAXI_SOURCE", "datatalks", "the publisher of the monthly files: `datatalks` or `tlc`"),
    Setting("TAXI_SOURCE_URL", "", "a URL or folder that replaces the source's base"),
    Setting("LOG_LEVEL", "INFO", "the console's level for `make run`"),
    Setting("DAGSTER_HOME", str(PROJECT_ROOT), "the folder of Dagster's instance (`dagster.yaml`)"),
    Setting(
        "DAGSTER_PG_URL",
        "",
        "the PostgreSQL of Dagster's runs and events; the project's own on `local`",
        secret=True,
    ),
    Setting("DAGSTER_WEBSERVER_PORT", "3000", "the port of the Dagster UI"),
    Setting("DAGSTER_HOST", "127.0.0.1", "the address of the Dagster UI"),
    Setting("TAXI_PG_HOST", "", "the PostgreSQL sink's host (`gcp`)"),
    Setting("TAXI_PG_PORT", "55432", "the PostgreSQL sink's port; on `local`, the project's own"),
    Setting("TAXI_PG_USER", "", "the PostgreSQL sink's user (`gcp`)"),
    Setting("TAXI_PG_PASSWORD", "", "the PostgreSQL sink's password (`gcp`)", secret=True),
    Setting("TAXI_PG_DB", "", "the PostgreSQL sink's database (`gcp`)"),
    Setting("TAXI_GCS_BUCKET", "", "the lake's bucket (`gcp`)"),
    Setting("TAXI_GCS_ENDPOINT", "", "a GCS emulator's address instead of Google's"),
    Setting("TAXI_BQ_PROJECT", "", "the warehouse's BigQuery project (`gcp`)"),
    Setting("TAXI_BQ_DATASET", "ny_taxi", "the warehouse's dataset of trips (`gcp`)"),
    Setting("TAXI_BQ_LOCATION", "", "the warehouse's BigQuery location (`gcp`)"),
    Setting("TAXI_BQ_ENDPOINT", "", "a BigQuery emulator's address instead of Google's"),
    Setting("TAXI_BQ_ANALYTICS_DATASET", "analytics", "the dataset of the dbt models (`gcp`)"),
    Setting(
        "GOOGLE_APPLICATION_CREDENTIALS",
        "",
        "a Google key file; unset, gcloud's credentials or the metadata server",
        secret=True,
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def value(name: str) -> str:
    """The setting's value now; its default when unset or empty."""
    return os.environ.get(name) or BY_NAME[name].default


def is_set(name: str) -> bool:
    """Whether the environment gives the setting a value (its default aside)."""
    return bool(os.environ.get(BY_NAME[name].name))


def profile() -> str:
    """TAXI_PROFILE: where everything goes, `local` (the default) or `gcp` (profiles.py)."""
    return value("TAXI_PROFILE")


def taxi_home() -> Path:
    """Where the local profile keeps its state (git-ignored)."""
    return Path(value("TAXI_HOME")).resolve()
