"""Generate a full-size TLC yellow-taxi month from the real samples, byte for byte like the TLC file.

    python -m bench.generate_month --month 2021-01 --rows 1369765 --out .bench/2021-01.csv.gz --seed 7

Real rows are resampled with replacement and each copy is moved by a whole number of days so
its pickup lands on a day of the target month; the dropoff moves by the same days, so the trip
duration and the time of day are the real ones. Only the ten date characters of the two
datetime fields are rewritten: every other byte (number formats such as `.20` and `8`, empty
cells, CRLF) is the source's. Rows the source has outside its own month (the stragglers a
real TLC file carries) keep their distance to the month, so the output has the same small
share of them. Same arguments, same bytes: the sampling is seeded and gzip's mtime is 0.
"""

from __future__ import annotations

import argparse
import gzip
import operator
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "taxi_assets_tests" / "data"
# The 2021-01 head has no empty cells; the 2020-01 sample adds the real unknown-vendor rows
# (empty VendorID, passenger_count, RatecodeID, store_and_fwd_flag, payment_type).
DEFAULT_INPUTS = (
    TEST_DATA / "yellow_tripdata_2021-01.csv.gz",
    TEST_DATA / "yellow_tripdata_2020-01.csv.gz",
)
REAL_2021_01_ROWS = 1_369_765

_DATETIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_PICKUP, _DROPOFF = b"tpep_pickup_datetime", b"tpep_dropoff_datetime"
_CHUNK_ROWS = 1 << 17


@dataclass
class Pool:
    """The usable source rows, with what the day shifting needs to know about each."""

    header: bytes
    eol: bytes
    lines: list[bytes]  # each ends with `eol`
    date_offset: np.ndarray  # byte offset of the pickup field in the line
    pickup_day: np.ndarray  # days since 1970-01-01
    dropoff_day: np.ndarray
    month_start: np.ndarray  # first day of the row's source file month
    month_end: np.ndarray  # first day after it
    dropped: int


def _read(path: Path) -> bytes:
    if not path.exists():
        hint = ""
        if path.name == "yellow_tripdata_2021-01.csv.gz":
            hint = (
                "; create it with `gzip -c ../shared/data/yellow_tripdata_2021-01.complete_rows.csv"
                f" > {path}`"
            )
        raise SystemExit(f"generate_month: input {path} does not exist{hint}")
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _month_days(month: str) -> tuple[int, int]:
    start = np.datetime64(f"{month}-01", "D")
    end = (start.astype("datetime64[M]") + 1).astype("datetime64[D]")
    return int(start.astype(np.int64)), int(end.astype(np.int64))


def load_pool(paths: list[Path]) -> Pool:
    header = eol = None
    lines: list[bytes] = []
    offsets: list[int] = []
    pickups: list[bytes] = []
    dropoffs: list[bytes] = []
    month_start: list[int] = []
    month_end: list[int] = []
    dropped = 0
    for path in paths:
        raw = _read(path)
        first_newline = raw.index(b"\n")
        file_eol = b"\r\n" if raw[first_newline - 1 : first_newline] == b"\r" else b"\n"
        file_header = raw[:first_newline].rstrip(b"\r")
        columns = file_header.split(b",")
        if header is None:
            header, eol = file_header, file_eol
            if columns[1:3] != [_PICKUP, _DROPOFF]:
                raise SystemExit(
                    f"generate_month: {path.name} is not a TLC yellow file "
                    f"(columns 2-3 are {columns[1:3]})"
                )
        elif file_header != header:
            raise SystemExit(
                f"generate_month: {path.name} has a different header from {paths[0].name}"
            )
        body = raw[first_newline + 1 :].split(b"\n")
        # A last line without a newline is a cut-off download, not a row.
        dropped += bool(body.pop())
        file_pickups = []
        for line in body:
            line = line.rstrip(b"\r")
            if line.count(b",") != len(columns) - 1:
                dropped += 1
                continue
            first_comma = line.index(b",")
            pickup = line[first_comma + 1 : first_comma + 20]
            dropoff = line[first_comma + 21 : first_comma + 40]
            if (
                line[first_comma + 20 : first_comma + 21] != b","
                or line[first_comma + 40 : first_comma + 41] != b","
                or not _DATETIME.fullmatch(pickup)
                or not _DATETIME.fullmatch(dropoff)
            ):
                dropped += 1
                continue
            lines.append(line + eol)
            offsets.append(first_comma + 1)
            file_pickups.append(pickup)
            dropoffs.append(dropoff)
        if not file_pickups:
            raise SystemExit(f"generate_month: {path.name} has no usable rows")
        pickups += file_pickups
        # The file's month is the one most of its pickups fall in.
        months, counts = np.unique(np.array([p[:7] for p in file_pickups]), return_counts=True)
        start, end = _month_days(months[counts.argmax()].decode())
        month_start += [start] * len(file_pickups)
        month_end += [end] * len(file_pickups)

    def days(values: list[bytes]) -> np.ndarray:
        return np.array([v[:10].decode() for v in values], dtype="datetime64[D]").astype(np.int64)

    return Pool(
        header,
        eol,
        lines,
        np.array(offsets, dtype=np.int64),
        days(pickups),
        days(dropoffs),
        np.array(month_start),
        np.array(month_end),
        dropped,
    )


def plan(pool: Pool, month: str, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which source row each output row copies, and by how many days it moves; in file order."""
    rng = np.random.default_rng(seed)
    target_start, target_end = _month_days(month)
    n_days = target_end - target_start
    n_source = len(pool.lines)
    copies = -(-rows // n_source)
    # Deal each source row's copies round-robin over the days from a random first day, so a
    # row lands on the same day at most ceil(copies / days) times: fewer exact duplicates
    # than independent draws would make.
    pick = rng.permutation(n_source * copies)[:rows]
    source, copy = pick % n_source, pick // n_source
    first_day = rng.integers(0, n_days, size=n_source)
    target_day = target_start + (copy + first_day[source]) % n_days

    pickup_day = pool.pickup_day[source]
    shift = target_day - pickup_day
    early = pickup_day < pool.month_start[source]
    late = pickup_day >= pool.month_end[source]
    shift[early] = target_start - pool.month_start[source][early]
    shift[late] = target_end - pool.month_end[source][late]
    # Day by day like the TLC file; within a day, the real file's own order.
    order = np.lexsort((source, pickup_day + shift))
    return source[order], shift[order]


def _day_strings(first: int, last: int) -> np.ndarray:
    days = np.arange(first, last + 1).astype("datetime64[D]")
    return np.frombuffer(
        np.datetime_as_string(days).astype("S10").tobytes(), dtype=np.uint8
    ).reshape(-1, 10)


def write_month(
    pool: Pool, source: np.ndarray, shift: np.ndarray, out: Path, compresslevel: int = 6
) -> int:
    new_pickup = pool.pickup_day[source] + shift
    new_dropoff = pool.dropoff_day[source] + shift
    first = int(min(new_pickup.min(), new_dropoff.min()))
    table = _day_strings(first, int(max(new_pickup.max(), new_dropoff.max())))
    line_lengths = np.fromiter(map(len, pool.lines), dtype=np.int64, count=len(pool.lines))
    ten = np.arange(10)
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_bytes = 0
    with open(tmp, "wb") as handle:
        # filename="" and mtime=0: the gzip header carries neither, so the bytes depend only
        # on the arguments.
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=handle, compresslevel=compresslevel, mtime=0
        ) as gz:
            gz.write(pool.header + pool.eol)
            for begin in range(0, len(source), _CHUNK_ROWS):
                rows = source[begin : begin + _CHUNK_ROWS]
                picked = operator.itemgetter(*rows.tolist())(pool.lines)
                block = bytearray(b"".join(picked if len(rows) > 1 else (picked,)))
                view = np.frombuffer(block, dtype=np.uint8)
                lengths = line_lengths[rows]
                at = np.cumsum(lengths) - lengths + pool.date_offset[rows]
                view[at[:, None] + ten] = table[new_pickup[begin : begin + _CHUNK_ROWS] - first]
                view[(at + 20)[:, None] + ten] = table[
                    new_dropoff[begin : begin + _CHUNK_ROWS] - first
                ]
                gz.write(block)
                raw_bytes += len(block)
    os.replace(tmp, out)
    return raw_bytes


def generate(
    month: str,
    rows: int,
    out: Path,
    seed: int = 7,
    inputs: list[Path] | None = None,
    compresslevel: int = 6,
) -> dict:
    started = time.perf_counter()
    pool = load_pool([Path(p) for p in (inputs or DEFAULT_INPUTS)])
    source, shift = plan(pool, month, rows, seed)
    raw_bytes = write_month(pool, source, shift, Path(out), compresslevel)
    start, end = _month_days(month)
    new_pickup = pool.pickup_day[source] + shift
    return {
        "out": str(out),
        "rows": int(len(source)),
        "source_rows": len(pool.lines),
        "dropped_source_lines": pool.dropped,
        "outside_month": int(((new_pickup < start) | (new_pickup >= end)).sum()),
        "csv_bytes": raw_bytes + len(pool.header) + len(pool.eol),
        "gz_bytes": Path(out).stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--month", required=True, help="YYYY-MM")
    parser.add_argument("--rows", type=int, default=REAL_2021_01_ROWS)
    parser.add_argument("--out", type=Path, required=True, help="PATH.csv.gz")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--input",
        type=Path,
        action="append",
        help="a TLC yellow CSV (.csv or .csv.gz); repeat for several "
        "(default: the 2021-01 and 2020-01 samples in taxi_assets_tests/data)",
    )
    parser.add_argument("--compresslevel", type=int, default=6)
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d{4}-\d\d", args.month):
        parser.error("--month must look like 2021-01")
    summary = generate(args.month, args.rows, args.out, args.seed, args.input, args.compresslevel)
    print(" ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
