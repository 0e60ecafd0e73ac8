"""Contender "ours": the month through Dagster, as `make run` does it, on the local profile.

One run for the monthly assets (parse, clean, checks, Postgres, monthly Parquet) and one
single-run backfill of the month's days (by-day dataset, daily exports), recorded in a
PostgreSQL-backed Dagster instance like the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

from taxi_assets import cli
from taxi_assets.resources import PROJECT_ROOT


def run(csv_path: Path | str, pg_url: str, workdir: Path | str) -> dict:
    csv_path, workdir = Path(csv_path).resolve(), Path(workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    month = re.search(r"yellow_tripdata_(\d{4}-\d{2})", csv_path.name).group(1)
    source = workdir / "source"
    source.mkdir(parents=True)
    (source / f"yellow_tripdata_{month}.csv.gz").symlink_to(csv_path)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", workdir / "dagster.yaml")
    url = urllib.parse.urlparse(pg_url)
    os.environ.update({
        "TAXI_PROFILE": "local", "TAXI_HOME": str(workdir), "TAXI_SOURCE_URL": str(source),
        "TAXI_PG_PORT": str(url.port), "DAGSTER_HOME": str(workdir), "DAGSTER_PG_URL": cli.instance_storage_url(pg_url),
    })

    import dagster as dg

    results = cli.run(month)
    instance = dg.DagsterInstance.get()
    steps = {}
    for result in results:
        for stat in instance.get_run_step_stats(result.run_id):
            steps[stat.step_key] = round(stat.end_time - stat.start_time, 3)
    rows = results[0].asset_materializations_for_node("raw_yellow_trips")[0].metadata
    loaded = results[0].asset_materializations_for_node("ny_taxi__yellow_cab_data")[0].metadata
    return {
        "rows": rows["dagster/row_count"].value,
        "rows_loaded": loaded["dagster/row_count"].value,
        "steps": steps,
        "postgres_step": "ny_taxi__yellow_cab_data",
    }
