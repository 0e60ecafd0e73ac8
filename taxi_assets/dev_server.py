"""`make dev`: one UI and one daemon per instance, and a terminal that says what the runs did.

A running `make dev` records its process and address in TAXI_HOME/dev.json; a second `make dev`
of the same instance finds it, prints its address and starts nothing. A daemon of the instance
started otherwise (`dagster-daemon run`, a container) is seen by its heartbeats: `make dev` then
starts the UI only, so no second daemon competes for the same schedules and backfills.

Unless `-v`, the webserver and daemon log warnings only, and this process prints a line as
each run starts, succeeds or fails (with its cause and the page of its trace).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from taxi_assets import console, human, settings

RECORD_NAME = "dev.json"
WEBSERVER_PORT = int(settings.BY_NAME["DAGSTER_WEBSERVER_PORT"].default)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_RECORD = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")  # a record's first line
RUN_ID = re.compile(r" - [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} - ")
# A daemon posts a heartbeat every 30 s: two missed ones and it is gone.
HEARTBEAT_SECONDS = 30
DAEMON_GONE_AFTER_SECONDS = 70
POLL_SECONDS = 2.0


def _answers(url: str) -> dict | None:
    """The Dagster webserver's /server_info at `url`, None when nothing Dagster answers there."""
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=3) as response:
            info = json.load(response)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "dagster_webserver_version" in info else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_ui(home: Path) -> tuple[int, str] | None:
    """The process and address of the `make dev` serving this instance, if one is up."""
    try:
        record = json.loads((home / RECORD_NAME).read_text())
        pid, url = int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pid, url) if _alive(pid) and _answers(url) else None


def webserver_port() -> int:
    return int(settings.value("DAGSTER_WEBSERVER_PORT"))


def webserver_host() -> str:
    return settings.value("DAGSTER_HOST")


def webserver_url() -> str:
    return f"http://{webserver_host()}:{webserver_port()}"


def ui_url() -> str:
    """The address of this instance's running UI, else where `make dev` would serve it."""
    running = running_ui(settings.taxi_home())
    return running[1] if running else webserver_url()


def is_dagster_ui(url: str) -> bool:
    return _answers(url) is not None


def running_daemon(instance) -> float | None:
    """Seconds since a running daemon of this instance last posted a heartbeat; None if none
    runs. A recent heartbeat may be the last of a daemon just killed: then a newer one must come
    within the heartbeat interval."""
    newest = _newest_heartbeat(instance)
    if newest is None or time.time() - newest > DAEMON_GONE_AFTER_SECONDS:
        return None
    if time.time() - newest > POLL_SECONDS:
        print("Waiting for the heartbeat of a daemon of this instance, to tell whether it runs.")
        while time.time() - newest <= HEARTBEAT_SECONDS + 5:
            time.sleep(POLL_SECONDS)
            latest = _newest_heartbeat(instance)
            if latest is not None and latest > newest:
                return time.time() - latest
        return None
    return time.time() - newest


def _newest_heartbeat(instance) -> float | None:
    beats = instance.get_daemon_heartbeats().values()
    return max((beat.timestamp for beat in beats), default=None)


@contextlib.contextmanager
def recorded(home: Path, url: str):
    path = home / RECORD_NAME
    path.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


# --- the runs, as they start and end ---------------------------------------------------------


def _clock() -> str:
    return f"{dt.datetime.now():%H:%M:%S}"


def run_failure(instance, run_id: str) -> str:
    import dagster as dg

    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
    ).records:
        event = record.event_log_entry.dagster_event
        return f"{event.step_key}: {console.failure_cause(event.event_specific_data)}"
    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1
    ).records:
        return record.event_log_entry.message or "the run failed"
    return "the run failed"


def run_lines(instance, url: str, stop: threading.Event) -> None:
    """Print a line as each run of the instance starts and ends, until `stop`."""
    import dagster as dg

    seen: dict[str, dg.DagsterRunStatus] = {}
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=POLL_SECONDS)
    done = {
        dg.DagsterRunStatus.SUCCESS: "succeeded",
        dg.DagsterRunStatus.FAILURE: "FAILED",
        dg.DagsterRunStatus.CANCELED: "canceled",
    }
    while not stop.wait(POLL_SECONDS):
        try:
            records = instance.get_run_records(
                filters=dg.RunsFilter(updated_after=since), order_by="update_timestamp"
            )
        except Exception:  # the storage restarting: try again at the next poll
            continue
        for record in sorted(records, key=lambda r: r.update_timestamp):
            run, status = record.dagster_run, record.dagster_run.status
            since = max(since, record.update_timestamp)
            if seen.get(run.run_id) == status:
                continue
            seen[run.run_id] = status
            if status == dg.DagsterRunStatus.STARTED:
                print(f"{_clock()} {console.run_line(run)} started", flush=True)
            elif status in done:
                took = ""
                if record.start_time and record.end_time:
                    took = f" in {human.duration(record.end_time - record.start_time)}"
                line = f"{_clock()} {console.run_line(run)} {done[status]}{took}"
                if status == dg.DagsterRunStatus.FAILURE:
                    line += f": {run_failure(instance, run.run_id)} ({url}/runs/{run.run_id})"
                print(line, flush=True)


def without_run_output(lines: Iterable[str]) -> Iterator[str]:
    """The services' lines, without the records (and their stack traces) that run workers
    print: `run_lines` says how each run ended, and its page has the rest."""
    in_run_record = False
    for line in lines:
        plain = ANSI.sub("", line)
        if LOG_RECORD.match(plain):
            in_run_record = RUN_ID.search(plain) is not None
        if not in_run_record:
            yield line


# --- make dev --------------------------------------------------------------------------------


def serve(home: Path, host: str, port: int, verbose: bool, workspace: Path) -> int:
    """`dg dev` (the project's code location, webserver and daemon) on this instance, or the
    webserver alone on `workspace` when a daemon already runs."""
    import dagster as dg

    url = f"http://{host}:{port}"
    instance = dg.DagsterInstance.get()
    daemon_age = running_daemon(instance)
    level = "debug" if verbose else "warning"
    if daemon_age is None:
        argv = ["dg", "dev", "--log-level", level, "--code-server-log-level", level]
        argv += ["--host", host, "--port", str(port)]
    else:
        print(
            f"A daemon of this instance is already running (its last heartbeat {daemon_age:.0f} s "
            "ago): starting the UI only, without a second daemon.",
            flush=True,
        )
        argv = ["dagster-webserver", "--uvicorn-log-level", level, "--dagster-log-level", level]
        argv += ["--code-server-log-level", level, "-w", str(workspace)]
        argv += ["-h", host, "-p", str(port)]
    print(f"The Dagster UI: {url} (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    lines = threading.Thread(target=run_lines, args=(instance, url, stop), daemon=True)
    # Ctrl-C reaches the child too (one process group): it shuts down, and so do we after it.
    # A handler, not SIG_IGN, which the child would inherit and keep running.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        with recorded(home, url):
            child = subprocess.Popen(
                argv,
                cwd=workspace.parent,
                # The environment `dg` finds in the project: it warns when none is active.
                env={**os.environ, "VIRTUAL_ENV": sys.prefix},
                stdout=None if verbose else subprocess.PIPE,
                stderr=None if verbose else subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            signal.signal(signal.SIGTERM, lambda *_: child.terminate())
            if not verbose:
                lines.start()
                for line in without_run_output(child.stdout):
                    print(line, end="", flush=True)
            code = child.wait()
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
    if daemon_age is None:
        # Its daemon is gone with it: the next `make dev` must not take its last heartbeat for
        # a running daemon.
        with contextlib.suppress(Exception):
            instance.wipe_daemon_heartbeats()
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


def already_running(home: Path) -> str | None:
    """What to say when a `make dev` of this instance is up, instead of starting another."""
    running = running_ui(home)
    if running is None:
        return None
    pid, url = running
    return (
        f"The Dagster UI of this instance is already running: {url} (`make dev`, process {pid}). "
        "Open it there; a second one would start a second daemon on the same instance."
    )


def port_taken(host: str, port: int) -> str:
    url = f"http://{host}:{port}"
    who = (
        "a Dagster UI of another instance (another DAGSTER_HOME, TAXI_HOME or checkout)"
        if is_dagster_ui(url)
        else "another program"
    )
    return (
        f"{host}:{port} is in use by {who}: choose another port for the UI with "
        f"`make dev PORT={port + 1}` (or DAGSTER_WEBSERVER_PORT={port + 1})."
    )
