"""Session fixtures: a real PostgreSQL, a real HTTP source and the TLC feed, on loopback."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from taxi_assets.storage.local_postgres import LocalPostgres, free_port
from taxi_assets.defs.resources import PostgresResource

pytest_plugins = ["taxi_assets_tests.emulators.gcs"]

# A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so
# would every process it starts: the Ctrl-C tests need their processes to hear it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DATA = Path(__file__).parent / "data"
# The modules that take longest (Dagster's processes, dbt, the emulators), longest first: with
# `make test`'s workers each taking the next module when done, the short modules fill in
# around them instead of one long module starting last. Modules are independent of each other.
LONGEST_MODULES = (
    "test_cli_live.py",
    "test_backfill_interrupted.py",
    "test_analytics.py",
    "test_backfill_live.py",
    "test_automation_live.py",
    "test_killed_runs.py",
    "test_racing_runs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)  # stable: each module's tests keep their order


def sample(name: str) -> Path:
    """A real TLC sample shipped with the tests (see data/README.md)."""
    path = DATA / name
    assert path.exists(), f"no test sample {path}"
    return path


@dataclass
class PostgresUnderTest:
    host: str
    port: int
    user: str
    password: str
    database: str
    server: LocalPostgres | None = None  # None when the suite uses an external server

    def resource(self) -> PostgresResource:
        return PostgresResource(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
        )

    @property
    def uri(self) -> str:
        return self.resource().uri()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> PostgresUnderTest:
    """The suite's PostgreSQL: TAXI_TEST_POSTGRES_URL if set, else one the suite starts."""
    external = os.environ.get("TAXI_TEST_POSTGRES_URL")
    if external:
        url = urllib.parse.urlparse(external)
        yield PostgresUnderTest(
            url.hostname or "127.0.0.1",
            url.port or 5432,
            urllib.parse.unquote(url.username or "postgres"),
            urllib.parse.unquote(url.password or ""),
            url.path.lstrip("/") or "postgres",
        )
        return
    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data", free_port()).start()
    try:
        yield PostgresUnderTest(server.host, server.port, "postgres", "", "postgres", server)
    finally:
        server.stop(mode="immediate")


@dataclass
class HttpSource:
    """A loopback HTTP server that publishes files under the TLC names, and can misbehave."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)
    # file name -> fault: ("cut", n_bytes) closes the connection after n bytes;
    # ("short", n_bytes) claims the full length but sends n bytes; ("status", code);
    # ("length", n_bytes) sends a Content-Length of n and exactly n bytes, a wrong length no
    # byte count can catch; ("hang", n_bytes) sends n bytes, then waits for `release`.
    # A third element, ("cut", n, times), limits the fault to `times` GETs of the file: later
    # ones are served whole, as by a server that recovers.
    faults: dict[str, tuple] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    _faulted: dict[str, int] = field(default_factory=dict)

    def publish(self, month: str, sample_name: str) -> None:
        shutil.copyfile(sample(sample_name), self.root / f"yellow_tripdata_{month}.csv.gz")

    def publish_bytes(self, month: str, data: bytes, dataset: str = "yellow") -> None:
        (self.root / f"{dataset}_tripdata_{month}.csv.gz").write_bytes(data)

    def clear(self) -> None:
        for path in self.root.iterdir():
            path.unlink()
        self.requests.clear()
        self.faults.clear()
        self._faulted.clear()
        # Hung responses end now; a fresh event keeps the next test's "hang" faults hanging.
        self.release.set()
        self.release = threading.Event()

    def fault_for(self, name: str) -> tuple[str, int] | None:
        """The fault for this GET of `name`, if it still has GETs to spoil."""
        fault = self.faults.get(name)
        if fault is None or (len(fault) > 2 and self._faulted.get(name, 0) >= fault[2]):
            return None
        self._faulted[name] = self._faulted.get(name, 0) + 1
        return fault[0], fault[1]


def _handler(source: HttpSource):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _file(self) -> Path | None:
            name = urllib.parse.unquote(self.path.lstrip("/"))
            path = source.root / name
            return path if "/" not in name and path.is_file() else None

        def do_HEAD(self):
            source.requests.append(f"HEAD {self.path}")
            path = self._file()
            self.send_response(200 if path else 404)
            self.send_header("Content-Length", str(path.stat().st_size if path else 0))
            self.end_headers()

        def do_GET(self):
            source.requests.append(f"GET {self.path}")
            path = self._file()
            fault = source.fault_for(path.name) if path else None
            if path is None or (fault and fault[0] == "status"):
                code = fault[1] if fault else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            release = source.release  # the event of the test that set this fault
            if fault and fault[0] == "length":
                data = data[: fault[1]]
                fault = None
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault:
                self.wfile.write(data[: fault[1]])
                self.wfile.flush()
                if fault[0] == "hang":
                    release.wait(timeout=120)
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


@pytest.fixture(scope="session")
def _http_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    source = HttpSource(root=root, url="")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(source))
    source.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield source
    server.shutdown()


@pytest.fixture
def http_source(_http_server) -> HttpSource:
    _http_server.clear()
    yield _http_server
    _http_server.clear()


@pytest.fixture(scope="session")
def _feed(tmp_path_factory):
    # Imported here: tlc_feed.py builds its files from this module's samples.
    from taxi_assets_tests.tlc_feed import start_feed

    feed, server = start_feed(tmp_path_factory.mktemp("tlc"))
    yield feed
    server.shutdown()


@pytest.fixture
def feed(_feed):
    """The TLC's Parquet feed on loopback (tlc_feed.py), empty at the start of each test."""
    _feed.clear()
    yield _feed
    _feed.clear()


@pytest.fixture
def fresh_postgres(postgres):
    """The suite's PostgreSQL without the ny_taxi schema: no table of an earlier test."""
    with psycopg.connect(postgres.uri, autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    return postgres
