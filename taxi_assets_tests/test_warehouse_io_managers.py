"""The warehouse IO managers against a real BigQuery API (bqemulator) and a real DuckDB file.

Toy daily-partitioned assets stand in for the real warehouse asset: they return TLC trips with
the normalised (lowercase) column names, one day per partition.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.storage.bigquery_tables import bigquery_schema
from taxi_assets.defs.io_managers.duckdb import DuckDBWarehouseIOManager
from taxi_assets.tlc.schema import to_pandas

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

COLUMNS = [
    "vendorid",
    "tpep_pickup_datetime",
    "tpep_dropoff_datetime",
    "passenger_count",
    "trip_distance",
    "ratecodeid",
    "store_and_fwd_flag",
    "pulocationid",
    "dolocationid",
    "payment_type",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "total_amount",
    "congestion_surcharge",
]

days = dg.DailyPartitionsDefinition(start_date="2021-01-01", end_date="2021-02-01")


def trips(day: str, n: int, fare: float = 10.0) -> pd.DataFrame:
    """n trips picked up on `day`, one every two hours, TLC dtypes."""
    pickup = pd.date_range(f"{day} 00:30", periods=n, freq="2h")

    def ints(values):
        return pd.array(values, dtype="Int64")

    return pd.DataFrame(
        {
            "vendorid": ints([1 + i % 2 for i in range(n)]),
            "tpep_pickup_datetime": pickup,
            "tpep_dropoff_datetime": pickup + pd.Timedelta(minutes=15),
            "passenger_count": ints([None if i == 0 else 1 for i in range(n)]),
            "trip_distance": [1.5 + i for i in range(n)],
            "ratecodeid": ints([1] * n),
            "store_and_fwd_flag": ["N" if i % 2 else "Y" for i in range(n)],
            "pulocationid": ints([100 + i for i in range(n)]),
            "dolocationid": ints([200 + i for i in range(n)]),
            "payment_type": ints([1] * n),
            "fare_amount": [fare + i for i in range(n)],
            "extra": [0.5] * n,
            "mta_tax": [0.5] * n,
            "tip_amount": [0.0] * n,
            "tolls_amount": [0.0] * n,
            "improvement_surcharge": [0.3] * n,
            "total_amount": [fare + i + 1.3 for i in range(n)],
            "congestion_surcharge": [2.5] * n,
        }
    )[COLUMNS]


def arrow_backed(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as the pipeline hands frames on: Arrow-backed columns, microsecond datetime64."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    return to_pandas(
        table.cast(
            pa.schema(
                pa.field(f.name, pa.timestamp("us", f.type.tz))
                if pa.types.is_timestamp(f.type)
                else f
                for f in table.schema
            )
        )
    )


class ToyConfig(dg.Config):
    trips_per_day: int = 3
    fare: float = 10.0
    reverse_columns: bool = False  # the table must not care about column order
    stray_next_day_row: bool = False
    arrow_backed: bool = False


def _output(context: dg.AssetExecutionContext, config: ToyConfig) -> pd.DataFrame:
    window = context.partition_time_window
    frames = [
        trips(f"{day:%Y-%m-%d}", config.trips_per_day, config.fare)
        for day in pd.date_range(window.start, window.end, freq="D", inclusive="left")
    ]
    if config.stray_next_day_row:
        frames.append(trips(f"{window.end:%Y-%m-%d}", 1, config.fare))
    df = pd.concat(frames, ignore_index=True)
    if config.arrow_backed:
        df = arrow_backed(df)
    return df[list(reversed(COLUMNS))] if config.reverse_columns else df


@dg.asset(partitions_def=days, metadata={"partition_expr": "tpep_pickup_datetime"})
def yellow_trips(context: dg.AssetExecutionContext, config: ToyConfig) -> pd.DataFrame:
    return _output(context, config)


# The same table written by a backfill that runs a partition range in one run.
@dg.asset(
    name="yellow_trips",
    partitions_def=days,
    metadata={"partition_expr": "tpep_pickup_datetime"},
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def yellow_trips_single_run(context: dg.AssetExecutionContext, config: ToyConfig) -> pd.DataFrame:
    return _output(context, config)


@dg.asset(partitions_def=days, metadata={"partition_expr": "tpep_pickup_datetime"})
def trips_read_back(yellow_trips: pd.DataFrame) -> pd.DataFrame:
    return yellow_trips


# ---------------------------------------------------------------------------------------------


@dataclass
class Warehouse:
    name: str
    io_manager: dg.ConfigurableIOManagerFactory
    query: Callable[[str], pd.DataFrame]  # SQL with `{table}` for the toy table
    columns: Callable[[], list[str]]


@pytest.fixture(params=["bigquery", "duckdb"])
def warehouse(request, tmp_path: Path, monkeypatch) -> Iterator[Warehouse]:
    if request.param == "bigquery":
        emulator = request.getfixturevalue("bigquery_emulator")
        dataset = f"ny_taxi_{uuid.uuid4().hex[:8]}"  # one session-wide emulator; keep tests apart
        client = emulator.client()
        table = f"{emulator.project}.{dataset}.yellow_trips"
        # Wired as the gcp profile wires it.
        monkeypatch.setenv("TAXI_BQ_PROJECT", emulator.project)
        monkeypatch.setenv("TAXI_BQ_DATASET", dataset)
        monkeypatch.setenv("TAXI_BQ_ENDPOINT", emulator.endpoint)
        yield Warehouse(
            name="bigquery",
            io_manager=BigQueryWarehouseIOManager(
                project=dg.EnvVar("TAXI_BQ_PROJECT"),
                dataset=dg.EnvVar("TAXI_BQ_DATASET"),
                api_endpoint=dg.EnvVar("TAXI_BQ_ENDPOINT"),
            ),
            query=lambda sql: to_pandas(
                client.query(sql.format(table=f"`{table}`")).to_arrow(create_bqstorage_client=False)
            ),
            columns=lambda: [f.name for f in client.get_table(table).schema],
        )
        client.close()
    else:
        path = tmp_path / "warehouse.duckdb"

        def query(sql: str) -> pd.DataFrame:
            with duckdb.connect(str(path), read_only=True) as con:
                return con.execute(sql.format(table="ny_taxi.yellow_trips")).fetchdf()

        yield Warehouse(
            name="duckdb",
            io_manager=DuckDBWarehouseIOManager(database=str(path), schema="ny_taxi"),
            query=query,
            columns=lambda: query("select * from {table} limit 0").columns.tolist(),
        )


def materialize(
    warehouse: Warehouse, partition: str, asset=yellow_trips, raise_on_error=True, **config
) -> dg.ExecuteInProcessResult:
    if ":" in partition:  # "first:last", one run for the whole range
        first, last = partition.split(":")
        kwargs = {
            "tags": {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            }
        }
    else:
        kwargs = {"partition_key": partition}
    return dg.materialize(
        [asset],
        resources={"io_manager": warehouse.io_manager},
        run_config=dg.RunConfig({asset.key.to_user_string(): ToyConfig(**config)}),
        raise_on_error=raise_on_error,
        **kwargs,
    )


def rows_per_day(warehouse: Warehouse) -> dict[str, tuple[int, float]]:
    df = warehouse.query(
        "select cast(tpep_pickup_datetime as date) as day, count(*) as n, sum(fare_amount) as fares"
        " from {table} group by 1 order by 1"
    )
    return {
        str(pd.Timestamp(d).date()): (int(n), float(f)) for d, n, f in df.itertuples(index=False)
    }


def test_partition_materializes_with_lowercase_columns(warehouse: Warehouse):
    result = materialize(warehouse, "2021-01-05")

    assert warehouse.columns() == COLUMNS
    assert rows_per_day(warehouse) == {"2021-01-05": (3, 33.0)}
    materialization = result.asset_materializations_for_node("yellow_trips")[0]
    assert materialization.metadata["dagster/partition_row_count"].value == 3


def test_bigquery_table_is_day_partitioned_on_pickup(bigquery_emulator):
    dataset = f"ny_taxi_{uuid.uuid4().hex[:8]}"
    io_manager = BigQueryWarehouseIOManager(
        project=bigquery_emulator.project, dataset=dataset, api_endpoint=bigquery_emulator.endpoint
    )
    dg.materialize([yellow_trips], partition_key="2021-01-05", resources={"io_manager": io_manager})

    with bigquery_emulator.client() as client:
        table = client.get_table(f"{bigquery_emulator.project}.{dataset}.yellow_trips")
    assert table.time_partitioning.type_ == "DAY"
    assert table.time_partitioning.field == "tpep_pickup_datetime"
    types = {f.name: f.field_type for f in table.schema}
    assert types["tpep_pickup_datetime"] == "DATETIME"  # naive NYC wall-clock times stay naive
    assert types["vendorid"] in {"INTEGER", "INT64"}


@pytest.mark.parametrize(
    "column_type, to_column",
    [
        ("DATE", lambda pickup: pickup.dt.date),
        ("TIMESTAMP", lambda pickup: pickup.dt.tz_localize("UTC")),
    ],
)
def test_bigquery_partition_column_may_be_date_or_timestamp(
    bigquery_emulator, column_type, to_column
):
    @dg.asset(name="yellow_trips", partitions_def=days, metadata={"partition_expr": "pickup_key"})
    def keyed_trips(context: dg.AssetExecutionContext, config: ToyConfig) -> pd.DataFrame:
        df = trips(context.partition_key, config.trips_per_day)
        return df.assign(pickup_key=to_column(df["tpep_pickup_datetime"]))

    dataset = f"ny_taxi_{uuid.uuid4().hex[:8]}"
    io_manager = BigQueryWarehouseIOManager(
        project=bigquery_emulator.project, dataset=dataset, api_endpoint=bigquery_emulator.endpoint
    )
    for day, n in [("2021-01-05", 3), ("2021-01-06", 3), ("2021-01-05", 2)]:
        dg.materialize(
            [keyed_trips],
            partition_key=day,
            resources={"io_manager": io_manager},
            run_config=dg.RunConfig({"yellow_trips": ToyConfig(trips_per_day=n)}),
        )

    with bigquery_emulator.client() as client:
        table = f"{bigquery_emulator.project}.{dataset}.yellow_trips"
        assert {f.name: f.field_type for f in client.get_table(table).schema}[
            "pickup_key"
        ] == column_type
        counts = to_pandas(
            client.query(
                f"select cast(tpep_pickup_datetime as date) as day, count(*) as n from `{table}`"
                " group by 1 order by 1"
            ).to_arrow(create_bqstorage_client=False)
        )
    assert [(str(d), n) for d, n in counts.itertuples(index=False)] == [
        ("2021-01-05", 2),
        ("2021-01-06", 3),
    ]


def test_rerun_replaces_exactly_its_partition(warehouse: Warehouse):
    materialize(warehouse, "2021-01-05")
    materialize(warehouse, "2021-01-06")
    assert rows_per_day(warehouse) == {"2021-01-05": (3, 33.0), "2021-01-06": (3, 33.0)}

    # Fewer rows, other fares, columns in another order: only 2021-01-05 changes.
    materialize(warehouse, "2021-01-05", trips_per_day=2, fare=50.0, reverse_columns=True)

    assert rows_per_day(warehouse) == {"2021-01-05": (2, 101.0), "2021-01-06": (3, 33.0)}
    day5 = warehouse.query(
        "select * from {table} where fare_amount >= 50 order by tpep_pickup_datetime"
    )
    expected = trips("2021-01-05", 2, 50.0)
    assert day5["pulocationid"].tolist() == expected["pulocationid"].tolist()
    assert day5["total_amount"].tolist() == expected["total_amount"].tolist()
    assert day5["store_and_fwd_flag"].tolist() == expected["store_and_fwd_flag"].tolist()


def test_single_run_backfill_replaces_its_range(warehouse: Warehouse):
    materialize(warehouse, "2021-01-04", asset=yellow_trips_single_run)
    materialize(warehouse, "2021-01-05:2021-01-07", asset=yellow_trips_single_run)
    materialize(warehouse, "2021-01-05:2021-01-06", asset=yellow_trips_single_run, fare=20.0)

    assert rows_per_day(warehouse) == {
        "2021-01-04": (3, 33.0),
        "2021-01-05": (3, 63.0),
        "2021-01-06": (3, 63.0),
        "2021-01-07": (3, 33.0),
    }


def test_reads_a_partition_back_through_the_io_manager(warehouse: Warehouse):
    materialize(warehouse, "2021-01-05")
    materialize(warehouse, "2021-01-06", fare=20.0)

    result = dg.materialize(
        [yellow_trips.to_source_asset(), trips_read_back],
        partition_key="2021-01-06",
        resources={"io_manager": warehouse.io_manager},
    )

    read = result.output_for_node("trips_read_back")
    assert list(read.columns) == COLUMNS
    read = read.sort_values("tpep_pickup_datetime", ignore_index=True)
    # Arrow-backed, as the rest of the pipeline reads, with the NULL passenger_count kept; the
    # datetimes numpy, at the table's precision (DuckDB kept the toy frame's nanoseconds).
    assert read["vendorid"].dtype == pd.ArrowDtype(pa.int64())
    assert read["tpep_pickup_datetime"].dtype.kind == "M"
    in_us = {column: "datetime64[us]" for column in COLUMNS if "datetime" in column}
    pd.testing.assert_frame_equal(read.astype(in_us), arrow_backed(trips("2021-01-06", 3, 20.0)))


def test_bigquery_schema_is_the_same_for_numpy_and_arrow_backed_frames():
    numpy_backed = trips("2021-01-05", 3)
    ints = [
        "vendorid",
        "passenger_count",
        "ratecodeid",
        "pulocationid",
        "dolocationid",
        "payment_type",
    ]
    expected = {
        **{c: "INT64" for c in ints},
        "tpep_pickup_datetime": "DATETIME",
        "tpep_dropoff_datetime": "DATETIME",
        "store_and_fwd_flag": "STRING",
        **{c: "FLOAT64" for c in ["trip_distance", *COLUMNS[COLUMNS.index("fare_amount") :]]},
    }

    for frame in [numpy_backed, arrow_backed(numpy_backed)]:
        schema = bigquery_schema(frame)
        assert [f.name for f in schema] == COLUMNS
        assert {f.name: f.field_type for f in schema} == expected

    # Arrow-backed columns pandas' own dtypes don't produce.
    other = pd.DataFrame(
        {
            "flag": pd.array(["Y", "N"], dtype=pd.ArrowDtype(pa.string_view())),
            "zone": pd.Series(
                pa.array(["a", "b"]).dictionary_encode(),
                dtype=pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())),
            ),
            "day": pd.array(
                [pd.Timestamp("2021-01-05").date()] * 2, dtype=pd.ArrowDtype(pa.date32())
            ),
            "at": pd.array(
                [pd.Timestamp("2021-01-05", tz="UTC")] * 2,
                dtype=pd.ArrowDtype(pa.timestamp("us", "UTC")),
            ),
            "ok": pd.array([True, None], dtype=pd.ArrowDtype(pa.bool_())),
        }
    )
    assert {f.name: f.field_type for f in bigquery_schema(other)} == {
        "flag": "STRING",
        "zone": "STRING",
        "day": "DATE",
        "at": "TIMESTAMP",
        "ok": "BOOL",
    }


def test_arrow_backed_and_numpy_backed_partitions_share_a_table(warehouse: Warehouse):
    materialize(warehouse, "2021-01-05", arrow_backed=True)
    materialize(warehouse, "2021-01-06")  # the other kind into the table the first one made
    materialize(warehouse, "2021-01-05", arrow_backed=True, fare=50.0, reverse_columns=True)

    assert warehouse.columns() == COLUMNS
    assert rows_per_day(warehouse) == {"2021-01-05": (3, 153.0), "2021-01-06": (3, 33.0)}
    day5 = warehouse.query("select * from {table} where fare_amount >= 50")
    day5 = day5.sort_values("tpep_pickup_datetime", ignore_index=True)
    expected = trips("2021-01-05", 3, 50.0)
    assert day5["tpep_pickup_datetime"].tolist() == expected["tpep_pickup_datetime"].tolist()
    assert day5["passenger_count"].isna().tolist() == [True, False, False]
    assert day5["store_and_fwd_flag"].tolist() == expected["store_and_fwd_flag"].tolist()


def test_rows_outside_the_partition_are_refused_before_anything_is_deleted(warehouse: Warehouse):
    materialize(warehouse, "2021-01-05")

    result = materialize(warehouse, "2021-01-05", stray_next_day_row=True, raise_on_error=False)

    assert not result.success
    message = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "outside the partition window" in message
    assert rows_per_day(warehouse) == {"2021-01-05": (3, 33.0)}


def test_duckdb_failed_write_keeps_the_partitions_rows(tmp_path: Path):
    io_manager = DuckDBWarehouseIOManager(database=str(tmp_path / "w.duckdb"), schema="ny_taxi")
    dg.materialize([yellow_trips], partition_key="2021-01-05", resources={"io_manager": io_manager})

    # A real write failure: a value DuckDB can't cast into the table's BIGINT column.
    @dg.asset(
        name="yellow_trips",
        partitions_def=days,
        metadata={"partition_expr": "tpep_pickup_datetime"},
    )
    def bad_trips() -> pd.DataFrame:
        df = trips("2021-01-05", 2).astype({"vendorid": object})
        df.loc[0, "vendorid"] = "not a number"
        return df

    result = dg.materialize(
        [bad_trips],
        partition_key="2021-01-05",
        resources={"io_manager": io_manager},
        raise_on_error=False,
    )

    assert not result.success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from ny_taxi.yellow_trips").fetchone()[0] == 3
