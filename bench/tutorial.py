"""The seed tutorial's pipeline as a plain script: the baseline `make bench` compares against.

Kept as the tutorial (and Mage under it) does it, inefficiencies included, because that is
what is being measured: `pd.read_csv` with the tutorial's dtype dict and `parse_dates`, the
`passenger_count > 0` boolean filter and its zero-passenger test, the load into Postgres,
`df.to_parquet`, and `pq.write_to_dataset` partitioned by pickup date.

The Postgres load comes in two variants (`sink`):
- `to_sql`: pandas' `DataFrame.to_sql` over SQLAlchemy + psycopg 3, `if_exists="replace"`,
  default chunksize and method, which is what most tutorial readers write outside Mage;
- `mage_copy`: what the tutorial's `Postgres.export(..., if_exists="replace")` block runs in
  Mage (mage_ai/io/sql.py `BaseSQL.export` + mage_ai/io/postgres.py `upload_dataframe`):
  dtype inference twice, two frame copies, lower-cased column names, a CREATE TABLE with
  inferred types, `replace({nan: None})`, `to_csv` into a StringIO and psycopg2
  `copy_expert` of CSV with FORCE_NULL, in one transaction.

    python -m bench.tutorial FILE.csv.gz postgresql://postgres@127.0.0.1:PORT/postgres --sink to_sql
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = "ny_taxi"
TABLES = {"to_sql": "yellow_cab_data", "mage_copy": "yellow_cab_data_mage"}

# Verbatim from the tutorial's data loader block.
taxi_dtypes = {
    "VendorID": pd.Int64Dtype(),
    "passenger_count": pd.Int64Dtype(),
    "trip_distance": float,
    "RatecodeID": pd.Int64Dtype(),
    "store_and_fwd_flag": str,
    "PULocationID": pd.Int64Dtype(),
    "DOLocationID": pd.Int64Dtype(),
    "payment_type": pd.Int64Dtype(),
    "fare_amount": float,
    "extra": float,
    "mta_tax": float,
    "tip_amount": float,
    "tolls_amount": float,
    "improvement_surcharge": float,
    "total_amount": float,
    "congestion_surcharge": float,
}
parse_dates = ["tpep_pickup_datetime", "tpep_dropoff_datetime"]


def load(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        # What a tutorial reader writes for the TLC's own files: the file's types as they are.
        return pd.read_parquet(path)
    return pd.read_csv(
        path, sep=",", compression="gzip", dtype=taxi_dtypes, parse_dates=parse_dates
    )


def transform(data: pd.DataFrame) -> pd.DataFrame:
    print(f"Preprocessing: rows with zero passengers {data['passenger_count'].isin([0]).sum()}")
    output = data[data["passenger_count"] > 0]
    # The tutorial's @test block.
    assert output["passenger_count"].isin([0]).sum() == 0, "There are rides with zero passengers"
    return output


def export_to_sql(df: pd.DataFrame, pg_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        df.to_sql(TABLES["to_sql"], engine, schema=SCHEMA, if_exists="replace", index=False)
    finally:
        engine.dispose()


# --- Mage's Postgres exporter, replicated (mage_ai/io/{sql,postgres,export_utils}.py) ---------


def _mage_clean_name(name: str) -> str:
    import re

    for char in ["\ufeff", '"', "$", "\n", "\r", "\t"]:
        name = name.replace(char, "")
    name = re.sub(r"\W", "_", name)
    if name and re.match(r"\d", name[0]):
        name = f"letter_{name}"
    return name.lower()


def _mage_infer_dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {column: pd.api.types.infer_dtype(df[column], skipna=True) for column in df.columns}


def _mage_get_type(column: pd.Series, dtype: str) -> str:
    if dtype in ("datetime", "datetime64"):
        return "timestamptz" if getattr(column.dt, "tz", None) else "timestamp"
    if dtype in ("string", "categorical", "empty"):
        return "text"
    if dtype in ("floating", "decimal", "mixed-integer-float"):
        return "double precision"
    if dtype == "integer":
        max_int, min_int = column.max(), column.min()
        if np.int16(max_int) == max_int and np.int16(min_int) == min_int:
            return "smallint"
        if np.int32(max_int) == max_int and np.int32(min_int) == min_int:
            return "integer"
        return "bigint"
    if dtype == "boolean":
        return "boolean"
    return "text"


def _mage_serialize_obj(val):
    if isinstance(val, (dict, list, np.ndarray)):
        return json.dumps(val, default=str)
    return val


def export_mage_copy(df: pd.DataFrame, pg_url: str) -> None:
    import psycopg2

    table = TABLES["mage_copy"]
    full_table_name = f"{SCHEMA}.{table}"
    # BaseSQL.export: infer, clean (a copy; identity for these dtypes), rename, infer again.
    dtypes = _mage_infer_dtypes(df)
    df = df.copy()
    df = df.rename(columns={col: _mage_clean_name(col) for col in df.columns})
    dtypes = _mage_infer_dtypes(df)

    connection = psycopg2.connect(pg_url, keepalives=1, keepalives_idle=300)
    try:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT * FROM pg_tables WHERE schemaname = %s AND tablename = %s", (SCHEMA, table)
            )
            table_exists = bool(cur.rowcount)
        with connection.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};")
            if table_exists:
                # if_exists="replace" without drop_table_on_replace deletes the rows.
                cur.execute(f"DELETE FROM {full_table_name}")
            db_dtypes = {col: _mage_get_type(df[col], dtypes[col]) for col in dtypes}
            if not table_exists:
                columns_sql = ",".join(f'"{_mage_clean_name(c)}" {t}' for c, t in db_dtypes.items())
                cur.execute(f"CREATE TABLE {full_table_name} ({columns_sql});")
            # Postgres.upload_dataframe, COPY branch.
            df_ = df.copy()
            for col in df_.columns:
                df_col_dropna = df_[col].dropna()
                if df_col_dropna.count() == 0:
                    continue
                if dtypes[col] == "object" or (
                    df_[col].dtype == object and not isinstance(df_col_dropna.iloc[0], str)
                ):
                    df_[col] = df_[col].apply(_mage_serialize_obj)
            df_.replace({np.nan: None}, inplace=True)
            insert_columns = ", ".join(f'"{col}"' for col in df_.columns)
            buffer = StringIO()
            df_.to_csv(buffer, header=False, index=False, na_rep="")
            buffer.seek(0)
            cur.copy_expert(
                f"COPY {full_table_name} ({insert_columns}) FROM STDIN "
                f"(FORMAT csv, DELIMITER ',', NULL '', FORCE_NULL({insert_columns}));",
                buffer,
            )
        connection.commit()
    finally:
        connection.close()


def drop_table(pg_url: str, sink: str) -> None:
    """Start from no table, as a first load does: Mage's replace deletes rows, to_sql drops."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{TABLES[sink]}")


# --- the two file sinks -------------------------------------------------------------------------


def export_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path)


def export_partitioned(data: pd.DataFrame, root_path: Path) -> None:
    # The tutorial's block mutates its input frame; Mage hands each block its own copy.
    data = data.copy()
    data["tpep_pickup_date"] = data["tpep_pickup_datetime"].dt.date
    table = pa.Table.from_pandas(data)
    pq.write_to_dataset(table, root_path=str(root_path), partition_cols=["tpep_pickup_date"])


@contextmanager
def _timed(steps: dict, name: str):
    started = time.perf_counter()
    yield
    steps[name] = round(time.perf_counter() - started, 3)


def run(csv_path: Path | str, pg_url: str, workdir: Path | str, sink: str = "to_sql") -> dict:
    """Run the tutorial's pipeline once; returns rows read, rows loaded and seconds per step."""
    if sink not in TABLES:
        raise ValueError(f"sink must be one of {sorted(TABLES)}")
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    drop_table(pg_url, sink)

    steps: dict[str, float] = {}
    with _timed(steps, "read_parquet" if Path(csv_path).suffix == ".parquet" else "read_csv"):
        data = load(Path(csv_path))
    with _timed(steps, "transform"):
        clean = transform(data)
    rows_read, rows_loaded = len(data), len(clean)
    del data
    with _timed(steps, sink):
        (export_to_sql if sink == "to_sql" else export_mage_copy)(clean, pg_url)
    with _timed(steps, "to_parquet"):
        export_parquet(clean, workdir / "yellow_tripdata.parquet")
    with _timed(steps, "write_to_dataset"):
        export_partitioned(clean, workdir / "yellow_tripdata_by_day")
    return {"rows": rows_read, "rows_loaded": rows_loaded, "steps": steps, "postgres_step": sink}


def main() -> None:
    parser = argparse.ArgumentParser(description="The tutorial's pipeline, timed per step.")
    parser.add_argument("csv", type=Path)
    parser.add_argument("pg_url")
    parser.add_argument("--sink", choices=sorted(TABLES), default="to_sql")
    parser.add_argument("--workdir", type=Path, default=Path(".bench/work/tutorial"))
    args = parser.parse_args()
    print(json.dumps(run(args.csv, args.pg_url, args.workdir, args.sink), indent=2))


if __name__ == "__main__":
    main()
