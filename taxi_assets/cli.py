"""`python -m taxi_assets.cli {run,backfill,dev,postgres,stop}`: the Makefile's entry points.

On the local profile it first starts the project's own PostgreSQL (data under TAXI_HOME), which
holds both the sink tables and Dagster's run, event-log and schedule storage. `run` is
month_run.py's, `dev` dev_server.py's and `backfill` backfill/'s.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import warnings

from taxi_assets import dev_server, first_line, settings
from taxi_assets.datasets import DATASETS, TripDataset
from taxi_assets.defs.resources import PROJECT_ROOT, local_pg_port
from taxi_assets.month_run import print_locations, run


def quiet_framework_warnings() -> None:
    """A notice no user of the project can act on (the package itself silences Dagster's
    Beta/Preview ones): platformdirs' about a variable containers often lack."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


def log_level(verbose: bool) -> str:
    return "DEBUG" if verbose else settings.value("LOG_LEVEL").upper()


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


# --- run and backfill ------------------------------------------------------------------------


def chosen_datasets(name: str) -> list[TripDataset]:
    """The datasets --dataset (DATASET) names: one, or `all`; exits naming the setting."""
    if name == "all":
        return list(DATASETS.values())
    if name not in DATASETS:
        sys.exit(f"--dataset {name} (DATASET): choose one of {', '.join(DATASETS)} or all")
    return [DATASETS[name]]


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
    from taxi_assets.instance_setup import exits_when_dagster_storage_fails

    try:
        with exits_when_dagster_storage_fails(
            then="The backfill stays as it is: run the same command again once the database "
            "answers, and it carries on"
        ):
            code = run_backfill(
                datasets,
                first,
                last,
                taxi_source=configured_source(),
                workspace_yaml=PROJECT_ROOT / "workspace.yaml",
                webserver_url=dev_server.ui_url(),
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
    host = dev_server.webserver_host()
    if port is not None:
        os.environ["DAGSTER_WEBSERVER_PORT"] = str(port)
    port = dev_server.webserver_port()
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
    from taxi_assets.storage.local_postgres import LocalPostgres

    server = LocalPostgres(settings.taxi_home() / "pgdata", local_pg_port())
    port = server.running_port()
    if port is None:
        print(f"Nothing to stop: the project's PostgreSQL ({server.data_dir}) is not running.")
    else:
        server.stop()
        print(f"Stopped the project's PostgreSQL on port {port} ({server.data_dir}).")
    ui = dev_server.running_ui(settings.taxi_home())
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
        help=f"the UI's port (default DAGSTER_WEBSERVER_PORT or {dev_server.WEBSERVER_PORT})",
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
