"""Dagster's own processes, started as a user starts them, for tests that need the real thing.

`dagster-webserver`, `dagster-daemon run` and `dagster code-server start` run as subprocesses of
the test with this repository's `workspace.yaml` and a copy of its `dagster.yaml` in a temporary
DAGSTER_HOME, so a test never touches the project's `.local/`. Each gets a free loopback port
where it listens, writes its output to a log file the test can show on failure, and is stopped
with SIGTERM (then SIGKILL for its whole process group: the code servers and run workers it
started) when the test is done.

Typical use, in a module-scoped fixture:

    env = dagster_env(tmp, dagster_pg_url=create_database(postgres, "dagster_mytest"),
                      source_url=http_source.url, postgres=postgres)
    with dagster_stack(env, tmp / "logs") as stack:     # webserver + daemon
        stack.graphql(QUERY, {...})
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from taxi_assets.storage.local_postgres import free_port
from taxi_assets.defs.resources import PostgresResource

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
DAGSTER_YAML = REPO_ROOT / "dagster.yaml"
BIN = Path(sys.executable).parent
T = TypeVar("T")

# Generous: a cold start imports Dagster and pandas on a 2-core machine. These only bound a
# hang; nothing asserts how long anything took.
START_TIMEOUT = 300.0


# --- environment -----------------------------------------------------------------------------


def create_database(postgres, name: str) -> str:
    """A fresh, empty database in the suite's PostgreSQL; returns its URL."""
    with psycopg.connect(postgres.uri, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PostgresResource(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        database=name,
    ).uri()


def dagster_env(
    tmp: Path,
    *,
    dagster_pg_url: str,
    source_url: str,
    postgres,
    profile: str = "local",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment for Dagster processes: instance in `tmp/dagster_home` (the repo's
    dagster.yaml, copied), state in `tmp/taxi_home`, data from `source_url`, sinks in `postgres`."""
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    taxi_home = tmp / "taxi_home"
    taxi_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_pg_url,
        "TAXI_PROFILE": profile,
        "TAXI_HOME": str(taxi_home),
        "TAXI_SOURCE_URL": source_url,
        "TAXI_PG_HOST": postgres.host,
        "TAXI_PG_PORT": str(postgres.port),
        "TAXI_PG_USER": postgres.user,
        "TAXI_PG_PASSWORD": postgres.password,
        "TAXI_PG_DB": postgres.database,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


# --- processes -------------------------------------------------------------------------------


@dataclass
class DagsterProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive else f"exited with {self.popen.returncode}"
        return f"--- {self.name} ({state}), {self.log_path}:\n{self.log_tail()}"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM for a clean shutdown, then SIGKILL for whatever is left of its process group
        (it was started in a session of its own, so the group is its children and nothing else)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def start_process(
    name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO_ROOT
) -> DagsterProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [str(a) for a in argv],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return DagsterProcess(name, [str(a) for a in argv], popen, log_path)


class ProcessFailed(RuntimeError):
    pass


def wait_until(
    check: Callable[[], T | None],
    what: str,
    processes: Sequence[DagsterProcess] = (),
    timeout: float = START_TIMEOUT,
    interval: float = 0.5,
) -> T:
    """Poll `check` until it returns something truthy; fail early, with the logs, if one of
    `processes` dies, and with the logs if `timeout` passes (a hang guard, not an assertion)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        for process in processes:
            if not process.alive:
                raise ProcessFailed(
                    f"{process.name} died while waiting for {what}\n" + process.describe()
                )
        try:
            result = check()
            if result:
                return result
        except (OSError, GraphQLError) as error:  # not listening yet, or not loaded yet
            last_error = error
        if time.monotonic() > deadline:
            logs = "\n".join(p.describe() for p in processes)
            raise TimeoutError(
                f"gave up waiting for {what} after {timeout:.0f}s "
                f"(last error: {last_error})\n{logs}"
            )
        time.sleep(interval)


# --- GraphQL ---------------------------------------------------------------------------------


class GraphQLError(RuntimeError):
    pass


@dataclass
class GraphQLClient:
    """The webserver's /graphql endpoint: the same API the UI uses."""

    url: str
    timeout: float = 60.0

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            raise GraphQLError(f"HTTP {error.code}: {error.read()[:2000]!r}") from error
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"], indent=1)[:4000])
        return payload["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""

DAEMON_HEALTH_QUERY = """
{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""


def loaded_locations(graphql: GraphQLClient) -> list[str] | None:
    """The workspace's code locations once all have loaded; raises if one failed to load."""
    workspace = graphql(WORKSPACE_QUERY)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise ProcessFailed(f"workspace failed: {workspace}")
    entries = workspace["locationEntries"]
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return None
    for entry in entries:
        location = entry["locationOrLoadError"]
        if location and location["__typename"] == "PythonError":
            raise ProcessFailed(
                f"code location {entry['name']} failed to load: {location['message']}"
            )
    return [e["name"] for e in entries]


def healthy_daemons(graphql: GraphQLClient) -> list[str] | None:
    statuses = graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = [s for s in statuses if s["required"]]
    if required and all(s["healthy"] for s in required):
        return [s["daemonType"] for s in required]
    return None


# --- the three Dagster processes -------------------------------------------------------------


@dataclass
class Webserver:
    process: DagsterProcess
    url: str
    graphql: GraphQLClient = field(init=False)

    def __post_init__(self):
        self.graphql = GraphQLClient(f"{self.url}/graphql")


def start_webserver(
    env: dict[str, str],
    log_dir: Path,
    *,
    workspace: Path = WORKSPACE,
    extra_args: Sequence[str] = (),
    name: str = "webserver",
) -> Webserver:
    """`dagster-webserver` on a free loopback port; returns once its code locations loaded."""
    port = free_port()
    process = start_process(
        name,
        [
            BIN / "dagster-webserver",
            *(["-w", workspace] if workspace else []),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            *extra_args,
        ],
        env,
        log_dir,
    )
    server = Webserver(process, f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: _http_ok(f"{server.url}/server_info"), f"{name} to listen", [process])
        wait_until(lambda: loaded_locations(server.graphql), f"{name}'s code locations", [process])
    except BaseException:
        process.stop()
        raise
    return server


def start_daemon(
    env: dict[str, str],
    log_dir: Path,
    *,
    workspace: Path = WORKSPACE,
    extra_args: Sequence[str] = (),
    name: str = "daemon",
) -> DagsterProcess:
    """`dagster-daemon run`; use `wait_for_daemons` (needs a webserver) to know it is up."""
    return start_process(
        name,
        [BIN / "dagster-daemon", "run", *(["-w", workspace] if workspace else []), *extra_args],
        env,
        log_dir,
    )


def wait_for_daemons(graphql: GraphQLClient, processes: Sequence[DagsterProcess]) -> list[str]:
    """Until every required daemon (scheduler, sensors, run queue, backfills, automation) has
    sent a heartbeat to the instance."""
    return wait_until(lambda: healthy_daemons(graphql), "the daemons' heartbeats", processes)


def start_code_server(
    env: dict[str, str],
    log_dir: Path,
    *,
    module: str = "taxi_assets.definitions",
    location_name: str = "taxi_assets",
    host: str = "127.0.0.1",
    name: str = "code-server",
) -> tuple[DagsterProcess, int]:
    """`dagster code-server start` on a free port; returns once it answers a gRPC health check."""
    port = free_port(host)
    process = start_process(
        name,
        [
            BIN / "dagster",
            "code-server",
            "start",
            "-m",
            module,
            "-h",
            host,
            "-p",
            str(port),
            "--location-name",
            location_name,
        ],
        env,
        log_dir,
    )

    def healthy() -> bool:
        return (
            subprocess.run(
                [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port), "--host", host],
                env=env,
                capture_output=True,
                timeout=60,
            ).returncode
            == 0
        )

    try:
        wait_until(healthy, f"{name} on port {port}", [process], interval=1.0)
    except BaseException:
        process.stop()
        raise
    return process, port


@dataclass
class DagsterStack:
    webserver: Webserver
    daemon: DagsterProcess
    env: dict[str, str]
    log_dir: Path

    @property
    def graphql(self) -> GraphQLClient:
        return self.webserver.graphql

    @property
    def processes(self) -> list[DagsterProcess]:
        return [self.webserver.process, self.daemon]

    def logs(self) -> str:
        return "\n".join(p.describe() for p in self.processes)

    def wait_until(self, check: Callable[[], T | None], what: str, timeout: float) -> T:
        return wait_until(check, what, self.processes, timeout=timeout, interval=1.0)


@contextlib.contextmanager
def dagster_stack(
    env: dict[str, str], log_dir: Path, *, workspace: Path = WORKSPACE
) -> Iterator[DagsterStack]:
    """A webserver and a daemon over one instance, as `dagster dev` runs them; stopped on exit."""
    webserver = start_webserver(env, log_dir, workspace=workspace)
    daemon = None
    try:
        daemon = start_daemon(env, log_dir, workspace=workspace)
        wait_for_daemons(webserver.graphql, [webserver.process, daemon])
        yield DagsterStack(webserver, daemon, env, log_dir)
    finally:
        if daemon is not None:
            daemon.stop()
        webserver.process.stop()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200
