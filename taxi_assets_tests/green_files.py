"""Full-width green-taxi files, built in code from real yellow-taxi rows.

No real full-width green month is small enough to ship: `data/` has only the heads of two
official green CSVs (8 whole rows each) and a 5-column re-write of January 2022. So each green file
here is made of real yellow trips, renamed and reordered into the green layout:

- real, unchanged: every trip's vendor, passenger count, distance, rate code, flag, zones,
  payment type and every amount, including the real oddities (zero-passenger and
  zero-distance trips, and 500 trips with no vendor, passenger count, rate code, flag or
  payment type, as the tails of the TLC's monthly files have);
- derived: the times, moved by a whole number of days so that the file's month starts where
  the sample's did (as tlc_feed.py does for yellow); `tpep_*` renamed `lpep_*`; `ehail_fee`
  empty (null); `trip_type` 2 (dispatch) where RatecodeID is 5 (negotiated fare), 1
  (street-hail) for every other rate code, empty where the rate code is; from 2025,
  `cbd_congestion_fee` 0.75 where the pickup zone id is at most 164, else 0.

The CSV (the DataTalksClub mirror's `green_tripdata_YYYY-MM.csv.gz`, 2019-01..2021-07) is the
real January 2021 sample's 28,401 rows followed by the January 2020 sample's 500 no-vendor
rows, each cell the sample's own text (TLC's `.20`, `8`), reordered, CRLF as the TLC writes.

The TLC Parquet eras are the January 2020 sample's 999 rows (tlc_feed.real_rows), typed as
that era's green footers are: before 2019-09 `ehail_fee` double; 2019-09..2023-01 it is
Null-typed and RatecodeID, passenger_count, payment_type and trip_type are double; from
2023-02 VendorID and the zone ids are int32 (and the flag large_string, as in yellow's files
from then); from 2025-01 `cbd_congestion_fee` (double) is the 21st column.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from taxi_assets_tests.conftest import sample
from taxi_assets_tests.tlc_feed import moved_to, retyped, real_rows

GREEN_COLUMNS = [
    "VendorID",
    "lpep_pickup_datetime",
    "lpep_dropoff_datetime",
    "store_and_fwd_flag",
    "RatecodeID",
    "PULocationID",
    "DOLocationID",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "ehail_fee",
    "improvement_surcharge",
    "total_amount",
    "payment_type",
    "trip_type",
    "congestion_surcharge",
]
_FROM_YELLOW = {
    "tpep_pickup_datetime": "lpep_pickup_datetime",
    "tpep_dropoff_datetime": "lpep_dropoff_datetime",
}
NEGOTIATED_FARE = 5  # RatecodeID of a negotiated fare: the dispatched trips
STAMP = "%Y-%m-%d %H:%M:%S"


# --- the CSV ----------------------------------------------------------------------------------


def _sample_text(name: str) -> pa.Table:
    """A real sample's cells as the text the TLC wrote, empty cells as ""."""
    with gzip.open(sample(name), "rt") as text:
        header = text.readline().strip().split(",")
    return pa_csv.read_csv(
        sample(name),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        ),
    )


def _text_moved(cells: pa.Table, since: dt.datetime, month: str) -> pa.Table:
    shift = pa.scalar(dt.datetime.fromisoformat(f"{month}-01") - since, pa.duration("s"))
    for name in _FROM_YELLOW:
        moved = pc.add(pc.strptime(cells[name], format=STAMP, unit="s"), shift)
        cells = cells.set_column(
            cells.schema.get_field_index(name), name, pc.strftime(moved, format=STAMP)
        )
    return cells


def _text_trip_type(rate_codes: pa.ChunkedArray) -> pa.ChunkedArray:
    street_or_dispatch = pc.if_else(pc.equal(rate_codes, str(NEGOTIATED_FARE)), "2", "1")
    return pc.if_else(pc.equal(rate_codes, ""), "", street_or_dispatch)


def green_csv_gz(month: str) -> bytes:
    """The month's green CSV.gz as the DataTalksClub mirror serves it (see the docstring)."""
    january_2021 = _text_moved(
        _sample_text("yellow_tripdata_2021-01.csv.gz"), dt.datetime(2021, 1, 1), month
    )
    january_2020 = _sample_text("yellow_tripdata_2020-01.csv.gz")
    no_vendor = january_2020.filter(pc.equal(january_2020["VendorID"], ""))
    cells = pa.concat_tables(
        [january_2021, _text_moved(no_vendor, dt.datetime(2020, 1, 1), month)]
    ).rename_columns([_FROM_YELLOW.get(n, n) for n in january_2021.column_names])
    cells = cells.append_column("ehail_fee", pa.array([""] * cells.num_rows))
    cells = cells.append_column("trip_type", _text_trip_type(cells["RatecodeID"]))
    columns = [cells[name].to_pylist() for name in GREEN_COLUMNS]
    lines = [",".join(GREEN_COLUMNS), *(",".join(row) for row in zip(*columns))]
    return gzip.compress(("\r\n".join(lines) + "\r\n").encode("ascii"), mtime=0)


def read_green_csv(data: bytes) -> pa.Table:
    """A green CSV.gz as pyarrow's own inference reads it, not through the pipeline's reader."""
    return pa_csv.read_csv(
        io.BytesIO(gzip.decompress(data)),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                "lpep_pickup_datetime": pa.timestamp("us"),
                "lpep_dropoff_datetime": pa.timestamp("us"),
                "ehail_fee": pa.float64(),
            }
        ),
    )


# --- the TLC Parquet eras ----------------------------------------------------------------------


def _green_layout(yellow: pa.Table, ehail_fee: pa.DataType) -> pa.Table:
    """Real yellow rows, already in the month, renamed and reordered into the green columns."""
    table = yellow.rename_columns([_FROM_YELLOW.get(n, n) for n in yellow.column_names])
    rate_codes = table["RatecodeID"]
    trip_type = pc.if_else(pc.equal(rate_codes, NEGOTIATED_FARE), 2, 1).cast(rate_codes.type)
    extra = {  # the two columns yellow has not
        "ehail_fee": pa.nulls(table.num_rows, ehail_fee),
        "trip_type": trip_type,  # null where the rate code is: if_else keeps the nulls
    }
    return pa.table(
        [extra[n] if n in extra else table[n] for n in GREEN_COLUMNS], names=GREEN_COLUMNS
    )


_COUNTS = ("RatecodeID", "passenger_count", "payment_type", "trip_type")


def era_2019(month: str) -> pa.Table:
    """..2019-08: ids and counts int64, `ehail_fee` double (null)."""
    return _green_layout(moved_to(real_rows(), month), pa.float64())


def era_2019_09(month: str) -> pa.Table:
    """2019-09..2023-01: `ehail_fee` Null-typed; rate code, counts and trip type double."""
    table = _green_layout(moved_to(real_rows(), month), pa.null())
    return retyped(table, dict.fromkeys(_COUNTS, pa.float64()))


def era_2023(month: str) -> pa.Table:
    """2023-02..2024-12: as 2019-09's with `ehail_fee` double, ids int32, large_string flag."""
    table = _green_layout(moved_to(real_rows(), month), pa.float64())
    return retyped(
        table,
        {
            **dict.fromkeys(_COUNTS, pa.float64()),
            **dict.fromkeys(("VendorID", "PULocationID", "DOLocationID"), pa.int32()),
            "store_and_fwd_flag": pa.large_string(),
        },
    )


def era_2025(month: str) -> pa.Table:
    """2025-01 on: 2023's layout plus `cbd_congestion_fee`, 21 columns."""
    table = era_2023(month)
    fee = pc.if_else(pc.less_equal(table["PULocationID"], 164), 0.75, 0.0)
    return table.append_column("cbd_congestion_fee", fee)


# One month of each era, as the feed would have it.
GREEN_ERAS = {
    "2019-03": era_2019,
    "2020-10": era_2019_09,
    "2023-05": era_2023,
    "2025-02": era_2025,
}


# --- what the pipeline should make of a file, computed here independently ------------------------


def expected_green(table: pa.Table, month: str) -> dict:
    """Counts and sums of a green file's trips that should survive cleaning.

    A trip is dropped if passenger_count is 0 or missing, or trip_distance is not above 0 (0,
    negative or missing); each rule's count is of every row it matches, so a trip both match
    counts for both.
    """
    passengers_ok = pc.fill_null(pc.greater(table["passenger_count"], 0), False)
    distance_ok = pc.fill_null(pc.greater(table["trip_distance"], 0), False)
    kept = table.filter(pc.and_(passengers_ok, distance_ok))
    start = dt.datetime.fromisoformat(f"{month}-01")
    end = (start + dt.timedelta(days=32)).replace(day=1)
    pickups = kept["lpep_pickup_datetime"].cast(pa.timestamp("us"))
    in_month = pc.and_(
        pc.greater_equal(pickups, pa.scalar(start, pa.timestamp("us"))),
        pc.less(pickups, pa.scalar(end, pa.timestamp("us"))),
    )
    days = pc.value_counts(pc.strftime(pickups.filter(in_month), format="%Y-%m-%d"))
    return {
        "rows": kept.num_rows,
        "dropped_passengers": table.num_rows - pc.sum(passengers_ok.cast(pa.int64())).as_py(),
        "dropped_distance": table.num_rows - pc.sum(distance_ok.cast(pa.int64())).as_py(),
        "dropped_rows": table.num_rows - kept.num_rows,
        "zero_distance_rows": pc.sum(
            pc.fill_null(pc.equal(table["trip_distance"], 0), False).cast(pa.int64())
        ).as_py(),
        "total_amount": round(pc.sum(kept["total_amount"]).as_py(), 2),
        "cbd_congestion_fee": pc.sum(kept["cbd_congestion_fee"]).as_py()
        if "cbd_congestion_fee" in kept.column_names
        else None,
        "passengers": int(pc.sum(kept["passenger_count"]).as_py()),
        "rows_in_month": pc.sum(in_month.cast(pa.int64())).as_py(),
        "rows_per_day": {d["values"]: d["counts"] for d in days.to_pylist()},
    }


def write_sample_source(folder: Path, months: list[str]) -> None:
    """A folder source for `make run` without the network: each month's green CSV.gz built
    here, beside the real yellow sample of January 2021 and the real zone lookup."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "taxi_zone_lookup.csv").write_bytes(
        gzip.decompress(sample("taxi+_zone_lookup.csv.gz").read_bytes())
    )
    shutil.copyfile(
        sample("yellow_tripdata_2021-01.csv.gz"), folder / "yellow_tripdata_2021-01.csv.gz"
    )
    for month in months:
        (folder / f"green_tripdata_{month}.csv.gz").write_bytes(green_csv_gz(month))


if __name__ == "__main__":
    # python -m taxi_assets_tests.green_files FOLDER [YYYY-MM ...]   (default 2021-01)
    write_sample_source(Path(sys.argv[1]), sys.argv[2:] or ["2021-01"])
    print(f"TAXI_SOURCE_URL={Path(sys.argv[1]).resolve()}")
