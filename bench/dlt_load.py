"""Contender "dlt": the same month loaded by dlt, the loader many users would pick instead.

Set up as dlt's documentation says is fastest for Postgres: a resource yielding Arrow record
batches (pyarrow's streaming CSV reader under our column contract, the zero-passenger filter
applied per batch), `loader_file_format="parquet"`, which dlt loads through the ADBC
PostgreSQL driver, `write_disposition="replace"`. Each of dlt's three stages is timed.

    python -m bench.dlt_load FILE.csv.gz postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.datasets import YELLOW
from taxi_assets.tlc.schema import trip_batches

DATASET = "ny_taxi_dlt"


def run(csv_path: Path | str, pg_url: str, workdir: Path | str) -> dict:
    import dlt

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0}

    @dlt.resource(name="yellow_cab_data", write_disposition="replace", file_format="parquet")
    def trips():
        for batch in trip_batches(csv_path, dataset=YELLOW, max_rows=10**9, max_bytes=10**12):
            counts["rows"] += batch.num_rows
            yield pa.Table.from_batches(
                [batch.filter(pc.greater(pc.fill_null(batch["passenger_count"], 0), 0))]
            )

    pipeline = dlt.pipeline(
        pipeline_name="taxi_bench",
        pipelines_dir=str(workdir / "dlt"),
        destination=dlt.destinations.postgres(credentials=_with_password(pg_url)),
        dataset_name=DATASET,
    )
    steps = {}
    started = time.perf_counter()
    pipeline.extract(trips())
    steps["extract"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    pipeline.normalize()
    steps["normalize"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    pipeline.load()
    steps["load"] = round(time.perf_counter() - started, 3)
    with pipeline.sql_client() as client:
        [(loaded,)] = client.execute_sql(f"SELECT count(*) FROM {DATASET}.yellow_cab_data")
    return {"rows": counts["rows"], "rows_loaded": loaded, "steps": steps, "postgres_step": "load"}


def _with_password(pg_url: str) -> str:
    """dlt insists on a password; the bench's throwaway server trusts loopback and ignores it."""
    url = urllib.parse.urlsplit(pg_url)
    if url.password:
        return pg_url
    netloc = f"{url.username or 'postgres'}:unused@{url.hostname}:{url.port or 5432}"
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("pg_url")
    parser.add_argument("--workdir", type=Path, default=Path(".bench/work/dlt"))
    args = parser.parse_args()
    print(json.dumps(run(args.csv, args.pg_url, args.workdir), indent=2))


if __name__ == "__main__":
    main()
