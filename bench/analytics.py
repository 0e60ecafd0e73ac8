"""Contender "ours_dbt": a month of both datasets through every sink, then the dbt models.

The green month is the generated yellow month's rows in the green layout (as the tests build
green files from real rows, taxi_assets_tests/green_files.py), beside it the real zone lookup;
`make run DATASET=all` then runs the zones, each dataset's month and days, and the dbt build
over the month's days (dim_zones, fct_trips by day, the revenue mart and its chart).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from bench.ours import _month, _prepare
from taxi_assets import cli
from taxi_assets.datasets import DATASETS
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.green_files import GREEN_COLUMNS, _FROM_YELLOW, _text_trip_type

DBT_STEPS = ("zone_models", "trip_models", "revenue_mart")


def write_green_month(yellow_csv: Path, green_csv: Path) -> None:
    """The yellow month's cells, untouched text, renamed and reordered into the green file."""
    strings = pa_csv.read_csv(
        yellow_csv,
        convert_options=pa_csv.ConvertOptions(column_types={}, strings_can_be_null=False),
        read_options=pa_csv.ReadOptions(block_size=1 << 26),
    )
    strings = strings.cast(pa.schema([(n, pa.string()) for n in strings.column_names]))
    cells = strings.rename_columns([_FROM_YELLOW.get(n, n) for n in strings.column_names])
    cells = cells.append_column("ehail_fee", pa.array([""] * cells.num_rows))
    cells = cells.append_column("trip_type", _text_trip_type(cells["RatecodeID"]))
    with gzip.open(green_csv, "wb", compresslevel=1) as out:
        pa_csv.write_csv(
            cells.select(GREEN_COLUMNS), out, pa_csv.WriteOptions(quoting_style="none")
        )


def run(csv_path: Path | str, pg_url: str, workdir: Path | str) -> dict:
    import dagster as dg

    csv_path, workdir = Path(csv_path).resolve(), Path(workdir).resolve()
    month = _month(csv_path)
    _prepare(workdir, pg_url, [csv_path])
    write_green_month(csv_path, workdir / "source" / f"green_tripdata_{month}.csv.gz")
    (workdir / "source" / "taxi_zone_lookup.csv").write_bytes(
        gzip.decompress(sample("taxi+_zone_lookup.csv.gz").read_bytes())
    )
    results = cli.run(month, list(DATASETS.values()))
    instance = dg.DagsterInstance.get()
    steps, rows = {}, 0
    for result in results:
        for stat in instance.get_run_step_stats(result.run_id):
            steps[stat.step_key] = round(stat.end_time - stat.start_time, 3)
        for event in result.get_asset_materialization_events():
            if event.asset_key.to_user_string() in ("cleaned_yellow_trips", "cleaned_green_trips"):
                rows += event.event_specific_data.materialization.metadata[ROWS_READ_KEY].value
    steps["dbt build (the three dbt steps)"] = round(sum(steps[s] for s in DBT_STEPS), 3)
    return {"rows": rows, "steps": steps}
