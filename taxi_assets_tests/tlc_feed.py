"""The TLC's Parquet feed on loopback: one file per schema era, built from real rows.

No real TLC Parquet file is small enough to ship, so each era's file is generated here from
the real January 2020 sample (999 rows, 500 of them with no vendor or passenger count), laid
out and typed as that era's footers are (see README "Eras"): the rows are real, their times
are moved into the era's month, and only the 2010 layout's coordinates and name columns are
derived (from the zone ids and codes, since the sample has no coordinates).

The server answers as CloudFront does for `trip-data/`: ETag and Last-Modified on HEAD and
GET, 403 (not 404) for a file it does not have, and 403 for everything while throttling; it
also serves the known-published `misc/taxi_zone_lookup.csv`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import http.server
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from taxi_assets_tests.conftest import sample

REAL_ROWS = "yellow_tripdata_2020-01.csv.gz"
SAMPLE_MONTH = dt.datetime(2020, 1, 1)


def real_rows() -> pa.Table:
    """The real sample, read by pyarrow's own inference (not the pipeline's reader)."""
    return pa_csv.read_csv(sample(REAL_ROWS))


def moved_to(table: pa.Table, month: str) -> pa.Table:
    shift = dt.datetime.fromisoformat(f"{month}-01") - SAMPLE_MONTH
    for name in ("tpep_pickup_datetime", "tpep_dropoff_datetime"):
        moved = pc.add(table[name].cast(pa.timestamp("us")), pa.scalar(shift, pa.duration("us")))
        table = table.set_column(table.schema.get_field_index(name), name, moved)
    return table


def retyped(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    for name, type_ in types.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table[name].cast(type_))
    return table


def _renamed(table: pa.Table, names: dict[str, str]) -> pa.Table:
    return table.rename_columns([names.get(n, n) for n in table.column_names])


def _with(table: pa.Table, name: str, values) -> pa.Table:
    return table.append_column(name, values)


def era_2011(month: str) -> pa.Table:
    """2011-01..2018-06: 19 columns, ids int64, both fees Null-typed."""
    table = moved_to(real_rows(), month)
    table = table.set_column(
        table.schema.get_field_index("congestion_surcharge"),
        "congestion_surcharge",
        pa.nulls(table.num_rows, pa.null()),
    )
    return _with(table, "airport_fee", pa.nulls(table.num_rows, pa.null()))


def era_2018(month: str) -> pa.Table:
    """2018-07..2023-01: passenger_count and RatecodeID double; airport_fee Null-typed."""
    table = retyped(
        moved_to(real_rows(), month), {"passenger_count": pa.float64(), "RatecodeID": pa.float64()}
    )
    return _with(table, "airport_fee", pa.nulls(table.num_rows, pa.null()))


def era_2021(month: str) -> pa.Table:
    """2020-08..2023-01 but 2020-10: as 2018-07's, with airport_fee double."""
    table = retyped(
        moved_to(real_rows(), month), {"passenger_count": pa.float64(), "RatecodeID": pa.float64()}
    )
    fee = pc.if_else(pc.equal(table["PULocationID"], 132), 1.25, 0.0)
    return _with(table, "airport_fee", fee)


def era_2023(month: str) -> pa.Table:
    """2023-02..2024-12: `Airport_fee`, ids int32, counts int64, large_string flags."""
    table = retyped(
        moved_to(real_rows(), month),
        {
            "VendorID": pa.int32(),
            "PULocationID": pa.int32(),
            "DOLocationID": pa.int32(),
            "store_and_fwd_flag": pa.large_string(),
        },
    )
    fee = pc.if_else(pc.equal(table["PULocationID"], 132), 1.75, 0.0)
    return _with(table, "Airport_fee", fee)


def era_2025(month: str) -> pa.Table:
    """2025-01 on: 2023's layout plus `cbd_congestion_fee`, 20 columns."""
    table = era_2023(month)
    fee = pc.if_else(pc.less_equal(table["PULocationID"], 164), 0.75, 0.0)
    return _with(table, "cbd_congestion_fee", fee)


def with_unknown_column(month: str) -> pa.Table:
    """A month that brings a column no contract knows yet, as cbd_congestion_fee once did."""
    table = era_2025(month)
    return _with(table, "green_levy", pc.multiply(table["trip_distance"], 0.1))


def era_2010(month: str) -> pa.Table:
    """2010: other names, datetimes as strings, vendor and payment names, coordinates."""
    table = moved_to(real_rows(), month)
    vendor = pc.if_else(pc.equal(table["VendorID"], 1), "CMT", "VTS")
    payment = pc.if_else(pc.equal(table["payment_type"], 1), "Credit", "CASH")

    # Derived, not real: the sample has zone ids, and 2010 had coordinates instead.
    def lon(zone):
        return pc.add(pc.multiply(table[zone].cast(pa.float64()), 0.0001), -74.0)

    def lat(zone):
        return pc.add(pc.multiply(table[zone].cast(pa.float64()), 0.0001), 40.7)

    stamp = "%Y-%m-%d %H:%M:%S"
    return pa.table(
        {
            "vendor_id": pc.if_else(
                pc.is_null(table["VendorID"]), pa.scalar(None, pa.string()), vendor
            ),
            "pickup_datetime": pc.strftime(
                table["tpep_pickup_datetime"].cast(pa.timestamp("s")), stamp
            ),
            "dropoff_datetime": pc.strftime(
                table["tpep_dropoff_datetime"].cast(pa.timestamp("s")), stamp
            ),
            "passenger_count": table["passenger_count"],
            "trip_distance": table["trip_distance"],
            "pickup_longitude": lon("PULocationID"),
            "pickup_latitude": lat("PULocationID"),
            "rate_code": table["RatecodeID"],
            "store_and_fwd_flag": table["store_and_fwd_flag"],
            "dropoff_longitude": lon("DOLocationID"),
            "dropoff_latitude": lat("DOLocationID"),
            "payment_type": pc.if_else(
                pc.is_null(table["payment_type"]), pa.scalar(None, pa.string()), payment
            ),
            "fare_amount": table["fare_amount"],
            "surcharge": table["extra"],
            "mta_tax": table["mta_tax"],
            "tip_amount": table["tip_amount"],
            "tolls_amount": table["tolls_amount"],
            "total_amount": table["total_amount"],
        }
    )


_NAMES_2009 = {
    "vendor_id": "vendor_name",
    "pickup_datetime": "Trip_Pickup_DateTime",
    "dropoff_datetime": "Trip_Dropoff_DateTime",
    "passenger_count": "Passenger_Count",
    "trip_distance": "Trip_Distance",
    "pickup_longitude": "Start_Lon",
    "pickup_latitude": "Start_Lat",
    "rate_code": "Rate_Code",
    "store_and_fwd_flag": "store_and_forward",
    "dropoff_longitude": "End_Lon",
    "dropoff_latitude": "End_Lat",
    "payment_type": "Payment_Type",
    "fare_amount": "Fare_Amt",
    "tip_amount": "Tip_Amt",
    "tolls_amount": "Tolls_Amt",
    "total_amount": "Total_Amt",
}


def era_2009(month: str) -> pa.Table:
    """2009: 2010's columns under 2009's names; rate code and flag as (mostly null) doubles."""
    table = _renamed(era_2010(month), _NAMES_2009)
    table = retyped(table, {"Rate_Code": pa.float64()})
    flag = table.schema.get_field_index("store_and_forward")
    return table.set_column(flag, "store_and_forward", pa.nulls(table.num_rows, pa.float64()))


# One month of each era, as the feed would have it.
ERAS = {
    "2015-03": era_2011,
    "2019-03": era_2018,
    "2021-03": era_2021,
    "2023-05": era_2023,
    "2025-01": era_2025,
    "2026-03": with_unknown_column,
    "2010-05": era_2010,
    "2009-05": era_2009,
}


@dataclass
class TlcFeed:
    root: Path
    url: str = ""  # the feed's base, as TAXI_SOURCE_URL: http://127.0.0.1:port/trip-data
    requests: list[str] = field(default_factory=list)
    throttled: bool = False  # 403 for every request, the probe object's too
    send_etag: bool = True

    def path(self, month: str, dataset: str = "yellow") -> Path:
        return self.root / "trip-data" / f"{dataset}_tripdata_{month}.parquet"

    def publish(self, month: str, table: pa.Table | None = None, dataset: str = "yellow") -> Path:
        """Publish (or re-upload) the month's file: the yellow era's by default."""
        path = self.path(month, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table if table is not None else ERAS[month](month), path)
        return path

    def reupload(self, month: str, table: pa.Table, dataset: str = "yellow") -> None:
        before = self.path(month, dataset).stat().st_mtime
        self.publish(month, table, dataset)
        # Last-Modified has whole seconds: make sure a re-upload shows in it too.
        time.sleep(max(0.0, before + 1.01 - time.time()))
        self.path(month, dataset).touch()

    def clear(self) -> None:
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path.is_file():
                path.unlink()
        (self.root / "misc").mkdir(exist_ok=True)
        (self.root / "misc" / "taxi_zone_lookup.csv").write_bytes(
            b'"LocationID","Borough","Zone","service_zone"\n1,"EWR","Newark Airport","EWR"\n'
        )
        self.requests.clear()
        self.throttled, self.send_etag = False, True


def _handler(feed: TlcFeed):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, with_body: bool):
            feed.requests.append(f"{self.command} {self.path}")
            path = (feed.root / self.path.lstrip("/")).resolve()
            if feed.throttled or not path.is_file() or feed.root not in path.parents:
                self.send_response(403)  # CloudFront over S3: 403, not 404
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header(
                "Last-Modified", email.utils.formatdate(path.stat().st_mtime, usegmt=True)
            )
            if feed.send_etag:
                self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(with_body=False)

        def do_GET(self):
            self._answer(with_body=True)

    return Handler


def start_feed(root: Path):
    feed = TlcFeed(root=root.resolve())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(feed))
    feed.url = f"http://127.0.0.1:{server.server_address[1]}/trip-data"
    feed.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return feed, server
