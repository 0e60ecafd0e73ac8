"""Column names from a source file are data: they load under a name every sink holds, or the
month fails before any sink, naming the column and the rule — whatever bytes they are made of.

The names are generated (hypothesis): quotes, semicolons, comments, Unicode, 64–300 bytes,
names equal ignoring case or equal once cut at PostgreSQL's 63 bytes, names the project adds.
"""

from __future__ import annotations

import hashlib
import re

import adbc_driver_postgresql.dbapi as adbc
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taxi_assets.datasets import GREEN, YELLOW
from taxi_assets.storage.duckdb_tables import quoted as duckdb_quoted
from taxi_assets.storage.postgres_swap import quote as postgres_quoted
from taxi_assets.defs.resources import LakeResource
from taxi_assets.tlc.schema import TripFileError
from taxi_assets.tlc.schema_mapping import plan_mapping
from taxi_assets_tests.pipeline import (
    POSTGRES_TABLE,
    materialize,
    materialize_days,
    pipeline_resources,
    query,
)
from taxi_assets_tests.test_faults import failure_message, sink_state
from taxi_assets_tests.test_warehouse_assets import BigQueryWarehouse, DuckDBWarehouse
from taxi_assets_tests.tlc_feed import era_2025

pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

# What the test takes for a name every sink holds as it is, independently of the code's rule.
SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PROJECT_ADDED = {"source_month", YELLOW.pickup_date}

INJECTIONS = [
    'x" integer; delete from ny_taxi.yellow_trips; --',
    "x` INT64; DROP TABLE ny_taxi.yellow_trips; --",
    "x'); DROP TABLE ny_taxi.yellow_cab_data; --",
    "fee /* comment */",
    "fee -- comment",
    "a;b",
    'with "quotes"',
    "tarifa_ñ",
    "费用",
    "emoji_🚕",
    "new\nline",
    "nul\x00byte",
    " ",
    "",
    "1st_column",
    "source_month",
    "SOURCE_MONTH",
    "tpep_pickup_date",
    "xmin",
    "ctid",
    "_TABLE_suffix",
    "_PARTITIONTIME",
]

hostile_names = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(min_size=0, max_size=40),
    st.text(alphabet="\"'`;-/*\\ \t$", min_size=1, max_size=12),
    st.integers(64, 300).map(lambda n: "c" * n),
    st.text(alphabet="ab_é", min_size=64, max_size=300),
    st.from_regex(SAFE, fullmatch=True),
)


@st.composite
def extra_columns(draw) -> list[str]:
    """New columns for one file, with collisions among them made on purpose."""
    names = draw(st.lists(hostile_names, min_size=1, max_size=6))
    collide = draw(st.sampled_from(["none", "case", "cut"]))
    if collide == "case":
        names.append(names[0].swapcase())
    elif collide == "cut":
        names += ["t" * 63 + "_one", "t" * 63 + "_two"]
    return names


def is_safe(name: str, taken: set[str]) -> bool:
    return (
        SAFE.fullmatch(name) is not None
        and len(name.encode()) <= 63
        and name.lower() not in taken
        and name.lower() not in PROJECT_ADDED
        and name.lower() not in {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"}
        and not name.lower().startswith(("_table_", "_file_", "_partition", "_row_timestamp"))
    )


CONTRACT = pa.schema(YELLOW.canonical_columns.items())


@settings(max_examples=400, deadline=None, database=None)
@given(extra_columns())
def test_a_file_is_planned_only_when_every_new_name_fits_every_sink(names):
    schema = pa.schema([*CONTRACT, *(pa.field(name, pa.float64()) for name in names)])
    taken = {name.lower() for name in CONTRACT.names}
    all_safe = True
    for name in names:
        all_safe &= is_safe(name, taken)
        taken.add(name.lower())
    try:
        plan = plan_mapping("hostile.parquet", schema, YELLOW)
    except TripFileError as error:
        assert not all_safe, f"refused names every sink holds: {names}: {error}"
        message = str(error)
        assert "Rule:" in message
        assert any(repr(name) in message for name in names), message
        return
    assert all_safe, f"accepted {names}"
    assert list(plan.new_columns) == names


def test_a_green_file_may_not_bring_a_name_green_gives_a_contract_column():
    schema = pa.schema(
        [*pa.schema(GREEN.canonical_columns.items()), pa.field("vendor_id", pa.int64())]
    )
    with pytest.raises(TripFileError, match="'vendor_id' cannot be loaded: the project adds"):
        plan_mapping("green.parquet", schema, GREEN)


# --- each dialect's quoting: any bytes in, the same name out ---------------------------------

quotable = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, database=None)
@given(quotable.filter(lambda n: n.lower() != "kept"))
def test_duckdb_quoting_keeps_any_name_as_data(name):
    with duckdb.connect() as connection:
        connection.execute("create table t (kept integer)")
        connection.execute("insert into t values (1)")
        connection.execute(f"alter table t add column {duckdb_quoted(name)} double")
        assert [
            c for (c,) in connection.execute("select name from pragma_table_info('t')").fetchall()
        ] == [
            "kept",
            name,
        ]
        assert connection.execute("select count(*) from t").fetchone() == (1,)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=quotable.filter(lambda n: len(n.encode()) <= 63 and n != "k"))
def test_postgres_quoting_keeps_any_name_as_data(fresh_postgres, name):
    # Through ADBC, the IO manager's driver: the statement goes to the server as written.
    with adbc.connect(fresh_postgres.uri) as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS public.quoting")
        cursor.execute("CREATE TABLE public.quoting (k int)")
        cursor.execute(f"ALTER TABLE public.quoting ADD COLUMN {postgres_quoted(name)} float8")
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.quoting'::regclass "
            "AND attnum > 0 ORDER BY attnum"
        )
        assert cursor.fetchall() == [("k",), (name,)]
        connection.commit()


# --- the pipeline: every sink, both profiles --------------------------------------------------

# Names any SQL dialect would misread unquoted, and the longest PostgreSQL keeps whole.
KEYWORD_NAMES = ["select", "From", "order_", "drop", "x" * 63]
HOSTILE_FILE_NAMES = [name for name in INJECTIONS if name] + [
    "c" * 64,
    "é" * 150,
    "t" * 63 + "_one",
    "t" * 63 + "_two",
    "Levy",
    "levy",
]


def with_columns(table: pa.Table, names: list[str]) -> pa.Table:
    base = pc.multiply(table["trip_distance"], 0.5)
    for name in names:
        table = table.append_column(pa.field(name, pa.float64()), base)
    return table


@pytest.fixture(params=["local", "gcp"])
def sinks(request, tmp_path, gcs_emulator):
    """A lake and a warehouse of the profile: a directory and DuckDB, or their GCP emulators."""
    if request.param == "local":
        return LakeResource(root=str(tmp_path / "lake")), DuckDBWarehouse(tmp_path / "wh.duckdb")
    lake = LakeResource(
        root=f"gs://{gcs_emulator.bucket}/{request.node.name}", endpoint=gcs_emulator.url
    )
    return lake, BigQueryWarehouse(request.getfixturevalue("bigquery_emulator"))


def lake_objects(lake: LakeResource) -> dict[str, str]:
    fs = lake.filesystem()
    found = fs.get_file_info(pafs.FileSelector("", recursive=True, allow_not_found=True))
    return {
        info.path: hashlib.sha256(fs.open_input_file(info.path).read()).hexdigest()
        for info in found
        if info.type == pafs.FileType.File
    }


def every_sink(postgres, lake, warehouse) -> tuple:
    return (
        sink_state(postgres),
        lake_objects(lake),
        sorted(map(repr, warehouse.rows("SELECT * FROM ny_taxi.yellow_trips"))),
    )


def test_hostile_names_load_under_their_own_name_or_fail_before_any_sink(
    tmp_path, feed, fresh_postgres, sinks
):
    lake, warehouse = sinks
    resources = pipeline_resources(
        tmp_path,
        feed.url,
        fresh_postgres,
        lake=lake,
        warehouse_io_manager=warehouse.io_manager,
        source_kind="tlc",
    )
    # A month whose new columns every dialect would misread unquoted: they load as named.
    feed.publish("2026-02", with_columns(era_2025("2026-02"), KEYWORD_NAMES))
    assert materialize(resources, "2026-02-01").success
    assert materialize_days(resources, "2026-02-01", "2026-02-28").success
    columns = query(
        fresh_postgres,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        POSTGRES_TABLE,
    )
    assert set(KEYWORD_NAMES) <= {name for (name,) in columns}
    month = pq.read_table("nyc_taxi_data/2026-02.parquet", filesystem=lake.filesystem())
    assert set(KEYWORD_NAMES) <= set(month.column_names)
    # The warehouse's names are lower case (the tutorial's rule).
    q = "`" if isinstance(warehouse, BigQueryWarehouse) else '"'
    [(selects, froms, rows)] = warehouse.rows(
        f"SELECT count({q}select{q}), count({q}from{q}), count(*) FROM ny_taxi.yellow_trips"
    )
    assert selects == froms == rows > 0
    before = every_sink(fresh_postgres, lake, warehouse)

    def fails_before_any_sink(names: list[str]) -> None:
        feed.publish("2026-03", with_columns(era_2025("2026-03"), names))
        failed = materialize(resources, "2026-03-01", raise_on_error=False)
        assert not failed.success
        message = failure_message(failed)
        assert "Rule:" in message and any(repr(name) in message for name in names), message
        assert [e.step_key for e in failed.get_step_failure_events()] == ["raw_yellow_trips"]
        assert every_sink(fresh_postgres, lake, warehouse) == before

    # Months whose new columns no sink may take as they are: many at once, then generated.
    fails_before_any_sink(HOSTILE_FILE_NAMES)
    settings(max_examples=3, deadline=None, database=None)(
        given(extra_columns().filter(lambda names: not all(map(SAFE.fullmatch, names))))(
            fails_before_any_sink
        )
    )()
