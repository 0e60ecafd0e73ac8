"""A TLC-shaped Parquet month in the 2025-01 layout, from the generated CSV month.

    python -m bench.tlc_parquet --csv .bench/data/yellow_tripdata_2025-01...csv.gz --out X.parquet

The rows are generate_month's (real rows resampled into the month); they are laid out as the
TLC's 2025 files are: VendorID and the zone ids int32, store_and_fwd_flag large_string,
`Airport_fee` and `cbd_congestion_fee` doubles. The two fees are derived, not real (the CSV
samples predate them): $1.75 for pickups at JFK or LaGuardia (zones 132, 138), $0.75 for
pickups in zones up to 164 below 60th Street (a stand-in for the CBD). Streamed, in row
groups of about the TLC's size, so a 3.5 M-row month never sits in memory whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from taxi_assets.datasets import YELLOW
from taxi_assets.tlc.schema import DATETIME_FORMAT

_CBD_ZONES = pa.array(
    [4, 12, 13, 45, 87, 88, 90, 100, 103, 107, 113, 114, 125, 137, 144, 148, 158, 161, 162, 164],
    pa.int64(),
)
_AIRPORT_ZONES = pa.array([132, 138], pa.int64())
LAYOUT_2025 = pa.schema(
    [
        ("VendorID", pa.int32()),
        ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()),
        ("RatecodeID", pa.int64()),
        ("store_and_fwd_flag", pa.large_string()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("payment_type", pa.int64()),
        ("fare_amount", pa.float64()),
        ("extra", pa.float64()),
        ("mta_tax", pa.float64()),
        ("tip_amount", pa.float64()),
        ("tolls_amount", pa.float64()),
        ("improvement_surcharge", pa.float64()),
        ("total_amount", pa.float64()),
        ("congestion_surcharge", pa.float64()),
        ("Airport_fee", pa.float64()),
        ("cbd_congestion_fee", pa.float64()),
    ]
)


def _fee(zones: pa.Array, where: pa.Array, amount: float) -> pa.Array:
    return pc.if_else(pc.is_in(zones, value_set=where), amount, 0.0)


def convert(csv_path: Path, out: Path) -> int:
    reader = pa_csv.open_csv(
        csv_path,
        convert_options=pa_csv.ConvertOptions(
            column_types=dict(YELLOW.csv_columns),
            timestamp_parsers=[DATETIME_FORMAT],
            strings_can_be_null=True,
        ),
    )
    partial = out.with_suffix(".parquet.part")
    rows = 0
    with pq.ParquetWriter(partial, LAYOUT_2025) as writer:
        for batch in reader:
            zones = batch.column("PULocationID")
            columns = {name: batch.column(name) for name in YELLOW.csv_columns}
            columns["Airport_fee"] = _fee(zones, _AIRPORT_ZONES, 1.75)
            columns["cbd_congestion_fee"] = _fee(zones, _CBD_ZONES, 0.75)
            table = pa.table(
                [columns[f.name].cast(f.type) for f in LAYOUT_2025], schema=LAYOUT_2025
            )
            writer.write_table(table, row_group_size=1 << 20)
            rows += table.num_rows
    partial.rename(out)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(f"{args.out}: {convert(args.csv, args.out):,} rows")


if __name__ == "__main__":
    main()
