"""The trip datasets: what each TLC trip file series is, declared once.

A `TripDataset` says everything that differs between yellow and green taxi trips: the files'
names, the pickup and dropoff columns, the column contract and its eras, the cleaning rule,
which checks block, and the names of its table, lake objects and warehouse table. From it
defs/trips.py builds the dataset's assets, checks, jobs, schedules and sensors; adding a
series (fhv, say) is one more definition here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import dagster as dg


@dataclass(frozen=True)
class DropRule:
    """The cleaning drops the trips whose `column` is not above zero, and the blocking check
    `check_name` sees that none reached a sink; `count_key` is the metadata key of how many went.

    Missing values go too: a trip with no recorded riders (or distance) cannot pass for one.
    A file without the column fails before it is read: it would otherwise lose every trip.
    """

    column: str  # the contract's name
    count_key: str
    check_name: str

    @property
    def what(self) -> str:
        return f"zero, negative or missing {self.column}"

    def matches(self, trips: pa.RecordBatch, column: str) -> pa.BooleanArray:
        """Which rows go; `column` is what `trips` calls the rule's column."""
        return pc.fill_null(pc.less_equal(trips.column(column), 0), True)


ZERO_PASSENGERS = DropRule(
    "passenger_count", "dropped_zero_or_missing_passengers", "no_zero_passenger_trips"
)
ZERO_DISTANCE = DropRule(
    "trip_distance", "dropped_zero_or_missing_distance", "no_zero_distance_trips"
)


@dataclass(frozen=True)
class LegacyLayout:
    """A dataset's oldest layouts, whose names and codes differ from the contract's.

    A file is taken for one when it has an `extra_names` column, which no later layout has.
    `names` maps a legacy name to the contract's; `extra_names` are kept as new columns under
    the given name; `named_codes` are legacy columns holding names where the contract holds
    codes ("CASH" for 2), kept, lower-cased, under a name that is not the contract's.
    """

    names: Mapping[str, str]
    extra_names: Mapping[str, str]
    named_codes: Mapping[str, str]


# Every dataset declared in this process, shipped or not, by name (see `dataset_named`).
_DECLARED: dict[str, TripDataset] = {}


@dataclass(frozen=True)
class TripDataset:
    name: str  # "yellow": asset keys, jobs and groups are named after it
    title: str  # "yellow taxi", for messages
    file_prefix: str  # "yellow_tripdata": the source's file is `{prefix}_{YYYY-MM}.…`
    pickup: str
    dropoff: str
    # The CSV files' header, in their order, with the tutorial's types: the contract.
    csv_columns: Mapping[str, pa.DataType]
    # Columns the Parquet files added since; every file is mapped to contract + these.
    later_columns: Mapping[str, pa.DataType]
    drop_rules: tuple[DropRule, ...]
    # The ids the `VendorID` column may hold; empty: the dataset has no vendor to check.
    known_vendor_ids: frozenset[int]
    # Whether an unknown vendor blocks the sinks or only warns.
    vendor_check_blocks: bool
    postgres_table: str  # "schema.table"
    lake_name: str  # the monthly objects' folder and the daily exports' file name
    lake_by_day_name: str  # the day-partitioned dataset's folder
    warehouse_table: str  # "dataset.table"
    daily_schedule_hour: int  # UTC
    # The names the cleaned trips (and so every sink) give the contract's columns.
    renamed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Whether the Postgres table adds the pickup's date (`pickup_date`) as a column.
    postgres_has_pickup_date: bool = False
    legacy: LegacyLayout | None = None

    def __post_init__(self) -> None:
        # A staged raw month names its dataset; reading it back finds the definition here.
        _DECLARED[self.name] = self

    @property
    def canonical_columns(self) -> dict[str, pa.DataType]:
        return {**self.csv_columns, **self.later_columns}

    @property
    def csv_schema(self) -> pa.Schema:
        return pa.schema(self.csv_columns.items())

    @property
    def required_columns(self) -> list[str]:
        """What a file must have, or it is another series' or cannot be cleaned."""
        return [self.pickup, self.dropoff, *(rule.column for rule in self.drop_rules)]

    @property
    def pickup_date(self) -> str:
        """The pickup's date, by name: the by-day folders' key (`tpep_pickup_date=2021-01-01`)
        and, where the dataset adds it, a Postgres column."""
        return self.pickup.removesuffix("_datetime") + "_date"

    def column(self, name: str) -> str:
        """What the cleaned trips call the contract's column `name`."""
        return self.renamed.get(name, name)

    def file_name(self, month: str, suffix: str) -> str:
        return f"{self.file_prefix}_{month}{suffix}"

    # Asset keys and names, one rule for every dataset.
    @property
    def raw_asset(self) -> str:
        return f"raw_{self.name}_trips"

    @property
    def cleaned_asset(self) -> str:
        # Not `yellow_trips`: the graph labels an asset by its key's last part, and that is
        # the warehouse table's (`ny_taxi/yellow_trips`).
        return f"cleaned_{self.name}_trips"

    @property
    def former_cleaned_asset(self) -> str:
        """The cleaned trips' key before they were named apart from the warehouse table. Their
        staging folder keeps it, and an instance from then holds their history under it."""
        return f"{self.name}_trips"

    @property
    def postgres_asset(self) -> dg.AssetKey:
        # Imported here: the TLC file readers (tlc/) read these declarations and load no Dagster.
        import dagster as dg

        return dg.AssetKey(self.postgres_table.split("."))

    @property
    def lake_month_asset(self) -> str:
        return f"{self.name}_trips_parquet"

    @property
    def lake_by_day_asset(self) -> str:
        return f"{self.name}_trips_by_day"

    @property
    def lake_export_asset(self) -> str:
        return f"{self.name}_trips_daily_export"

    @property
    def warehouse_asset(self) -> dg.AssetKey:
        import dagster as dg

        return dg.AssetKey(self.warehouse_table.split("."))

    @property
    def sink_assets(self) -> list[str]:
        """Its assets that write a sink (the raw and cleaned trips are staging), as the UI
        spells them."""
        return [
            self.postgres_asset.to_user_string(),
            self.lake_month_asset,
            self.lake_by_day_asset,
            self.lake_export_asset,
            self.warehouse_asset.to_user_string(),
        ]

    def group(self, stage: str) -> str:
        return f"{self.name}_{stage}"

    @property
    def monthly_job(self) -> str:
        return f"monthly_{self.name}_trips"

    @property
    def daily_job(self) -> str:
        return f"daily_{self.name}_trips"


def snake_case(name: str) -> str:
    """`VendorID` → `vendor_id`, `PULocationID` → `pu_location_id`, `RatecodeID` →
    `ratecode_id`."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", spaced)
    return spaced.lower()


def _snake_cased(names: Iterable[str]) -> Mapping[str, str]:
    return MappingProxyType({n: snake_case(n) for n in names if snake_case(n) != n})


_FARES = {
    "fare_amount": pa.float64(),
    "extra": pa.float64(),
    "mta_tax": pa.float64(),
    "tip_amount": pa.float64(),
    "tolls_amount": pa.float64(),
}

YELLOW = TripDataset(
    name="yellow",
    title="yellow taxi",
    file_prefix="yellow_tripdata",
    pickup="tpep_pickup_datetime",
    dropoff="tpep_dropoff_datetime",
    csv_columns=MappingProxyType(
        {
            "VendorID": pa.int64(),
            "tpep_pickup_datetime": pa.timestamp("us"),
            "tpep_dropoff_datetime": pa.timestamp("us"),
            "passenger_count": pa.int64(),
            "trip_distance": pa.float64(),
            "RatecodeID": pa.int64(),
            "store_and_fwd_flag": pa.string(),
            "PULocationID": pa.int64(),
            "DOLocationID": pa.int64(),
            "payment_type": pa.int64(),
            **_FARES,
            "improvement_surcharge": pa.float64(),
            "total_amount": pa.float64(),
            "congestion_surcharge": pa.float64(),
        }
    ),
    later_columns=MappingProxyType(
        {"airport_fee": pa.float64(), "cbd_congestion_fee": pa.float64()}
    ),
    drop_rules=(ZERO_PASSENGERS,),
    known_vendor_ids=frozenset({1, 2, 4, 5, 6, 7}),  # the data dictionary's, over the years
    # Real yellow files carry new vendors before the dictionary names them: worth loading.
    vendor_check_blocks=False,
    postgres_table="ny_taxi.yellow_cab_data",
    lake_name="nyc_taxi_data",
    lake_by_day_name="nyc_taxi_data_by_day",
    warehouse_table="ny_taxi.yellow_trips",
    daily_schedule_hour=7,
    legacy=LegacyLayout(
        names=MappingProxyType(
            {
                # 2009
                "trip_pickup_datetime": "tpep_pickup_datetime",
                "trip_dropoff_datetime": "tpep_dropoff_datetime",
                "rate_code": "RatecodeID",
                "store_and_forward": "store_and_fwd_flag",
                "fare_amt": "fare_amount",
                "surcharge": "extra",
                "tip_amt": "tip_amount",
                "tolls_amt": "tolls_amount",
                "total_amt": "total_amount",
                # 2010
                "pickup_datetime": "tpep_pickup_datetime",
                "dropoff_datetime": "tpep_dropoff_datetime",
            }
        ),
        # The vendor's name ("CMT"), where later files hold a code the names cannot be turned
        # into without inventing it, and the coordinates, which later files replaced with
        # zone ids (those stay null).
        extra_names=MappingProxyType(
            {
                "vendor_name": "vendor_name",
                "vendor_id": "vendor_name",  # 2010: the same names, under 2010's column name
                "start_lon": "pickup_longitude",
                "start_lat": "pickup_latitude",
                "end_lon": "dropoff_longitude",
                "end_lat": "dropoff_latitude",
            }
        ),
        # Not the canonical names even case-insensitively: the warehouse lower-cases names.
        named_codes=MappingProxyType(
            {
                "payment_type": "payment_method",
                "rate_code": "rate_code_name",
                "store_and_forward": "store_and_forward_flag",
            }
        ),
    ),
)

_GREEN_CSV = {
    "VendorID": pa.int64(),
    "lpep_pickup_datetime": pa.timestamp("us"),
    "lpep_dropoff_datetime": pa.timestamp("us"),
    "store_and_fwd_flag": pa.string(),
    "RatecodeID": pa.int64(),
    "PULocationID": pa.int64(),
    "DOLocationID": pa.int64(),
    "passenger_count": pa.int64(),
    "trip_distance": pa.float64(),
    **_FARES,
    "ehail_fee": pa.float64(),
    "improvement_surcharge": pa.float64(),
    "total_amount": pa.float64(),
    "payment_type": pa.int64(),
    "trip_type": pa.int64(),
    "congestion_surcharge": pa.float64(),
}

GREEN = TripDataset(
    name="green",
    title="green taxi",
    file_prefix="green_tripdata",
    pickup="lpep_pickup_datetime",
    dropoff="lpep_dropoff_datetime",
    csv_columns=MappingProxyType(_GREEN_CSV),
    later_columns=MappingProxyType({"cbd_congestion_fee": pa.float64()}),
    drop_rules=(ZERO_PASSENGERS, ZERO_DISTANCE),
    # 1 Creative Mobile Technologies, 2 Curb Mobility (VeriFone), 6 Myle Technologies.
    known_vendor_ids=frozenset({1, 2, 6}),
    vendor_check_blocks=True,
    postgres_table="ny_taxi.green_taxi",
    lake_name="green_taxi_data",
    lake_by_day_name="green_taxi_data_by_day",
    warehouse_table="ny_taxi.green_trips",
    daily_schedule_hour=5,
    renamed=_snake_cased([*_GREEN_CSV, "cbd_congestion_fee"]),
    postgres_has_pickup_date=True,
)

DATASETS: dict[str, TripDataset] = {dataset.name: dataset for dataset in (YELLOW, GREEN)}


def dataset_named(name: str) -> TripDataset:
    """The dataset declared under `name` in this process: a shipped one, or one a project
    declares beside them."""
    if name not in _DECLARED:
        raise ValueError(f"no trip dataset is named {name!r}; declared: {', '.join(_DECLARED)}")
    return _DECLARED[name]


def foreign_columns(dataset: TripDataset, names: Iterable[str]) -> dict[str, list[str]]:
    """The columns among `names` that only another dataset has, by that dataset's title:
    what a file of another series, served under this one's name, gives itself away by."""
    own = {name.lower() for name in dataset.canonical_columns}
    found: dict[str, list[str]] = {}
    for other in DATASETS.values():
        if other is dataset:
            continue
        theirs = {name.lower() for name in other.canonical_columns} - own
        matching = [name for name in names if name.lower() in theirs]
        if matching:
            found[other.title] = matching
    return found
