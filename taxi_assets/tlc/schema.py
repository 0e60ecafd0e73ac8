"""Reading a trip file: the CSV contract enforced, Parquet streamed, every input under a ceiling.

A dataset's contract (datasets.py) is the tutorial's dtype dict and its two parsed datetime
columns. The reader
fails on the first departure from it with the file, row and column at fault: a silent
coercion (strings in numbers, shifted dates) would load wrong data that the checks cannot see.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from taxi_assets.datasets import YELLOW, TripDataset, foreign_columns

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class TripFileError(ValueError):
    """A source file that does not meet the column contract."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{Path(path).name}: {problem}")
        self.path = Path(path)


def _open_text(path: Path):
    # utf-8-sig: a byte-order mark before the header (Excel's "CSV UTF-8") is not a name's.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


EMPTY = "is empty: it holds no header and no rows; nothing was loaded"


def _check_header(path: Path, dataset: TripDataset) -> None:
    try:
        with _open_text(path) as text:
            # As CSV: a header may quote its names, as the TLC's zone lookup does.
            header = next(csv.reader(text), [])
    except (OSError, EOFError, zlib.error, csv.Error) as error:
        raise TripFileError(path, f"cannot be read: {error}") from error
    if not header:
        raise TripFileError(path, EMPTY)
    contract = dataset.csv_columns
    missing = [name for name in contract if name not in header]
    unexpected = [name for name in header if name not in contract]
    if missing or unexpected:
        raise TripFileError(
            path,
            f"header does not match the {dataset.title} column contract: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
            + foreign_file_hint(dataset, unexpected),
        )


def foreign_file_hint(dataset: TripDataset, names: list[str]) -> str:
    """ "; its columns … are the green taxi layout's", when a file of another series shows."""
    found = foreign_columns(dataset, names)
    return "".join(
        f"; its columns {columns} are the {title} layout's: is it a {title} file "
        f"served under the {dataset.title} name?"
        for title, columns in found.items()
    )


def _locate_bad_row(path: Path, error: Exception, contract: dict[str, pa.DataType]) -> str:
    """Name the row and column behind a pyarrow error, which reports neither reliably.

    One more streaming pass over the file as text: a malformed line anywhere is reported
    first (it shifts the row numbers after it), else the first unparsable value of the first
    column in contract order that has one.
    """
    bad_lines: list[str] = []

    def remember(row) -> str:
        bad_lines.append(
            f"line {row.number}: expected {row.expected_columns} columns, "
            f"got {row.actual_columns}: {row.text[:80]!r}"
        )
        return "skip"

    as_text = pa_csv.open_csv(
        path,
        # Single-threaded, or pyarrow cannot tell the handler the line number.
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=remember),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in contract},
            strings_can_be_null=True,
        ),
    )
    first_failure: dict[str, tuple[int, str]] = {}
    offset = 0
    for batch in as_text:
        for name, type_ in contract.items():
            if name in first_failure:
                continue
            raw = batch.column(name)
            if pa.types.is_timestamp(type_):
                valid = pc.is_valid(
                    pc.strptime(raw, format=DATETIME_FORMAT, unit="us", error_is_null=True)
                )
            elif type_ in _NUMBER_PATTERNS:
                valid = pc.match_substring_regex(raw, _NUMBER_PATTERNS[type_])
            else:
                continue
            failed = pc.invert(pc.or_kleene(valid, pc.is_null(raw)))
            if pc.any(failed).as_py():
                row = pc.index(failed, True).as_py()
                first_failure[name] = (offset + row, raw[row].as_py())
        offset += batch.num_rows
    if bad_lines:
        return bad_lines[0]
    for name, type_ in contract.items():
        if name in first_failure:
            row, value = first_failure[name]
            # +2: the header is line 1 and rows count from 0.
            expected = f" (expected {DATETIME_FORMAT})" if pa.types.is_timestamp(type_) else ""
            return f"line {row + 2}, column {name!r}: {value!r} is not a valid {type_}{expected}"
    return str(error)


_NUMBER_PATTERNS = {
    pa.int64(): r"^[+-]?\d+$",
    pa.float64(): r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
}

# Bytes of CSV parsed at a time (~8k rows). Measured: the parser's resident memory grows with
# its block far more than the block itself, ~60 MB over the process at 1 MiB blocks, ~450 MB
# at 8 MiB, for no gain in speed; batches are regrouped into larger ones downstream.
CSV_BLOCK_BYTES = 1 << 20


class InputTooLarge(TripFileError):
    """A source file past the source's ceiling on rows or decompressed bytes."""


class _CountedInput:
    """A file's decompressed bytes as pyarrow reads them, stopped at `max_bytes`.

    A hostile or corrupt file may decompress to far more than any month; counting what the
    parser has been given is the only measure that cannot be faked by the gzip trailer.
    """

    def __init__(self, path: Path, max_bytes: int):
        self._stream = (
            pa.CompressedInputStream(str(path), "gzip")
            if path.suffix == ".gz"
            else pa.OSFile(str(path))
        )
        self._max_bytes = max_bytes
        self.bytes_read = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(None if size is None or size < 0 else size)
        self.bytes_read += len(data)
        if self.bytes_read > self._max_bytes:
            raise OSError(f"more than {self._max_bytes:,} decompressed bytes")
        return data

    @property
    def over_ceiling(self) -> bool:
        return self.bytes_read > self._max_bytes

    def close(self) -> None:
        self._stream.close()
        self.closed = True


def read_csv_batches(
    path: Path | str, *, dataset: TripDataset, max_bytes: int
) -> Iterator[pa.RecordBatch]:
    """Parse one TLC CSV (plain or gzipped) under the dataset's column contract, streaming.

    Past `max_bytes` of decompressed CSV it stops with InputTooLarge.
    """
    path = Path(path)
    _check_header(path, dataset)
    contract = dict(dataset.csv_columns)
    counted = _CountedInput(path, max_bytes)
    try:
        reader = pa_csv.open_csv(
            counted,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types=contract,
                include_columns=list(contract),
                timestamp_parsers=[DATETIME_FORMAT],
                strings_can_be_null=True,
            ),
        )
        yield from reader
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as error:
        if counted.over_ceiling:
            raise InputTooLarge(
                path,
                f"decompresses to more than {max_bytes:,} bytes, the source's "
                "max_bytes_per_file ceiling; nothing was loaded",
            ) from None
        if isinstance(error, pa.ArrowInvalid):
            raise TripFileError(path, _locate_bad_row(path, error, contract)) from error
        raise TripFileError(path, f"is truncated or corrupt: {error}") from error
    finally:
        counted.close()


def _parquet_file(path: Path) -> pq.ParquetFile:
    if path.stat().st_size == 0:
        raise TripFileError(path, EMPTY)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise TripFileError(path, f"is not a readable Parquet file: {error}") from error


def read_parquet_batches(
    path: Path | str, *, dataset: TripDataset, max_bytes: int
) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows, row group by row group, in the file's own schema (of its era:
    schema_mapping.py maps it). Its footer says how big it decompresses: past `max_bytes`
    it stops with InputTooLarge before reading a row."""
    path = Path(path)
    parquet = _parquet_file(path)
    meta = parquet.metadata
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if size > max_bytes:
        raise InputTooLarge(
            path,
            f"decompresses to {size:,} bytes, more than the source's "
            f"max_bytes_per_file ceiling of {max_bytes:,}; nothing was loaded",
        )
    try:
        # iter_batches' default of 64k rows a batch, as the CSV reader's batches are regrouped.
        yield from parquet.iter_batches()
    except (pa.ArrowInvalid, OSError) as error:
        raise TripFileError(path, f"is truncated or corrupt: {error}") from error


# A file's suffix chooses its reader. Each yields batches of `file_schema(…)` from one file
# (the contract's for CSV, the footer's for Parquet), failing with TripFileError naming the file,
# row and column, and enforces `max_bytes` on what it decompresses; rows are counted for all of
# them in trip_batches.
READERS: dict[str, Callable[..., Iterator[pa.RecordBatch]]] = {
    ".csv": read_csv_batches,
    ".gz": read_csv_batches,  # .csv.gz
    ".parquet": read_parquet_batches,
}


def _reader(path: Path) -> Callable[..., Iterator[pa.RecordBatch]]:
    if path.suffix not in READERS:
        raise TripFileError(path, f"has no reader for {path.suffix or 'suffix-less'} files")
    return READERS[path.suffix]


def file_schema(path: Path | str, dataset: TripDataset) -> pa.Schema:
    """The schema of the batches trip_batches yields for this file, without reading a row: a
    CSV's header is checked against the contract here, so a wrong file fails before its rows."""
    path = Path(path)
    if _reader(path) is read_parquet_batches:
        return _parquet_file(path).schema_arrow
    _check_header(path, dataset)
    return dataset.csv_schema


def trip_batches(
    path: Path | str, *, dataset: TripDataset, max_rows: int, max_bytes: int
) -> Iterator[pa.RecordBatch]:
    """A source file's trips as the file has them, in batches, within the ceiling."""
    path = Path(path)
    rows = 0
    for batch in _reader(path)(path, dataset=dataset, max_bytes=max_bytes):
        rows += batch.num_rows
        if rows > max_rows:
            raise InputTooLarge(
                path,
                f"has more than {max_rows:,} rows, the source's "
                "max_rows_per_file ceiling; nothing was loaded",
            )
        yield batch


def read_trips(path: Path | str, dataset: TripDataset = YELLOW) -> pa.Table:
    """A whole (small) CSV under the dataset's contract, for tests and notebooks."""
    batches = read_csv_batches(path, dataset=dataset, max_bytes=1 << 40)
    return pa.Table.from_batches(list(batches), schema=dataset.csv_schema)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """pandas over the Arrow buffers, without copying them.

    Arrow-backed dtypes keep the tutorial's semantics (nullable integers, because real files
    leave VendorID and passenger_count empty on unknown-vendor rows) at a fraction of the
    memory and time of converting to numpy-backed `Int64`, and go back to Arrow for free.
    Timestamps stay numpy `datetime64`, which costs nothing either and compares with strings
    (`trips["tpep_pickup_datetime"] >= "2021-01-01"`) as users expect.
    """
    return table.to_pandas(types_mapper=_arrow_backed)


def _arrow_backed(type_: pa.DataType) -> pd.ArrowDtype | None:
    return None if pa.types.is_timestamp(type_) else pd.ArrowDtype(type_)
