"""`python -m taxi_assets.cli {run,dev,postgres,stop}`: the Makefile's entry points.

On the local profile it first starts the project's own PostgreSQL (data under TAXI_HOME), which
holds both the sink tables and Dagster's run, event-log and schedule storage.
"""

from __future__ import annotations

import argparse
import os
import sys

import dagster as dg
import pyarrow as pa

from taxi_assets.resources import LOCAL_PG_PORT, PROJECT_ROOT, taxi_home


def _profile() -> str:
    return os.environ.get("TAXI_PROFILE", "local")


def instance_storage_url(url: str) -> str:
    """Dagster's storage on this server, without waiting for a disk flush per event.

    A run writes hundreds of events; at worst a crash loses the last fraction of a second of
    them. The sink's data is written by other connections and keeps full durability.
    """
    return f"{url}?options=-c%20synchronous_commit%3Doff"


def prepare_environment() -> None:
    """Point Dagster at this project's instance and, locally, at the embedded PostgreSQL."""
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    home = taxi_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["TAXI_HOME"] = str(home)
    if _profile() == "local":
        from taxi_assets.local_postgres import LocalPostgres

        port = int(os.environ.get("TAXI_PG_PORT") or LOCAL_PG_PORT)
        server = LocalPostgres(home / "pgdata", port).start()
        os.environ.setdefault("DAGSTER_PG_URL", instance_storage_url(server.url))
    elif not os.environ.get("DAGSTER_PG_URL"):
        sys.exit("TAXI_PROFILE=gcp needs DAGSTER_PG_URL (the PostgreSQL for Dagster's storage)")


def monthly_job() -> dg.JobDefinition:
    from taxi_assets.definitions import defs
    from taxi_assets.schedules import MONTHLY_JOB

    return defs.resolve_job_def(MONTHLY_JOB)


def daily_job() -> dg.JobDefinition:
    from taxi_assets.definitions import defs
    from taxi_assets.schedules import DAILY_JOB

    return defs.resolve_job_def(DAILY_JOB)


def run(month: str, daily_assets: list[str] | None = None) -> list[dg.ExecuteJobResult]:
    """The month's monthly job, then its days as one single-run backfill of the daily job.

    Through `execute_job`, as `dagster asset materialize` runs them: unlike `materialize`, it
    does not keep every output in memory, which a month's DataFrames would make gigabytes.
    `daily_assets` narrows the day run to those assets (default: all of them). Returns the
    (closed) results; exits with a message naming the month when a run fails.
    """
    from taxi_assets.partitions import daily_partitions, monthly_partitions
    from taxi_assets.run_health import prepare_run

    key = f"{month}-01"
    if key not in monthly_partitions.get_partition_keys():
        sys.exit(f"--month {month}: not a month of the yellow-taxi release "
                 f"({monthly_partitions.get_first_partition_key()[:7]} to "
                 f"{monthly_partitions.get_last_partition_key()[:7]})")
    days = daily_partitions.get_partition_keys_in_time_window(
        monthly_partitions.time_window_for_partition_key(key))
    instance = dg.DagsterInstance.get()
    results = []
    day_selection = [dg.AssetKey.from_user_string(a) for a in daily_assets or []] or None
    for job, tags, selection in (
        (monthly_job, {"dagster/partition": key}, None),
        (daily_job, {"dagster/asset_partition_range_start": days[0],
                     "dagster/asset_partition_range_end": days[-1]}, day_selection),
    ):
        prepare_run(instance, job(), runs_are_local=_profile() == "local")  # see run_health
        with dg.execute_job(dg.reconstructable(job), instance=instance, tags=tags,
                            asset_selection=selection) as result:
            results.append(result)
        # Hand the run's freed buffers back to the OS before the next run, so a backfill of
        # many months in one process stays at one month's peak.
        pa.default_memory_pool().release_unused()
        if not result.success:
            sys.exit(f"the run for {month} failed: see the log above, or the run in `make dev`")
    return results


def print_locations(month: str, results: list) -> None:
    print(f"\n{month} materialized. Where the data is:")
    where: dict[str, dict] = {}
    for event in (e for result in results for e in result.get_asset_materialization_events()):
        # A day range's run reports each day: show each asset once.
        materialization = event.event_specific_data.materialization
        where[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
            if k in ("table", "path", "uri", "dagster/row_count", "rows_in_run")}
    for asset, details in where.items():
        print(f"  {asset:28} {details}")
    if _profile() == "local":
        server = os.environ['DAGSTER_PG_URL'].split('?')[0]
        print(f"  PostgreSQL: {server} (psql it, or `make dev` for the UI)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="taxi_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize the whole pipeline for a month")
    run_parser.add_argument("--month", default="2021-01", help="YYYY-MM (default 2021-01)")
    commands.add_parser("dev", help="the Dagster UI and daemon on the same instance")
    commands.add_parser("postgres", help="start the local PostgreSQL and print its URL")
    commands.add_parser("stop", help="stop the local PostgreSQL")
    args = parser.parse_args(argv)

    if args.command == "stop":
        from taxi_assets.local_postgres import LocalPostgres

        LocalPostgres(taxi_home() / "pgdata", LOCAL_PG_PORT).stop()
        return
    prepare_environment()
    if args.command == "postgres":
        print(os.environ["DAGSTER_PG_URL"])
    elif args.command == "run":
        print_locations(args.month, run(args.month))
    elif args.command == "dev":
        os.chdir(PROJECT_ROOT)
        os.execvp("dagster", ["dagster", "dev", "-w", "workspace.yaml",
                              "--host", os.environ.get("DAGSTER_HOST", "127.0.0.1")])


if __name__ == "__main__":
    main()
