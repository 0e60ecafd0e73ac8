"""The canonical trip columns, the contract of the TLC yellow-taxi CSV files, and a reader that
enforces it.

The contract is the tutorial's dtype dict and its two parsed datetime columns. The reader
fails on the first departure from it with the file, row and column at fault: a silent
coercion (strings in numbers, shifted dates) would load wrong data that the checks cannot see.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

PICKUP = "tpep_pickup_datetime"
DROPOFF = "tpep_dropoff_datetime"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"

TRIP_COLUMNS: dict[str, pa.DataType] = {
    "VendorID": pa.int64(),
    PICKUP: pa.timestamp("us"),
    DROPOFF: pa.timestamp("us"),
    "passenger_count": pa.int64(),
    "trip_distance": pa.float64(),
    "RatecodeID": pa.int64(),
    "store_and_fwd_flag": pa.string(),
    "PULocationID": pa.int64(),
    "DOLocationID": pa.int64(),
    "payment_type": pa.int64(),
    "fare_amount": pa.float64(),
    "extra": pa.float64(),
    "mta_tax": pa.float64(),
    "tip_amount": pa.float64(),
    "tolls_amount": pa.float64(),
    "improvement_surcharge": pa.float64(),
    "total_amount": pa.float64(),
    "congestion_surcharge": pa.float64(),
}
TRIP_SCHEMA = pa.schema(TRIP_COLUMNS.items())

# Every yellow-taxi file, CSV or Parquet of any era, is mapped to these columns (plus any new
# ones it brings, see schema_mapping.py): the CSV contract and the fees added since.
CANONICAL_COLUMNS: dict[str, pa.DataType] = {
    **TRIP_COLUMNS,
    "airport_fee": pa.float64(),
    "cbd_congestion_fee": pa.float64(),
}
CANONICAL_SCHEMA = pa.schema(CANONICAL_COLUMNS.items())


class TripFileError(ValueError):
    """A source file that does not meet the column contract."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{Path(path).name}: {problem}")
        self.path = Path(path)


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def _check_header(path: Path) -> None:
    try:
        with _open_text(path) as text:
            # As CSV: a header may quote its names, as the TLC's zone lookup does.
            header = next(csv.reader(text), [])
    except (OSError, EOFError, zlib.error, csv.Error) as error:
        raise TripFileError(path, f"cannot be read: {error}") from error
    missing = [name for name in TRIP_COLUMNS if name not in header]
    unexpected = [name for name in header if name not in TRIP_COLUMNS]
    if missing or unexpected:
        raise TripFileError(
            path,
            "header does not match the yellow-taxi column contract: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}",
        )


def _locate_bad_row(path: Path, error: Exception) -> str:
    """Name the row and column behind a pyarrow error, which reports neither reliably."""
    bad_lines: list[str] = []

    def remember(row) -> str:
        bad_lines.append(f"line {row.number}: expected {row.expected_columns} columns, "
                         f"got {row.actual_columns}: {row.text[:80]!r}")
        return "skip"

    as_text = pa_csv.read_csv(
        path,
        # Single-threaded, or pyarrow cannot tell the handler the line number.
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=remember),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in TRIP_COLUMNS},
            strings_can_be_null=True,
        ),
    )
    if bad_lines:
        return bad_lines[0]
    for name, type_ in TRIP_COLUMNS.items():
        raw = as_text.column(name)
        if pa.types.is_timestamp(type_):
            valid = pc.is_valid(pc.strptime(raw, format=DATETIME_FORMAT, unit="us",
                                            error_is_null=True))
        elif type_ in _NUMBER_PATTERNS:
            valid = pc.match_substring_regex(raw, _NUMBER_PATTERNS[type_])
        else:
            continue
        failed = pc.invert(pc.or_kleene(valid, pc.is_null(raw)))
        if pc.any(failed).as_py():
            row = pc.index(failed, True).as_py()
            # +2: the header is line 1 and rows count from 0.
            expected = f" (expected {DATETIME_FORMAT})" if pa.types.is_timestamp(type_) else ""
            return (f"line {row + 2}, column {name!r}: {raw[row].as_py()!r} "
                    f"is not a valid {type_}{expected}")
    return str(error)


_NUMBER_PATTERNS = {
    pa.int64(): r"^[+-]?\d+$",
    pa.float64(): r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
}


def read_trips(path: Path | str) -> pa.Table:
    """Parse one TLC yellow-taxi CSV (plain or gzipped) under the column contract."""
    path = Path(path)
    _check_header(path)
    try:
        return pa_csv.read_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types=TRIP_COLUMNS,
                include_columns=list(TRIP_COLUMNS),
                timestamp_parsers=[DATETIME_FORMAT],
                strings_can_be_null=True,
            ),
        )
    except (OSError, EOFError, zlib.error) as error:
        raise TripFileError(path, f"is truncated or corrupt: {error}") from error
    except pa.ArrowInvalid as error:
        raise TripFileError(path, _locate_bad_row(path, error)) from error


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """pandas over the Arrow buffers, without copying them.

    Arrow-backed dtypes keep the tutorial's semantics (nullable integers, because real files
    leave VendorID and passenger_count empty on unknown-vendor rows) at a fraction of the
    memory and time of converting to numpy-backed `Int64`, and go back to Arrow for free.
    Timestamps stay numpy `datetime64`, which costs nothing either and compares with strings
    (`trips[PICKUP] >= "2021-01-01"`) as users expect.
    """
    return table.to_pandas(types_mapper=_arrow_backed)


def _arrow_backed(type_: pa.DataType) -> pd.ArrowDtype | None:
    return None if pa.types.is_timestamp(type_) else pd.ArrowDtype(type_)
