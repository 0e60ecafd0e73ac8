"""Contender "ours": months through Dagster, as `make run` does them, on the local profile.

Per month, one run for the monthly assets (parse, clean, checks, Postgres, monthly Parquet)
and one single-run backfill of its days, recorded in a PostgreSQL-backed Dagster instance
like the real one.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import urllib.parse
from pathlib import Path

from taxi_assets import cli
from taxi_assets.datasets import YELLOW
from taxi_assets.defs.resources import PROJECT_ROOT
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY


def _month(csv_path: Path) -> str:
    return re.search(r"yellow_tripdata_(\d{4}-\d{2})", csv_path.name).group(1)


def _prepare(workdir: Path, pg_url: str, csv_paths: list[Path]) -> None:
    """A folder source of the files (a Parquet month is the TLC feed's, a CSV the mirror's)."""
    source = workdir / "source"
    source.mkdir(parents=True)
    parquet = csv_paths[0].suffix == ".parquet"
    for csv_path in csv_paths:
        suffix = ".parquet" if parquet else ".csv.gz"
        (source / f"yellow_tripdata_{_month(csv_path)}{suffix}").symlink_to(csv_path)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", workdir / "dagster.yaml")
    os.environ.update(
        {
            "TAXI_PROFILE": "local",
            "TAXI_SOURCE": "tlc" if parquet else "datatalks",
            "TAXI_HOME": str(workdir),
            "TAXI_SOURCE_URL": str(source),
            "TAXI_PG_PORT": str(urllib.parse.urlparse(pg_url).port),
            "DAGSTER_HOME": str(workdir),
            "DAGSTER_PG_URL": cli.instance_storage_url(pg_url),
        }
    )


# "Ours" in the comparison: what the tutorial's script also does, so the two compare like for like.
TUTORIAL_SCOPE = ["yellow_trips_by_day"]


def _header_only(csv_path: Path, workdir: Path) -> Path:
    """The header of the file, as the month before's, with no trip: what a run costs with no
    data at all. Another month than the others', whose last loads would fail its no_shrink."""
    year, month = int(_month(csv_path)[:4]), int(_month(csv_path)[5:])
    before = f"{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"
    empty = workdir / "empty" / f"yellow_tripdata_{before}.csv.gz"
    empty.parent.mkdir(parents=True)
    with gzip.open(csv_path, "rb") as source, gzip.open(empty, "wb") as out:
        out.write(source.readline())
    return empty


def run(
    csv_path: Path | str,
    pg_url: str,
    workdir: Path | str,
    daily_assets: list[str] | None = TUTORIAL_SCOPE,
    empty: bool = False,
) -> dict:
    """parse, clean, checks, Postgres, monthly Parquet and the by-day dataset (by default), or
    with `daily_assets=None` every sink, daily exports and warehouse included; `empty` runs
    the same on the month's header alone (Dagster's fixed cost)."""
    import dagster as dg

    csv_path, workdir = Path(csv_path).resolve(), Path(workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    if empty:
        csv_path = _header_only(csv_path, workdir)
    _prepare(workdir, pg_url, [csv_path])
    results = cli.run(_month(csv_path), [YELLOW], daily_assets)
    instance = dg.DagsterInstance.get()
    steps = {}
    # Each run and each step as [name, start, end] in seconds from the first run's start: what
    # ran beside what, and the time between steps that is Dagster's own.
    runs = [(result, instance.get_run_stats(result.run_id)) for result in results]
    origin = runs[0][1].start_time

    def span(label: str, start: float, end: float) -> list:
        return [label, round(start - origin, 2), round(end - origin, 2)]

    timeline = []
    for number, (result, stats) in enumerate(runs, start=1):
        timeline.append(span(f"run {number}", stats.start_time, stats.end_time))
        for stat in instance.get_run_step_stats(result.run_id):
            steps[stat.step_key] = round(stat.end_time - stat.start_time, 3)
            timeline.append(span(stat.step_key, stat.start_time, stat.end_time))
    # The rows the month's file held: counted where they are read, in the cleaning.
    rows = results[0].asset_materializations_for_node("cleaned_yellow_trips")[0].metadata
    loaded = results[0].asset_materializations_for_node("ny_taxi__yellow_cab_data")[0].metadata
    return {
        "rows": rows[ROWS_READ_KEY].value,
        "rows_loaded": loaded["dagster/row_count"].value,
        "steps": steps,
        "timeline": timeline,
        "postgres_step": "ny_taxi__yellow_cab_data",
    }


def _next_months(first: str, count: int) -> list[str]:
    year, month = int(first[:4]), int(first[5:])
    return [f"{year + (month - 1 + i) // 12}-{(month - 1 + i) % 12 + 1:02d}" for i in range(count)]


def run_backfill(
    csv_path: Path | str,
    pg_url: str,
    workdir: Path | str,
    months: int = 3,
    daily_assets: list[str] | None = TUTORIAL_SCOPE,
) -> dict:
    """Consecutive months in one process, as a backfill runs them one after another. Each
    month's own peak RSS (the kernel's high-water mark, reset before the month) shows whether
    memory grows as the backfill goes on."""
    from bench.run import _vm_hwm_mb, ensure_month

    csv_path, workdir = Path(csv_path).resolve(), Path(workdir).resolve()
    rows_per_month = int(re.search(r"\.(\d+)rows", csv_path.name).group(1))
    seed = int(re.search(r"seed(\d+)", csv_path.name).group(1))
    names = _next_months(_month(csv_path), months)
    paths = [csv_path, *(ensure_month(name, rows_per_month, seed).resolve() for name in names[1:])]
    shutil.rmtree(workdir, ignore_errors=True)
    _prepare(workdir, pg_url, paths)
    steps, rows = {}, 0
    for name in names:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        for result in cli.run(name, [YELLOW], daily_assets):
            rows += sum(
                e.event_specific_data.materialization.metadata[ROWS_READ_KEY].value
                for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "cleaned_yellow_trips"
            )
        steps[f"{name} (the month's peak RSS MB)"] = round(_vm_hwm_mb(), 1)
    return {"rows": rows, "steps": steps}
