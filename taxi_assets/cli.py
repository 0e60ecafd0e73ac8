"""`python -m taxi_assets.cli {run,backfill,dev,postgres,stop}`: the Makefile's entry points.

On the local profile it first starts the project's own PostgreSQL (data under TAXI_HOME), which
holds both the sink tables and Dagster's run, event-log and schedule storage. Runs started here
are runs of workspace.yaml's code location, as if launched from the UI, but executed in this
terminal: `make dev` lists them under their job and re-executes them.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys
import time
import warnings

import dagster as dg
import pyarrow as pa

from taxi_assets import console, first_line, settings
from taxi_assets.datasets import DATASETS, TripDataset
from taxi_assets.defs.resources import PROJECT_ROOT, local_pg_port

LOCATION_NAME = "taxi_assets"  # the code location: workspace.yaml's, and the `dg` project's
WEBSERVER_PORT = int(settings.BY_NAME["DAGSTER_WEBSERVER_PORT"].default)


def quiet_framework_warnings() -> None:
    """A notice no user of the project can act on (the package itself silences Dagster's
    Beta/Preview ones): platformdirs' about a variable containers often lack."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def log_level(verbose: bool) -> str:
    return "DEBUG" if verbose else settings.value("LOG_LEVEL").upper()


def webserver_port() -> int:
    return int(settings.value("DAGSTER_WEBSERVER_PORT"))


def webserver_host() -> str:
    return settings.value("DAGSTER_HOST")


def webserver_url() -> str:
    return f"http://{webserver_host()}:{webserver_port()}"


def ui_url() -> str:
    """The address of this instance's running UI, else where `make dev` would serve it."""
    from taxi_assets.dev_server import running_ui

    running = running_ui(settings.taxi_home())
    return running[1] if running else webserver_url()


# --- the instance and the local PostgreSQL ---------------------------------------------------


def instance_storage_url(url: str) -> str:
    """Dagster's storage on this server, without waiting for a disk flush per event.

    A run writes hundreds of events; at worst a crash loses the last fraction of a second of
    them. The sink's data is written by other connections and keeps full durability.
    """
    return f"{url}?options=-c%20synchronous_commit%3Doff"


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens there. A connection, not a bind: a bind also fails while
    connections of a server just stopped linger in TIME_WAIT, which would not stop a server."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def start_local_postgres(home, port: int):
    """The project's PostgreSQL on `port`; exits naming TAXI_PG_PORT when that cannot be."""
    from taxi_assets.storage.local_postgres import LocalPostgres

    server = LocalPostgres(home / "pgdata", port)
    running = server.running_port()
    if running is not None and running != port:
        sys.exit(
            f"The project's PostgreSQL ({server.data_dir}) is already running on port "
            f"{running}, not on TAXI_PG_PORT={port}: use TAXI_PG_PORT={running}, or "
            "`make stop` it first."
        )
    setting = f"set TAXI_PG_PORT to a free port (e.g. TAXI_PG_PORT={port + 1} make run)"
    if running is None and port_in_use(server.host, port):
        sys.exit(f"{server.host}:{port} is in use by another program: {setting}.")
    try:
        return server.start()
    except RuntimeError as error:
        if "Address already in use" not in str(error):
            raise
        sys.exit(
            f"PostgreSQL could not listen on {server.host}:{port}, which is in use (by "
            "another program, or for a while by the last connections of a server that "
            f"stopped there): {setting}, or retry later."
        )


def prepare_environment() -> None:
    """Point Dagster at this project's instance and, locally, at the embedded PostgreSQL."""
    os.environ.setdefault("DAGSTER_HOME", settings.value("DAGSTER_HOME"))
    # dagster.yaml turns telemetry off, but the webserver and the daemon still make its folders
    # (logs/, .logs_queue/) in DAGSTER_HOME, the checkout, unless this is set.
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    from taxi_assets.instance_setup import set_up_instance, setup_lock

    home = settings.taxi_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["TAXI_HOME"] = str(home)
    with setup_lock(home):  # runs started together: one sets the instance up, the others wait
        if settings.profile() == "local":
            server = start_local_postgres(home, local_pg_port())
            os.environ.setdefault("DAGSTER_PG_URL", instance_storage_url(server.url))
        elif not settings.is_set("DAGSTER_PG_URL"):
            sys.exit("TAXI_PROFILE=gcp needs DAGSTER_PG_URL (the PostgreSQL for Dagster's storage)")
        set_up_instance()


# --- run -------------------------------------------------------------------------------------


def chosen_datasets(name: str) -> list[TripDataset]:
    """The datasets --dataset (DATASET) names: one, or `all`; exits naming the setting."""
    if name == "all":
        return list(DATASETS.values())
    if name not in DATASETS:
        sys.exit(f"--dataset {name} (DATASET): choose one of {', '.join(DATASETS)} or all")
    return [DATASETS[name]]


def month_partitions(dataset: TripDataset, month: str) -> tuple[str, list[str]]:
    """The month's partition key and its days; exits naming --month when it is not one."""
    from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
    from taxi_assets.defs.resources import MonthNotCarried, configured_source
    from taxi_assets.tlc.source import SourceNotPublished

    key = f"{month}-01"
    try:
        configured_source().check_month(dataset, month)
    except (MonthNotCarried, SourceNotPublished) as error:
        sys.exit(f"--month {month}: {error}")
    days = daily_partitions.get_partition_keys_in_time_window(
        monthly_partitions.time_window_for_partition_key(key)
    )
    return key, days


def range_tags(days: list[str]) -> dict[str, str]:
    """A run over `days`, as a single-run backfill launches it."""
    return {
        "dagster/asset_partition_range_start": days[0],
        "dagster/asset_partition_range_end": days[-1],
    }


def check_published(dataset: TripDataset, month: str) -> None:
    """Exit, before any run is created, when the source answers that it lacks the month's file:
    a month not published is no failed run in the UI, and no sink was touched. A source that
    does not answer is left to the run, whose download retries and says why."""
    from taxi_assets.defs.resources import configured_source
    from taxi_assets.tlc.source import SourceNotPublished

    try:
        configured_source().remote(dataset, month)
    except SourceNotPublished as error:
        sys.exit(
            f"--month {month}: {error}\nNothing was run; every sink is as it was.\n"
            f"Setting that fixes it: {console.SETTING_FOR_ERROR['URLError']}"
        )
    except (OSError, ValueError, http.client.HTTPException):
        pass


def run(
    month: str,
    datasets: list[TripDataset],
    daily_assets: list[str] | None = None,
    level: str = "INFO",
) -> list[dg.ExecutionResult]:
    """For each dataset, the month's monthly job, then its days as one single-run backfill of
    the daily job; for all of them, the zones before and the dbt models after.

    Each run is created as a UI launch creates it and executed here, in one process (the
    in-process executor), without keeping outputs in memory. `daily_assets` (of one dataset's
    day run; the bench's) narrows the day runs to those assets (default: all of them). Returns the (closed) results; when a run
    fails, ends with its cause and exits.
    """
    from taxi_assets.dagster_private import (
        WorkspaceLocation,
        execute_in_process,
        pooled_storage_connections,
    )
    from taxi_assets.defs.resources import configured_source, source_run_config
    from taxi_assets.run_health import prepare_run

    planned = [(dataset, *month_partitions(dataset, month)) for dataset in datasets]
    for dataset in datasets:
        check_published(dataset, month)
    day_selection = [dg.AssetKey.from_user_string(a) for a in daily_assets or []] or None
    runs = [
        run
        for dataset, key, days in planned
        for run in (
            (dataset.monthly_job, {"dagster/partition": key}, None),
            (dataset.daily_job, range_tags(days), day_selection),
        )
    ]
    if daily_assets is None and len(datasets) == len(DATASETS):
        # Every dataset: the zones first, and the dbt models over the month's days last.
        from taxi_assets.defs.analytics.dbt import ANALYTICS_JOB
        from taxi_assets.defs.zones import ZONES_JOB

        days = planned[0][2]
        runs = [(ZONES_JOB, {}, None), *runs, (ANALYTICS_JOB, range_tags(days), None)]
    instance = dg.DagsterInstance.get()
    results = []
    with (
        pooled_storage_connections(instance),
        WorkspaceLocation.open(
            PROJECT_ROOT / "workspace.yaml", LOCATION_NAME, instance
        ) as location,
    ):
        # The module the location has just loaded: the job's pools, for prepare_run.
        from taxi_assets.definitions import defs

        for job, tags, selection in runs:
            prepare_run(
                instance, defs.resolve_job_def(job), runs_are_local=settings.profile() == "local"
            )  # see run_health
            dagster_run = location.create_run(
                instance,
                job,
                tags=tags,
                asset_selection=selection,
                # The source goes with the run: a re-execution from the UI reads the same files.
                run_config=console.run_config(level) | source_run_config(configured_source()),
            )
            print(console.run_line(dagster_run), flush=True)
            with execute_in_process(dagster_run, instance) as result:
                results.append(result)
            # Hand the run's freed buffers back to the OS before the next run, so a backfill of
            # many months in one process stays at one month's peak.
            pa.default_memory_pool().release_unused()
            if not result.success:
                print(
                    "\n" + "\n".join(console.failure_summary(result, ui_url(), results[:-1])),
                    flush=True,
                )
                sys.exit(1)
    return results


def print_locations(month: str, datasets: list[TripDataset], results: list, seconds: float) -> None:
    table = console.closing_table(
        month, console.landed(results), seconds, datasets, console.outside_window(results)
    )
    print("\n" + "\n".join(table))
    ui = ui_url()
    if settings.profile() == "local":
        server = settings.value("DAGSTER_PG_URL").split("?")[0]
        print(f"PostgreSQL: {server} (psql it); the runs: `make dev`, then {ui}")
    for dataset in datasets:
        print(
            f"The {dataset.title} month in the UI: {ui}/assets/{dataset.cleaned_asset}"
            f"?view=partitions&partition={month}-01"
        )


def check_backfill_range(first: str, last: str) -> None:
    """Exits naming FROM or TO when they are not a range of months, before anything starts."""
    from taxi_assets.backfill.plan import BackfillRangeError, month_range

    try:
        month_range(first, last)
    except BackfillRangeError as error:
        sys.exit(str(error))


def backfill(datasets: list[TripDataset], first: str, last: str) -> None:
    from taxi_assets.backfill.run import run_backfill
    from taxi_assets.defs.resources import MonthNotCarried, configured_source

    try:
        code = run_backfill(
            datasets,
            first,
            last,
            taxi_source=configured_source(),
            workspace_yaml=PROJECT_ROOT / "workspace.yaml",
            webserver_url=ui_url(),
            runs_are_local=settings.profile() == "local",
            runs_log=settings.taxi_home() / "storage" / "backfill_runs.log",
        )
    except MonthNotCarried as error:
        sys.exit(f"TAXI_SOURCE: {error}")
    except OSError as error:  # the plan HEADs the source: unreachable or throttled
        sys.exit(f"The source did not answer (TAXI_SOURCE_URL): {error}")
    sys.exit(code)


# --- dev -------------------------------------------------------------------------------------


def dev(port: int | None, verbose: bool) -> None:
    """`dg dev` (webserver and daemon) on this instance, unless one already serves it;
    exits naming the setting when the port is taken."""
    from taxi_assets import dev_server

    host = webserver_host()
    if port is not None:
        os.environ["DAGSTER_WEBSERVER_PORT"] = str(port)
    port = webserver_port()
    running = dev_server.already_running(settings.taxi_home())
    if running:
        print(running)
        return
    if port_in_use(host, port):
        sys.exit(dev_server.port_taken(host, port))
    sys.exit(
        dev_server.serve(settings.taxi_home(), host, port, verbose, PROJECT_ROOT / "workspace.yaml")
    )


def stop() -> None:
    """Stop the project's PostgreSQL, saying what was stopped (or that nothing ran)."""
    from taxi_assets.dev_server import running_ui
    from taxi_assets.storage.local_postgres import LocalPostgres

    server = LocalPostgres(settings.taxi_home() / "pgdata", local_pg_port())
    port = server.running_port()
    if port is None:
        print(f"Nothing to stop: the project's PostgreSQL ({server.data_dir}) is not running.")
    else:
        server.stop()
        print(f"Stopped the project's PostgreSQL on port {port} ({server.data_dir}).")
    ui = running_ui(settings.taxi_home())
    if ui is not None:
        print(f"`make dev` (process {ui[0]}, {ui[1]}) still runs: Ctrl-C it in its terminal.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taxi_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the whole pipeline for a month")
    run_parser.add_argument(
        "--month",
        default=first_line.DEFAULT_MONTH,
        help=f"YYYY-MM (default {first_line.DEFAULT_MONTH})",
    )
    run_parser.add_argument(
        "--dataset",
        default=first_line.DEFAULT_DATASET,
        help="yellow (the default), green, or all: each dataset's jobs in turn",
    )
    run_parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every Dagster event (LOG_LEVEL=DEBUG does the same)",
    )
    backfill_parser = commands.add_parser(
        "backfill", help="every asset of a range of months, as one Dagster backfill per dataset"
    )
    backfill_parser.add_argument("--from", dest="first", required=True, help="YYYY-MM (FROM)")
    backfill_parser.add_argument("--to", dest="last", required=True, help="YYYY-MM (TO)")
    backfill_parser.add_argument(
        "--dataset", default="yellow", help="yellow (the default), green, or all"
    )
    dev_parser = commands.add_parser("dev", help="the Dagster UI and daemon on the same instance")
    dev_parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"the UI's port (default DAGSTER_WEBSERVER_PORT or {WEBSERVER_PORT})",
    )
    dev_parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the webserver's and daemon's own logs (LOG_LEVEL=DEBUG does the same)",
    )
    commands.add_parser("postgres", help="start the local PostgreSQL and print its URL")
    commands.add_parser("stop", help="stop the local PostgreSQL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_framework_warnings()
    if args.command == "stop":
        stop()
        return
    datasets = chosen_datasets(args.dataset) if args.command in ("run", "backfill") else []
    if args.command == "backfill":
        check_backfill_range(args.first, args.last)
    if args.command == "run" and not first_line.announced:  # else said as the package loaded
        first_line.announce(args.month, [dataset.name for dataset in datasets])
    prepare_environment()
    if args.command == "postgres":
        print(settings.value("DAGSTER_PG_URL"))
    elif args.command == "run":
        start = time.monotonic()
        results = run(args.month, datasets, level=log_level(args.verbose))
        print_locations(args.month, datasets, results, time.monotonic() - start)
    elif args.command == "backfill":
        backfill(datasets, args.first, args.last)
    elif args.command == "dev":
        dev(args.port, log_level(args.verbose) == "DEBUG")


if __name__ == "__main__":
    main()
