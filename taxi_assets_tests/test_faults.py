"""Real faults, and every sink ends exactly in its last good state.

Each case takes the sink's state (row counts and checksums per partition) before the fault and
compares it after. The faults are real: a PostgreSQL server stopped with `pg_ctl stop -m
immediate` while it runs the load, an HTTP server that cuts or mislabels its responses, a
download process killed mid-stream, GCS lost mid-upload, BigQuery answering with errors, two
runs racing for one partition, every real sample the suite ships fed as a month, and secrets
that must stay out of everything Dagster records and the UI shows.
"""

from __future__ import annotations

import gzip
import http.client
import http.server
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from taxi_assets import console
from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager
from taxi_assets.defs.resources import LakeResource
from taxi_assets.storage.local_postgres import LocalPostgres, free_port
from taxi_assets.defs.profiles import resources_for_profile
from taxi_assets.datasets import YELLOW
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets.tlc.schema import DATETIME_FORMAT
from taxi_assets.tlc.download import CHUNK_BYTES
from taxi_assets_tests.conftest import DATA, PostgresUnderTest, sample
from taxi_assets_tests.dagster_processes import create_database, dagster_env, start_webserver
from taxi_assets_tests.emulators.gcs import CuttableLink, GcsEmulator, running_gcs_emulator
from taxi_assets_tests.pipeline import (
    JANUARY,
    POSTGRES_TABLE,
    failure_messages,
    materialize,
    materialize_days,
    partition_state,
    pipeline_resources,
    query,
)

pytestmark = pytest.mark.faults
pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]

REAL_ROWS = 28_401
REAL_ZERO_PASSENGER_ROWS = 589
KEPT_ROWS = REAL_ROWS - REAL_ZERO_PASSENGER_ROWS
BIG_MONTH_COPIES = 20
JANUARY_FILE = "yellow_tripdata_2021-01.csv.gz"


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_postgres() -> PostgresUnderTest:
    """A PostgreSQL of this module's own: these tests stop it, and the suite's is shared."""
    # Outside pytest's temporary tree: every pytest session that starts (other engineers'
    # too) makes that tree private to root again, and as root the server runs as another user.
    home = Path(tempfile.mkdtemp(prefix="taxi-fault-postgres-"))
    server = LocalPostgres(home / "data", free_port()).start()
    try:
        yield PostgresUnderTest(server.host, server.port, "postgres", "", "postgres", server)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg(fault_postgres) -> PostgresUnderTest:
    fault_postgres.server.start()  # a test that failed midway may have left it stopped
    query(fault_postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    return fault_postgres


@pytest.fixture(scope="module")
def big_month(tmp_path_factory, fault_postgres) -> dict:
    """A January worth cutting, parsed and cleaned into staging; the Postgres load is left to do.

    It is the real sample's rows repeated, written as the TLC's gzipped CSV text.
    """
    with gzip.open(sample(JANUARY_FILE), "rb") as text:
        header, rows = text.readline(), text.read()
    if not rows.endswith(b"\n"):
        rows += b"\r\n"
    folder = tmp_path_factory.mktemp("big_month")
    (folder / "source").mkdir()
    (folder / "source" / JANUARY_FILE).write_bytes(
        gzip.compress(header + rows * BIG_MONTH_COPIES, compresslevel=1)
    )
    resources = pipeline_resources(folder / "state", str(folder / "source"), fault_postgres)
    assert materialize(resources, selection=["raw_yellow_trips", "cleaned_yellow_trips"]).success
    return resources


def sink_state(postgres) -> dict[str, tuple[int, int]]:
    """Every partition of the Postgres sink: its row count and an order-free checksum of its rows."""
    if query(postgres, "SELECT to_regclass(%s)", POSTGRES_TABLE)[0][0] is None:
        return {}
    rows = query(
        postgres,
        "SELECT source_month::text, count(*), sum(hashtextextended(t::text, 0)::numeric) "
        f"FROM {POSTGRES_TABLE} t GROUP BY 1",
    )
    return {month: (count, int(checksum)) for month, count, checksum in rows}


def ny_taxi_relations(postgres) -> dict[str, str]:
    """Every table in the ny_taxi schema, by role: the parent, its partitions, or a stray."""
    rows = query(
        postgres,
        "SELECT c.relname, CASE WHEN c.relkind = 'p' THEN 'parent' "
        "WHEN i.inhrelid IS NOT NULL THEN 'partition' ELSE 'stray' END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
        "WHERE n.nspname = 'ny_taxi' AND c.relkind IN ('r', 'p')",
    )
    return dict(rows)


def assert_no_strays(postgres) -> None:
    strays = [name for name, role in ny_taxi_relations(postgres).items() if role == "stray"]
    assert not strays, f"tables left behind in ny_taxi: {strays}"


def failure_message(result) -> str:
    """What a failed run says: each failed step's error and its causes, without stack traces."""
    messages = failure_messages(result)
    assert messages, "expected a failed step"
    return "\n".join(messages)


def load_good_january(tmp_path: Path, http_source, postgres) -> dict:
    """Load the real January sample through the pipeline: the sink's last good state."""
    http_source.publish("2021-01", JANUARY_FILE)
    assert materialize(pipeline_resources(tmp_path / "good", http_source.url, postgres)).success
    state = sink_state(postgres)
    assert state[JANUARY][0] == KEPT_ROWS
    return state


def landing_files(resources: dict) -> list[str]:
    folder = Path(resources["taxi_source"].landing_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- PostgreSQL stopped mid-load ------------------------------------------------------------


class StopServerWhen(threading.Thread):
    """Stops the server with `pg_ctl stop -m immediate` as soon as `sql` returns a row."""

    def __init__(self, postgres: PostgresUnderTest, sql: str):
        super().__init__(daemon=True)
        self.postgres, self.sql = postgres, sql
        self.done = threading.Event()
        self.seen: str | None = None

    def run(self) -> None:
        with psycopg.connect(self.postgres.uri, autocommit=True) as conn:
            while not self.done.is_set() and self.seen is None:
                row = conn.execute(self.sql).fetchone()
                self.seen = row[0] if row else None
        if self.seen:
            self.postgres.server.stop(mode="immediate")


# The sink's own sessions, seen from outside: the binary COPY of the month's rows, and a
# session blocked on the advisory lock that queues runs before the partition swap.
DURING_COPY = (
    "SELECT query FROM pg_stat_activity "
    "WHERE state = 'active' AND query ILIKE 'COPY %' AND pid <> pg_backend_pid()"
)
WAITING_TO_SWAP = (
    "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND NOT l.granted"
)


@pytest.mark.parametrize("moment", ["during_copy", "before_swap"])
def test_postgres_stopped_mid_load_keeps_old_rows_and_next_run_succeeds(
    tmp_path, http_source, pg, big_month, moment
):
    good = load_good_january(tmp_path, http_source, pg)
    holder = None
    if moment == "before_swap":
        # Another session holds the swap's lock, as a concurrent run would; the run then waits
        # with its rows loaded into staging, and the server dies under it.
        holder = psycopg.connect(pg.uri, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", ('"ny_taxi"."yellow_cab_data"',))
    stopper = StopServerWhen(pg, DURING_COPY if moment == "during_copy" else WAITING_TO_SWAP)
    stopper.start()
    try:
        result = materialize(big_month, selection="ny_taxi/yellow_cab_data", raise_on_error=False)
    finally:
        stopper.done.set()
        stopper.join()
        if holder is not None:
            holder.close()

    assert stopper.seen, f"the server should have been stopped {moment}"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.uri).close()
    assert not result.success
    message = failure_message(result)
    assert "server closed the connection unexpectedly" in message, message
    assert "Failed to rollback" not in message, "the error should be the cause, not the cleanup's"
    pg.server.start()
    assert sink_state(pg) == good
    assert_no_strays(pg)

    assert materialize(big_month, selection="ny_taxi/yellow_cab_data").success
    assert partition_state(pg)[0] == KEPT_ROWS * BIG_MONTH_COPIES
    assert_no_strays(pg)


# --- the lake on GCS, lost mid-upload --------------------------------------------------------


def lake_state(emulator: GcsEmulator, prefix: str) -> dict[str, tuple[int, str]]:
    """Every object under `prefix`: its size and the MD5 GCS holds for it."""
    blobs = emulator.storage_client().list_blobs(emulator.bucket, prefix=prefix)
    return {blob.name: (blob.size, blob.md5_hash) for blob in blobs}


@pytest.fixture
def gcs_behind_link(tmp_path):
    """A GCS emulator that the pipeline reaches through a relay the test can cut."""
    emulator = GcsEmulator(log_path=tmp_path / "fake-gcs-server.log")
    with CuttableLink(emulator.port) as link:
        emulator.public_port = link.port  # the emulator answers for the relay's address
        emulator.start()
        try:
            yield emulator, link
        finally:
            emulator.stop()


def test_gcs_lost_mid_upload_keeps_the_months_object_and_next_run_succeeds(
    tmp_path, http_source, pg, big_month, gcs_behind_link
):
    """The lake's GCS goes away 64 KiB into the upload of the month's object.

    Stopping the emulator itself would lose every object (it keeps them in memory) and prove
    nothing about them; so the connection dies instead, every open one and each new one, as
    if the server had stopped, while the emulator stays up to show what GCS kept.
    """
    emulator, link = gcs_behind_link
    lake = LakeResource(
        root=f"gs://{emulator.bucket}/lake", endpoint=link.endpoint, retry_time_limit_seconds=1
    )
    http_source.publish("2021-01", JANUARY_FILE)
    assert materialize(pipeline_resources(tmp_path / "good", http_source.url, pg, lake)).success
    good = lake_state(emulator, "lake/")
    assert list(good) == ["lake/nyc_taxi_data/2021-01.parquet"]
    # The big month, already cleaned in staging, goes to the same lake object.
    big = {
        **big_month,
        **{
            key: value
            for key, value in pipeline_resources(tmp_path, "", pg, lake).items()
            if key.startswith("lake_")
        },
    }

    link.cut_after(64 * 1024)
    result = materialize(big, selection="yellow_trips_parquet", raise_on_error=False)

    assert link.cuts == 1
    assert not result.success
    message = failure_message(result)
    assert "nyc_taxi_data/2021-01.parquet" in message and "UNAVAILABLE" in message, message
    assert lake_state(emulator, "lake/") == good

    link.restore()
    assert materialize(big, selection="yellow_trips_parquet").success
    month = pq.read_table("nyc_taxi_data/2021-01.parquet", filesystem=lake.filesystem())
    assert month.num_rows == KEPT_ROWS * BIG_MONTH_COPIES
    assert lake_state(emulator, "lake/").keys() == good.keys()


def test_gcs_lost_while_the_months_object_is_staged_beside_the_postgres_load_keeps_both(
    tmp_path, http_source, pg, big_month, gcs_behind_link
):
    """The month's object is written beside its Postgres load; GCS goes away 64 KiB into its
    upload, with the rows COPYed and not yet swapped: neither sink takes the new month."""
    emulator, link = gcs_behind_link
    lake = LakeResource(
        root=f"gs://{emulator.bucket}/lake", endpoint=link.endpoint, retry_time_limit_seconds=1
    )
    http_source.publish("2021-01", JANUARY_FILE)
    assert materialize(pipeline_resources(tmp_path / "good", http_source.url, pg, lake)).success
    good = (sink_state(pg), lake_state(emulator, "lake/"))
    # The big month, already cleaned in staging, to the same table and lake object.
    big = {
        **big_month,
        **{
            key: value
            for key, value in pipeline_resources(tmp_path, "", pg, lake).items()
            if key.startswith(("lake_", "postgres_io_manager"))
        },
    }

    link.cut_after(64 * 1024)
    result = materialize(
        big, selection="ny_taxi/yellow_cab_data yellow_trips_parquet", raise_on_error=False
    )

    assert link.cuts == 1
    assert not result.success
    message = failure_message(result)
    assert "nyc_taxi_data/2021-01.parquet" in message and "UNAVAILABLE" in message, message
    assert (sink_state(pg), lake_state(emulator, "lake/")) == good
    assert_no_strays(pg)

    link.restore()
    assert materialize(big, selection="ny_taxi/yellow_cab_data yellow_trips_parquet").success
    month = pq.read_table("nyc_taxi_data/2021-01.parquet", filesystem=lake.filesystem())
    assert month.num_rows == sink_state(pg)[JANUARY][0] == KEPT_ROWS * BIG_MONTH_COPIES
    assert lake_state(emulator, "lake/").keys() == good[1].keys()


# --- the warehouse on BigQuery, answering with errors ----------------------------------------


class ErrorInjectingProxy:
    """A loopback HTTP proxy to the BigQuery emulator that answers chosen requests with errors.

    The emulator cannot be told to fail; Google's API can, and does, so the fault is put on the
    wire: requests whose method and path match a rule get BigQuery's error body instead of
    reaching the emulator, and everything else passes through untouched.
    """

    def __init__(self, target: str):
        self.target = urllib.parse.urlparse(target)
        self.rules: list[dict] = []
        self.injected: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rule = proxy._rule_for(self.command, self.path)
                if rule is not None:
                    proxy.injected.append(f"{self.command} {self.path}")
                    error = json.dumps(
                        {
                            "error": {
                                "code": rule["status"],
                                "status": rule["grpc_status"],
                                "message": f"injected by the test: {rule['reason']}",
                                "errors": [
                                    {
                                        "reason": rule["reason"],
                                        "domain": "global",
                                        "message": f"injected by the test: {rule['reason']}",
                                    }
                                ],
                            }
                        }
                    ).encode()
                    self._reply(rule["status"], {"Content-Type": "application/json"}, error)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.target.hostname, proxy.target.port, timeout=120
                )
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection", "content-length")
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self._reply(
                        response.status,
                        {
                            k: v
                            for k, v in response.getheaders()
                            if k.lower()
                            not in ("transfer-encoding", "connection", "content-length")
                        },
                        data,
                    )
                finally:
                    upstream.close()

            def _reply(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(
        self,
        method: str,
        path_contains: str,
        *,
        status: int = 400,
        reason: str = "invalid",
        grpc_status: str = "INVALID_ARGUMENT",
        times: int | None = None,
    ) -> None:
        """Answer matching requests with an error; `times` of them, or all while the rule lasts."""
        self.rules.append(
            dict(
                method=method,
                path=path_contains,
                status=status,
                reason=reason,
                grpc_status=grpc_status,
                left=times,
            )
        )

    def _rule_for(self, method: str, path: str) -> dict | None:
        for rule in self.rules:
            if rule["method"] == method and rule["path"] in path and rule["left"] != 0:
                if rule["left"] is not None:
                    rule["left"] -= 1
                return rule
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


WAREHOUSE_DATASET = "ny_taxi_faults"  # the session's emulator is shared; this test's own dataset
DAYS = ("2021-01-01", "2021-01-02")


def warehouse_state(client) -> dict[str, tuple]:
    """Each day in the BigQuery table: its row count and checksums of two columns."""
    rows = client.query(
        "SELECT CAST(CAST(tpep_pickup_datetime AS DATE) AS STRING) AS day, COUNT(*), "
        "ROUND(SUM(total_amount), 2), SUM(pulocationid) "
        f"FROM {WAREHOUSE_DATASET}.yellow_trips GROUP BY day"
    ).result()
    return {row[0]: tuple(row.values())[1:] for row in rows}


def warehouse_days(resources: dict, **kwargs):
    """The warehouse asset alone for DAYS, in one run as a single-run backfill launches it."""
    return materialize(
        resources,
        partition_key=None,
        selection="ny_taxi/yellow_trips",
        tags={
            "dagster/asset_partition_range_start": DAYS[0],
            "dagster/asset_partition_range_end": DAYS[1],
        },
        **kwargs,
    )


@pytest.fixture
def bigquery_behind_proxy(bigquery_emulator):
    client = bigquery_emulator.client()
    client.query(f"DROP TABLE IF EXISTS {WAREHOUSE_DATASET}.yellow_trips").result()
    proxy = ErrorInjectingProxy(bigquery_emulator.endpoint)
    try:
        yield bigquery_emulator, client, proxy
    finally:
        proxy.close()


def test_bigquery_errors_keep_the_days_rows_and_next_run_succeeds(
    tmp_path, http_source, pg, bigquery_behind_proxy
):
    emulator, client, proxy = bigquery_behind_proxy
    warehouse = BigQueryWarehouseIOManager(
        project=emulator.project, dataset=WAREHOUSE_DATASET, api_endpoint=proxy.url
    )
    http_source.publish("2021-01", JANUARY_FILE)
    resources = pipeline_resources(tmp_path, http_source.url, pg, warehouse_io_manager=warehouse)
    assert materialize(resources).success
    assert materialize_days(resources, *DAYS).success
    good = warehouse_state(client)
    # The sample's January trips with passengers, less the 16 picked up in December.
    assert sorted(good) == list(DAYS) and sum(day[0] for day in good.values()) == KEPT_ROWS - 16

    # A transient error on the upload of the days' rows: the client retries, the run succeeds.
    proxy.fail(
        "POST",
        "/upload/bigquery/",
        status=503,
        reason="backendError",
        grpc_status="UNAVAILABLE",
        times=1,
    )
    assert warehouse_days(resources).success
    assert len(proxy.injected) == 1
    assert warehouse_state(client) == good

    # An error that stays: the upload is refused every time.
    proxy.fail("POST", "/upload/bigquery/")
    result = warehouse_days(resources, raise_on_error=False)
    assert not result.success
    assert "injected by the test: invalid" in failure_message(result)
    assert warehouse_state(client) == good
    assert [t.table_id for t in client.list_tables(WAREHOUSE_DATASET)] == ["yellow_trips"], (
        "the staging table of the failed load should be gone"
    )

    proxy.rules.clear()
    assert warehouse_days(resources).success
    assert warehouse_state(client) == good


# --- downloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, expected",
    [
        (("cut", 100_000), "connection ended after 100,000 of"),
        (("short", 5_000), "connection ended after 5,000 of"),
        # A Content-Length that matches the bytes sent but not the file: only the gzip trailer
        # shows the file is incomplete.
        (("length", 100_000), "truncated or corrupt"),
    ],
    ids=["cut", "short", "wrong_length"],
)
def test_download_that_always_breaks_is_retried_then_fails_clearly(
    tmp_path, http_source, pg, fault, expected
):
    good = load_good_january(tmp_path, http_source, pg)
    http_source.requests.clear()
    http_source.faults[JANUARY_FILE] = fault
    resources = pipeline_resources(tmp_path / "faulty", http_source.url, pg)

    result = materialize(resources, raise_on_error=False)

    assert not result.success
    message = failure_message(result)
    assert JANUARY_FILE in message and "after 4 attempt(s)" in message and expected in message, (
        message
    )
    assert http_source.requests.count(f"GET /{JANUARY_FILE}") == 4
    # The failure says no sink changed, so the UI's red is not read as a failed write.
    [failure] = result.get_step_failure_events()
    said = failure.event_specific_data.user_failure_data
    assert said.metadata["sinks_unchanged"].value == YELLOW.sink_assets
    assert f"Every sink is unchanged: {', '.join(YELLOW.sink_assets)}." in said.description
    assert console.sinks_line(result) == "No sink was written: every sink is unchanged."
    # Nothing a later run could take for the file (the hidden name is the download's lock).
    assert [name for name in landing_files(resources) if not name.startswith(".")] == []
    assert sink_state(pg) == good

    # The source recovers: the next run fetches the file again rather than trust a piece.
    http_source.faults.clear()
    assert materialize(resources).success
    assert http_source.requests.count(f"GET /{JANUARY_FILE}") == 5
    assert sink_state(pg) == good


def test_download_cut_once_is_retried_and_succeeds(tmp_path, http_source, pg):
    good = load_good_january(tmp_path, http_source, pg)
    http_source.requests.clear()
    http_source.faults[JANUARY_FILE] = ("cut", 100_000, 1)
    resources = pipeline_resources(tmp_path / "flaky", http_source.url, pg)
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(resources, instance=instance)

    assert result.success
    assert http_source.requests.count(f"GET /{JANUARY_FILE}") == 2
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(
        "attempt 1 failed" in m and "connection ended after 100,000 of" in m and "retrying" in m
        for m in logs
    ), logs
    assert sink_state(pg) == good


def test_download_killed_midway_is_never_taken_as_complete(tmp_path, http_source, pg, big_month):
    good = load_good_january(tmp_path, http_source, pg)
    http_source.requests.clear()
    resources = pipeline_resources(tmp_path / "killed", http_source.url, pg)
    landing = Path(resources["taxi_source"].landing_dir)
    # The big month, so the downloader has whole chunks of it on disk when it dies.
    http_source.publish_bytes(
        "2021-01", Path(big_month["taxi_source"].base_url, JANUARY_FILE).read_bytes()
    )
    http_source.faults[JANUARY_FILE] = ("hang", 3 * CHUNK_BYTES, 1)
    # A real process, killed with SIGKILL while the server is mid-response: no cleanup runs.
    downloader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from taxi_assets.tlc.download import download; "
            "download(sys.argv[1], sys.argv[2], Path(sys.argv[3]), retries=0)",
            http_source.url,
            JANUARY_FILE,
            str(landing),
        ]
    )
    try:
        while sum(p.stat().st_size for p in landing.glob("*.part")) < 2 * CHUNK_BYTES:
            assert downloader.poll() is None, "the download should still be running"
            time.sleep(0.05)
    finally:
        downloader.send_signal(signal.SIGKILL)
        downloader.wait()
        http_source.release.set()
    assert [name for name in landing_files(resources) if not name.startswith(".")] == [
        f"{JANUARY_FILE}.part"
    ]
    http_source.publish("2021-01", JANUARY_FILE)

    result = materialize(resources)

    assert result.success
    assert http_source.requests.count(f"GET /{JANUARY_FILE}") == 2
    assert sink_state(pg) == good
    assert [name for name in landing_files(resources) if not name.startswith(".")] == [JANUARY_FILE]


# --- two runs of one partition at once ------------------------------------------------------


def test_two_runs_of_one_partition_at_once_end_as_one_clean_run(tmp_path, http_source, pg):
    clean = load_good_january(tmp_path, http_source, pg)
    for round_ in ("first_load", "replace"):
        if round_ == "first_load":
            # Racing first runs also race to create the schema and the partitioned table.
            query(pg, "DROP SCHEMA ny_taxi CASCADE")
        http_source.requests.clear()
        # One deployment: both runs share the landing and staging folders.
        resources = pipeline_resources(tmp_path / round_, http_source.url, pg)
        start = threading.Barrier(2)
        results: list = ["did not finish", "did not finish"]

        def run(slot: int) -> None:
            # Each run on its own instance, as two launches would be; it is closed in the
            # thread that made it, since its SQLite storage belongs to that thread.
            with dg.DagsterInstance.ephemeral() as instance:
                start.wait()
                result = materialize(resources, raise_on_error=False, instance=instance)
                results[slot] = None if result.success else failure_message(result)

        threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert results == [None, None], f"{round_}: both runs should finish, one after the other"
        assert http_source.requests.count(f"GET /{JANUARY_FILE}") == 1, (
            "the second run should wait for the first's download and reuse it"
        )
        assert sink_state(pg) == clean
        assert set(ny_taxi_relations(pg).values()) == {"parent", "partition"}
        assert [name for name in landing_files(resources) if not name.startswith(".")] == [
            JANUARY_FILE
        ]
        staging = Path(resources["io_manager"].base_dir)
        staged = [p.name for p in staging.rglob("*") if p.is_file() and p.suffix != ".lock"]
        # The cleaned month; the raw month's recipe and its file, the one each run kept (the
        # month's, and the one it replaced), both the landed file itself; no temporary file.
        assert sorted(staged) == ["2021-01-01.parquet", "2021-01-01.recipe.json"] + 2 * [
            JANUARY_FILE
        ], staged
        landed = Path(resources["taxi_source"].landing_dir) / JANUARY_FILE
        kept = {p.stat().st_ino for p in staging.rglob(JANUARY_FILE)}
        assert kept == {landed.stat().st_ino}


# --- every real sample fed as a month -------------------------------------------------------


@dataclass
class Loads:
    month: str
    rows: int  # rows in the file (SOURCES.md)
    dropped: int  # zero or missing passenger_count (SOURCES.md)


@dataclass
class Fails:
    says: list[str] = field(default_factory=list)
    month: str = "2021-01"


HEADER = "header does not match the yellow taxi column contract"
SAMPLES = {
    # SOURCES.md 1b: 28,401 rows, 589 with passenger_count 0.
    "yellow_tripdata_2021-01.csv.gz": Loads("2021-01", 28_401, 589),
    # SOURCES.md 2: 999 rows; the 500 unknown-vendor rows have no passenger_count, 10 have 0.
    "yellow_tripdata_2020-01.csv.gz": Loads("2020-01", 999, 510),
    "yellow_tripdata_2021-01.truncated_last_line.csv.gz": Fails(
        ["line 28403: expected 18 columns, got 3: '2,2021-01-02 11:33:39,2021-01-0'"]
    ),
    "excel_resaved__yellow_tripdata_2021-01.csv.gz": Fails(
        [
            "line 2, column 'tpep_pickup_datetime': '01/01/2021 0:30' is not a valid timestamp[us] "
            f"(expected {DATETIME_FORMAT})"
        ]
    ),
    "yellow_tripdata_sample_2019-01.csv.gz": Fails([HEADER, "missing ['VendorID'", "'vendor_id'"]),
    "yellow_tripdata_sample_2020-04.csv.gz": Fails([HEADER, "missing ['VendorID'", "'vendor_id'"]),
    "yellow_tripdata_sample_2021.csv.gz": Fails(
        [HEADER, "missing none", "unexpected ['test_bool']"]
    ),
    "bigquery_2022__yellow_tripdata_sample.csv.gz": Fails([HEADER, "'airport_fee'", "'rate_code'"]),
    "fhvhv_tripdata_2021-01.csv.gz": Fails([HEADER, "'hvfhs_license_num'"]),
    "green_tripdata_2022-01.parquet": Fails(
        ["is not gzip-compressed (it is a Parquet file)", "after 4 attempt(s)"]
    ),
    "head1k__yellow_tripdata_2019-01.csv.gz": Fails(["line 10: expected 18 columns, got 6"]),
    "head1k__green_tripdata_2019-01.csv.gz": Fails(
        [HEADER, "'lpep_pickup_datetime'", "'ehail_fee'"]
    ),
    "head1k__green_tripdata_2020-06.csv.gz": Fails([HEADER, "'vendorid'"]),
    "head1k__fhv_tripdata_2019-01.csv.gz": Fails([HEADER, "'dispatching_base_num'"]),
    "head1k__fhvhv_tripdata_2019-02.csv.gz": Fails([HEADER, "'hvfhs_license_num'"]),
    "taxi+_zone_lookup.csv.gz": Fails([HEADER, "'LocationID'", "'Borough'"]),
    "taxi_zone_lookup_newer__location_lookup.csv.gz": Fails([HEADER, "'LocationID'", "'Borough'"]),
}


def test_every_shipped_sample_has_an_expected_outcome():
    shipped = {p.name for p in DATA.iterdir() if p.name != "README.md"}
    assert shipped == set(SAMPLES)


def strict_pandas_read(path: Path) -> pd.DataFrame:
    """SOURCES.md's "strict" read, done independently of the pipeline's pyarrow parser."""
    dtypes = {
        name: ("Int64" if str(t) == "int64" else "float64" if str(t) == "double" else "str")
        for name, t in YELLOW.csv_columns.items()
        if name not in (YELLOW.pickup, YELLOW.dropoff)
    }
    frame = pd.read_csv(path, dtype=dtypes)
    for column in (YELLOW.pickup, YELLOW.dropoff):
        frame[column] = pd.to_datetime(frame[column], format=DATETIME_FORMAT)
    return frame


@pytest.fixture
def sample_sink(tmp_path, http_source, fault_postgres):
    """The sink holding a good January, loaded once and then kept across the sample cases."""
    fault_postgres.server.start()
    if sink_state(fault_postgres).get(JANUARY, (None,))[0] != KEPT_ROWS:
        query(fault_postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
        load_good_january(tmp_path, http_source, fault_postgres)
    return fault_postgres


@pytest.mark.parametrize("name", list(SAMPLES))
def test_real_sample_fed_as_a_month_loads_correctly_or_fails_naming_file_and_fault(
    tmp_path, http_source, sample_sink, name
):
    expected = SAMPLES[name]
    served = f"yellow_tripdata_{expected.month}.csv.gz"
    # Served byte for byte under the month's name, whatever the file really is.
    (http_source.root / served).write_bytes(sample(name).read_bytes())
    month_start = f"{expected.month}-01"
    before = sink_state(sample_sink)

    result = materialize(
        pipeline_resources(tmp_path / "run", http_source.url, sample_sink),
        partition_key=month_start,
        raise_on_error=False,
    )

    if isinstance(expected, Fails):
        assert not result.success
        message = failure_message(result)
        assert served in message
        # Wherever the fault shows (the header on download, a row as the month is read and
        # cleaned, the last line included), the run says nothing was written, and nothing was.
        for fragment in [*expected.says, "Every sink is unchanged"]:
            assert fragment in message, message
        assert console.sinks_line(result) == "No sink was written: every sink is unchanged."
        assert sink_state(sample_sink) == before
        assert not list((tmp_path / "run" / "lake").rglob("*.parquet"))
        return
    assert result.success, failure_message(result)
    clean_meta = result.asset_materializations_for_node("cleaned_yellow_trips")[0].metadata
    assert clean_meta[ROWS_READ_KEY].value == expected.rows
    assert clean_meta["dropped_zero_or_missing_passengers"].value == expected.dropped
    assert clean_meta["dagster/row_count"].value == expected.rows - expected.dropped
    # The loaded rows against an independent strict read: no value shifted, coerced or lost.
    oracle = strict_pandas_read(sample(name))
    oracle = oracle[oracle["passenger_count"].fillna(0) > 0]
    loaded = query(
        sample_sink,
        f"SELECT count(*), sum(total_amount), sum(trip_distance), sum(passenger_count)::bigint, "
        f'sum("VendorID")::bigint, count("VendorID"), count(congestion_surcharge), '
        f"min({YELLOW.pickup}), max({YELLOW.pickup}), min({YELLOW.dropoff}), max({YELLOW.dropoff}), "
        f"count(*) FILTER (WHERE store_and_fwd_flag = 'Y') "
        f"FROM {POSTGRES_TABLE} WHERE source_month = %s",
        month_start,
    )[0]
    assert loaded == (
        len(oracle),
        pytest.approx(float(oracle["total_amount"].sum())),
        pytest.approx(float(oracle["trip_distance"].sum())),
        int(oracle["passenger_count"].sum()),
        int(oracle["VendorID"].sum()),
        int(oracle["VendorID"].count()),
        int(oracle["congestion_surcharge"].count()),
        oracle[YELLOW.pickup].min(),
        oracle[YELLOW.pickup].max(),
        oracle[YELLOW.dropoff].min(),
        oracle[YELLOW.dropoff].max(),
        int((oracle["store_and_fwd_flag"] == "Y").sum()),
    )
    others = {m: s for m, s in sink_state(sample_sink).items() if m != month_start}
    assert others == {m: s for m, s in before.items() if m != month_start}


# --- secrets --------------------------------------------------------------------------------

UI_QUERY = """
query Secrets($location: String!, $runIds: [String!]) {
  allTopLevelResourceDetailsOrError(repositorySelector: {
      repositoryLocationName: $location, repositoryName: "__repository__"}) {
    __typename
    ... on ResourceDetailsList { results { name configuredValues { key value type }
        configFields { name defaultValueAsJson } } }
  }
  runConfigSchemaOrError(selector: {repositoryLocationName: $location,
      repositoryName: "__repository__", pipelineName: "__ASSET_JOB"}) {
    __typename ... on RunConfigSchema { rootDefaultYaml }
  }
  utilizedEnvVarsOrError(repositorySelector: {
      repositoryLocationName: $location, repositoryName: "__repository__"}) {
    __typename ... on EnvVarWithConsumersList { results { envVarName } }
  }
  runsOrError(filter: {runIds: $runIds}) {
    __typename
    ... on Runs { results { runId status runConfigYaml tags { key value }
      eventConnection { events {
        __typename
        ... on MessageEvent { message }
        ... on MaterializationEvent { metadataEntries { label description
            ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }
            ... on PathMetadataEntry { path } ... on JsonMetadataEntry { jsonString }
            ... on UrlMetadataEntry { url } } }
        ... on ExecutionStepFailureEvent { error { message stack causes { message stack } } }
      } } } }
  }
}
"""


def scram_role(postgres: PostgresUnderTest, role: str, password: str) -> PostgresUnderTest:
    """A login role that must prove its password (scram-sha-256) on loopback TCP."""
    query(postgres, f"DROP ROLE IF EXISTS {role}")
    query(postgres, f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    assert query(postgres, "SHOW password_encryption") == [("scram-sha-256",)]
    hba = postgres.server.data_dir / "pg_hba.conf"
    rules = hba.read_text()
    if f" {role} " not in rules:
        # First match wins: this role must authenticate; the suite's superuser keeps trust.
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{rules}")
        query(postgres, "SELECT pg_reload_conf()")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://{role}:wrong@{postgres.host}:{postgres.port}/postgres")
    return PostgresUnderTest(
        postgres.host, postgres.port, role, password, postgres.database, postgres.server
    )


def test_secrets_from_the_environment_stay_out_of_logs_metadata_and_the_ui(
    tmp_path, http_source, pg, postgres, monkeypatch, capfd
):
    password = f"pw-{secrets.token_hex(12)}"
    writer = scram_role(pg, "taxi_writer", password)
    key_path = tmp_path / f"gcp-key-{secrets.token_hex(6)}.json"
    key_path.write_text(json.dumps({"type": "service_account", "project_id": "taxi-test"}))
    http_source.publish("2021-01", JANUARY_FILE)
    with running_gcs_emulator(tmp_path / "gcs") as gcs:
        env = dagster_env(
            # The instance's storage lives in the suite's server: this test stops the sink's.
            tmp_path,
            dagster_pg_url=create_database(postgres, "dagster_faults"),
            source_url=http_source.url,
            postgres=writer,
            profile="gcp",
            extra={
                "TAXI_GCS_BUCKET": gcs.bucket,
                "TAXI_GCS_ENDPOINT": gcs.url,
                "TAXI_BQ_PROJECT": "taxi-faults",
                "GOOGLE_APPLICATION_CREDENTIALS": str(key_path),
            },
        )
        for name in (
            "DAGSTER_HOME",
            "DAGSTER_PG_URL",
            "TAXI_PROFILE",
            "TAXI_HOME",
            "TAXI_SOURCE_URL",
            "TAXI_PG_HOST",
            "TAXI_PG_PORT",
            "TAXI_PG_USER",
            "TAXI_PG_PASSWORD",
            "TAXI_PG_DB",
            "TAXI_GCS_BUCKET",
            "TAXI_GCS_ENDPOINT",
            "TAXI_BQ_PROJECT",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ):
            monkeypatch.setenv(name, env[name])
        # The gcp profile's own resources, every secret an EnvVar read at run time.
        resources = resources_for_profile("gcp")
        with dg.DagsterInstance.get() as instance:
            good = materialize(resources, instance=instance)
            # A run that fails inside the sink, where a connection error would surface.
            pg.server.stop(mode="immediate")
            failed = materialize(
                resources,
                instance=instance,
                raise_on_error=False,
                selection="ny_taxi/yellow_cab_data",
            )
            pg.server.start()
            assert good.success and not failed.success
            assert partition_state(pg)[0] == KEPT_ROWS
            assert gcs.objects().keys() >= {"nyc_taxi_data/2021-01.parquet"}
            recorded = {"console": "".join(capfd.readouterr())}
            for result in (good, failed):
                run = instance.get_run_by_id(result.run_id)
                recorded[f"run {result.run_id} record"] = dg.serialize_value(run)
                recorded[f"run {result.run_id} event log"] = "\n".join(
                    dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)
                )
        recorded["files under TAXI_HOME (compute logs, staging)"] = "\n".join(
            path.read_bytes().decode("latin-1")
            for path in Path(env["TAXI_HOME"]).rglob("*")
            if path.is_file()
        )

        webserver = start_webserver(env, tmp_path / "logs")
        try:
            ui = webserver.graphql(
                UI_QUERY, {"location": "taxi_assets", "runIds": [good.run_id, failed.run_id]}
            )
        finally:
            webserver.process.stop()
    assert ui["allTopLevelResourceDetailsOrError"]["__typename"] == "ResourceDetailsList"
    assert len(ui["runsOrError"]["results"]) == 2
    recorded["the UI (resources, launchpad defaults, runs and their events)"] = json.dumps(ui)
    # The UI names the variable the password comes from, and nothing more.
    assert "TAXI_PG_PASSWORD" in {v["envVarName"] for v in ui["utilizedEnvVarsOrError"]["results"]}

    for where, text in recorded.items():
        assert password not in text, f"the Postgres password leaked into {where}"
        assert key_path.name not in text, f"the GCP key path leaked into {where}"
