"""The code location's shape, pinned: per dataset (and for the taxi zones and the dbt models)
its assets and their partitions, its checks and whether each blocks, its jobs, schedules and
sensors. Loads the definitions only: no server, a few seconds.

A change here is a change users see in the UI and in what runs when. When one is meant, print
the new snapshot, paste it over EXPECTED and let `ruff format` lay it out:

    uv run --frozen python -m taxi_assets_tests.test_definitions_snapshot
"""

from __future__ import annotations

import copy
import pprint

import dagster as dg

from taxi_assets.definitions import defs

# Every partitioned asset's partitions begin with the TLC's first month, in UTC; an asset whose
# partitions do not is described with its start.
FIRST_PARTITION = "2009-01-01"
EVERY_MONTH = "0 0 1 * *"
EVERY_DAY = "0 0 * * *"

# Per section: its assets by group, each with its partitions ("monthly", "daily" or None);
# its checks by asset, each "blocks" (a failure stops the assets downstream) or "warns"; its
# jobs with the assets they materialize; its schedules (job, cron, default status) and
# sensors (target, default status). A group `yellow_lake` belongs to section `yellow`.
EXPECTED = {
    "analytics": {
        "assets": {
            "analytics": {
                "analytics/dim_zones": None,
                "analytics/fct_monthly_zone_revenue": None,
                "analytics/fct_trips": "daily",
                "analytics/int_trips_unioned": "daily",
                "analytics/stg_green_trips": "daily",
                "analytics/stg_yellow_trips": "daily",
            }
        },
        "checks": {
            "analytics/dim_zones": {
                "not_null_dim_zones_location_id": "blocks",
                "unique_dim_zones_location_id": "blocks",
            },
            "analytics/fct_trips": {
                "accepted_values_fct_trips_payment_type__False__0__1__2__3__4__5__6": "warns",
                "accepted_values_fct_trips_service_type__yellow__green": "blocks",
                "not_null_fct_trips_trip_id": "blocks",
                "relationships_fct_trips_dropoff_location_id__location_id__ref_dim_zones_": "blocks",
                "relationships_fct_trips_pickup_location_id__location_id__ref_dim_zones_": "blocks",
                "unique_fct_trips_trip_id": "blocks",
            },
        },
        "jobs": {
            "analytics": [
                "analytics/dim_zones",
                "analytics/fct_monthly_zone_revenue",
                "analytics/fct_trips",
                "analytics/int_trips_unioned",
                "analytics/stg_green_trips",
                "analytics/stg_yellow_trips",
            ]
        },
        "schedules": {},
        "sensors": {},
    },
    "green": {
        "assets": {
            "green_ingest": {"cleaned_green_trips": "monthly", "raw_green_trips": "monthly"},
            "green_lake": {
                "green_trips_by_day": "daily",
                "green_trips_daily_export": "daily",
                "green_trips_parquet": "monthly",
            },
            "green_postgres": {"ny_taxi/green_taxi": "monthly"},
            "green_warehouse": {"ny_taxi/green_trips": "daily"},
        },
        "checks": {
            "cleaned_green_trips": {
                "dropoff_not_before_pickup": "warns",
                "known_vendor_ids": "blocks",
                "no_shrink": "blocks",
                "no_zero_distance_trips": "blocks",
                "no_zero_passenger_trips": "blocks",
                "only_known_columns": "warns",
                "pickups_near_file_month": "warns",
            },
            "green_trips_parquet": {"lake_month_matches_postgres": "warns"},
            "ny_taxi/green_trips": {"warehouse_matches_lake": "warns"},
        },
        "jobs": {
            "daily_green_trips": [
                "green_trips_by_day",
                "green_trips_daily_export",
                "ny_taxi/green_trips",
            ],
            "monthly_green_trips": [
                "cleaned_green_trips",
                "green_trips_parquet",
                "ny_taxi/green_taxi",
                "raw_green_trips",
            ],
        },
        "schedules": {
            "daily_green_trips_schedule": ("daily_green_trips", "0 5 * * *", "stopped"),
            "monthly_green_trips_schedule": ("monthly_green_trips", "0 6 2 * *", "stopped"),
        },
        "sensors": {
            "green_source_file_changed": ("monthly_green_trips", "stopped"),
            "new_green_month_published": ("monthly_green_trips", "stopped"),
        },
    },
    "shared": {
        "assets": {},
        "checks": {},
        "jobs": {},
        "schedules": {},
        "sensors": {"downstream_automation": ("automation of *", "running")},
    },
    "yellow": {
        "assets": {
            "yellow_ingest": {"cleaned_yellow_trips": "monthly", "raw_yellow_trips": "monthly"},
            "yellow_lake": {
                "yellow_trips_by_day": "daily",
                "yellow_trips_daily_export": "daily",
                "yellow_trips_parquet": "monthly",
            },
            "yellow_postgres": {"ny_taxi/yellow_cab_data": "monthly"},
            "yellow_warehouse": {"ny_taxi/yellow_trips": "daily"},
        },
        "checks": {
            "cleaned_yellow_trips": {
                "dropoff_not_before_pickup": "warns",
                "known_vendor_ids": "warns",
                "no_shrink": "blocks",
                "no_zero_passenger_trips": "blocks",
                "only_known_columns": "warns",
                "pickups_near_file_month": "warns",
            },
            "ny_taxi/yellow_trips": {"warehouse_matches_lake": "warns"},
            "yellow_trips_parquet": {"lake_month_matches_postgres": "warns"},
        },
        "jobs": {
            "daily_yellow_trips": [
                "ny_taxi/yellow_trips",
                "yellow_trips_by_day",
                "yellow_trips_daily_export",
            ],
            "monthly_yellow_trips": [
                "cleaned_yellow_trips",
                "ny_taxi/yellow_cab_data",
                "raw_yellow_trips",
                "yellow_trips_parquet",
            ],
        },
        "schedules": {
            "daily_yellow_trips_schedule": ("daily_yellow_trips", "0 7 * * *", "stopped"),
            "monthly_yellow_trips_schedule": ("monthly_yellow_trips", "0 6 2 * *", "stopped"),
        },
        "sensors": {
            "new_yellow_month_published": ("monthly_yellow_trips", "stopped"),
            "yellow_source_file_changed": ("monthly_yellow_trips", "stopped"),
        },
    },
    "zones": {
        "assets": {
            "zones": {
                "checked_taxi_zones": None,
                "ny_taxi/taxi_zone_lookup": None,
                "ny_taxi/taxi_zones": None,
                "taxi_zones_parquet": None,
            }
        },
        "checks": {
            "checked_taxi_zones": {
                "boroughs_known": "blocks",
                "zone_ids_in_range": "blocks",
                "zone_ids_unique": "blocks",
            }
        },
        "jobs": {
            "taxi_zones_job": [
                "checked_taxi_zones",
                "ny_taxi/taxi_zone_lookup",
                "ny_taxi/taxi_zones",
                "taxi_zones_parquet",
            ]
        },
        "schedules": {},
        "sensors": {"taxi_zone_lookup_changed": ("taxi_zones_job", "stopped")},
    },
}

SHARED = "shared"  # what spans the sections: the automation sensor over every asset
PARTS = ("assets", "checks", "jobs", "schedules", "sensors")


def partitioning(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return type(partitions_def).__name__
    cron = partitions_def.cron_schedule
    described = {EVERY_MONTH: "monthly", EVERY_DAY: "daily"}.get(cron, f"cron {cron}")
    if f"{partitions_def.start:%Y-%m-%d}" != FIRST_PARTITION:
        described += f" from {partitions_def.start:%Y-%m-%d}"
    if partitions_def.timezone != "UTC":
        described += f" in {partitions_def.timezone}"
    if partitions_def.end_offset:
        described += f" with end_offset {partitions_def.end_offset}"
    return described


def snapshot(definitions: dg.Definitions) -> dict:
    """The definitions in EXPECTED's shape."""
    graph = definitions.resolve_asset_graph()
    repository = definitions.get_repository_def()
    shape = {}

    def section(name: str) -> dict:
        return shape.setdefault(name, {part: {} for part in PARTS})

    section_of_asset = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        group = node.group_name
        section_of_asset[key] = group.split("_")[0]
        assets = section(section_of_asset[key])["assets"].setdefault(group, {})
        assets[key.to_user_string()] = partitioning(node.partitions_def)

    for check in graph.asset_check_keys:
        checks = section(section_of_asset[check.asset_key])["checks"]
        blocks = graph.get_check_spec(check).blocking
        checks.setdefault(check.asset_key.to_user_string(), {})[check.name] = (
            "blocks" if blocks else "warns"
        )

    section_of_job = {}
    for job in repository.get_all_jobs():
        if job.name.startswith("__"):
            continue  # Dagster's implicit job of every asset
        keys = job.asset_layer.selected_asset_keys
        homes = {section_of_asset[key] for key in keys} or {SHARED}
        section_of_job[job.name] = "+".join(sorted(homes))
        jobs = section(section_of_job[job.name])["jobs"]
        jobs[job.name] = sorted(key.to_user_string() for key in keys)

    for schedule in repository.schedule_defs:
        status = schedule.default_status.value.lower()
        schedules = section(section_of_job.get(schedule.job_name, SHARED))["schedules"]
        schedules[schedule.name] = (schedule.job_name, schedule.cron_schedule, status)

    for sensor in repository.sensor_defs:
        status = sensor.default_status.value.lower()
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            target, home = f"automation of {sensor.asset_selection}", SHARED
        else:
            names = sorted(target.job_name for target in sensor.targets)
            homes = {section_of_job.get(name, SHARED) for name in names} or {SHARED}
            target, home = ", ".join(names), "+".join(sorted(homes))
        section(home)["sensors"][sensor.name] = (target, status)

    section(SHARED)
    return {name: shape[name] for name in sorted(shape)}


def differences(expected, actual, path: str = "") -> list[str]:
    """Each entry added, removed or changed, by its path: `yellow > checks > cleaned_yellow_trips`."""
    if not (isinstance(expected, dict) and isinstance(actual, dict)):
        return [] if expected == actual else [f"changed {path}: {expected!r} -> {actual!r}"]
    found = []
    for name in sorted(expected.keys() | actual.keys()):
        where = f"{path} > {name}" if path else name
        if name not in actual:
            found.append(f"removed {where}: {expected[name]!r}")
        elif name not in expected:
            found.append(f"added {where}: {actual[name]!r}")
        else:
            found += differences(expected[name], actual[name], where)
    return found


def test_the_definitions_hold_exactly_the_pinned_assets_checks_jobs_schedules_and_sensors():
    found = differences(EXPECTED, snapshot(defs))
    assert not found, (
        "The definitions differ from the pinned snapshot:\n  "
        + "\n  ".join(found)
        + "\nIf this is meant, regenerate EXPECTED with "
        "`uv run --frozen python -m taxi_assets_tests.test_definitions_snapshot`."
    )


def test_the_snapshot_names_an_added_asset_and_a_check_that_stops_blocking():
    @dg.asset(group_name="yellow_lake", partitions_def=dg.DailyPartitionsDefinition("2009-01-01"))
    def yellow_trips_extra_export():
        return None

    extra = dg.Definitions.merge(defs, dg.Definitions(assets=[yellow_trips_extra_export]))
    assert differences(EXPECTED, snapshot(extra)) == [
        "added yellow > assets > yellow_lake > yellow_trips_extra_export: 'daily'"
    ]

    pinned_as_warning = copy.deepcopy(EXPECTED)
    pinned_as_warning["yellow"]["checks"]["cleaned_yellow_trips"]["no_shrink"] = "warns"
    assert differences(pinned_as_warning, snapshot(defs)) == [
        "changed yellow > checks > cleaned_yellow_trips > no_shrink: 'warns' -> 'blocks'"
    ]


if __name__ == "__main__":
    print("EXPECTED = " + pprint.pformat(snapshot(defs), width=100, sort_dicts=True))
