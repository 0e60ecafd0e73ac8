"""In process: the new-month sensor, the downstream automation condition and the
schedules, evaluated against a real Dagster instance after real runs on the loopback source.
(test_automation_live.py runs the same definitions under the real daemon and webserver.)"""

from __future__ import annotations

import datetime as dt
import http.server
import threading

import dagster as dg
import pytest

from taxi_assets.defs.assets import clean
from taxi_assets.definitions import defs
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.defs.sensors import AUTOMATION_SENSOR
from taxi_assets.tlc.source import SourceNotPublished, remote_file
from taxi_assets_tests.pipeline import materialize, pipeline_resources

SAMPLE = "yellow_tripdata_2021-01.csv.gz"
SOURCE_AND_CLEAN = [dg.AssetKey("raw_yellow_trips"), dg.AssetKey("cleaned_yellow_trips")]
REPO = defs.get_repository_def()


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def take(resources, instance, month: str, **kwargs):
    """A run that takes the month from the source and cleans it, as the monthly job begins."""
    return materialize(
        resources,
        partition_key=f"{month}-01",
        selection=SOURCE_AND_CLEAN,
        instance=instance,
        **kwargs,
    )


# --- the new-month sensor --------------------------------------------------------------------


def is_published(base_url: str, file_name: str, timeout: float) -> bool:
    """What the sensor asks the source: HEAD the file, and tell "not published" apart."""
    try:
        remote_file(base_url, file_name, timeout=timeout)
    except SourceNotPublished:
        return False
    return True


def tick(instance, source: TaxiSourceResource, cursor: str | None):
    sensor = REPO.get_sensor_def("new_yellow_month_published")
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"taxi_source": source}
    )
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor, result.skip_message
    return list(result.run_requests), result.cursor, None


def test_a_new_month_is_requested_once_across_ticks(tmp_path, http_source, postgres, instance):
    http_source.publish("2021-01", SAMPLE)
    take(pipeline_resources(tmp_path, http_source.url, postgres), instance, "2021-01")
    source = TaxiSourceResource(base_url=http_source.url, landing_dir=str(tmp_path / "unused"))
    http_source.requests.clear()

    requests, cursor, skipped = tick(instance, source, None)
    assert requests == [] and "yellow_tripdata_2021-02.csv.gz is not published" in skipped

    http_source.publish("2021-02", SAMPLE)
    requested = []
    for _ in range(5):
        requests, cursor, skipped = tick(instance, source, cursor)
        requested += requests

    assert [(r.partition_key, r.run_key) for r in requested] == [
        ("2021-02-01", "published-2021-02")
    ]
    assert cursor == "2021-02"
    # The source was asked twice (unpublished, then published), with HEAD: nothing downloaded.
    assert http_source.requests == ["HEAD /yellow_tripdata_2021-02.csv.gz"] * 2

    # Once February is taken, the sensor moves on to March, which is not out yet.
    take(pipeline_resources(tmp_path, http_source.url, postgres), instance, "2021-02")
    requests, cursor, skipped = tick(instance, source, cursor)
    assert requests == [] and "yellow_tripdata_2021-03.csv.gz is not published" in skipped


def test_the_sensor_waits_for_a_first_month_and_stops_at_the_release_end(
    tmp_path, http_source, postgres, instance
):
    source = TaxiSourceResource(base_url=http_source.url, landing_dir=str(tmp_path / "unused"))
    requests, _, skipped = tick(instance, source, None)
    assert requests == [] and "no month has been taken" in skipped

    http_source.publish("2021-07", SAMPLE)
    take(pipeline_resources(tmp_path, http_source.url, postgres), instance, "2021-07")
    http_source.requests.clear()
    requests, _, skipped = tick(instance, source, None)
    assert requests == [] and "2021-07 is the last month of the release" in skipped
    assert http_source.requests == []


def test_publication_check_works_on_a_plain_folder(tmp_path):
    (tmp_path / "yellow_tripdata_2021-02.csv.gz").write_bytes(b"")
    assert is_published(str(tmp_path), "yellow_tripdata_2021-02.csv.gz", timeout=5)
    assert not is_published(str(tmp_path), "yellow_tripdata_2021-03.csv.gz", timeout=5)


def test_publication_check_follows_a_redirect_without_downloading():
    """GitHub release assets answer with a redirect to a CDN; urllib turns HEAD into GET there."""
    seen = []

    class Release(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            seen.append(f"HEAD {self.path}")
            name = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/release/"):
                self.send_response(302)
                self.send_header("Location", f"/cdn/{name}")
            else:
                self.send_response(200 if name.endswith("2021-02.csv.gz") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            seen.append(f"GET {self.path}")
            self.send_error(500)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Release)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/release"
        assert is_published(base, "yellow_tripdata_2021-02.csv.gz", timeout=5)
        assert not is_published(base, "yellow_tripdata_2021-03.csv.gz", timeout=5)
    finally:
        server.shutdown()
    assert not [r for r in seen if r.startswith("GET")]
    assert seen[:2] == [
        "HEAD /release/yellow_tripdata_2021-02.csv.gz",
        "HEAD /cdn/yellow_tripdata_2021-02.csv.gz",
    ]


# --- downstream automation -------------------------------------------------------------------


def requested(result) -> dict[str, list[str]]:
    out = {}
    for key_result in result.results:
        partitions = key_result.true_subset.expensively_compute_asset_partitions()
        if partitions:
            out[key_result.key.to_user_string()] = sorted(p.partition_key for p in partitions)
    return out


# The dbt models that also read green's trips and the zones, which these tests never load:
# eager() waits for those (yellow's staging view alone follows).
WAITING_FOR_THE_OTHER_DATASET = {"analytics/int_trips_unioned", "analytics/fct_trips"}


def below_cleaned_trips(partitions_def) -> list[str]:
    graph = defs.resolve_asset_graph()
    below = (
        dg.AssetSelection.assets("cleaned_yellow_trips")
        .downstream(include_self=False)
        .resolve(graph)
    )
    return sorted(
        k.to_user_string()
        for k in below
        if graph.get(k).partitions_def == partitions_def
        and k.to_user_string() not in WAITING_FOR_THE_OTHER_DATASET
    )


MONTHLY_BELOW = below_cleaned_trips(monthly_partitions)
DAILY_BELOW = below_cleaned_trips(daily_partitions)


def expected_requests(month: str, days: list[str]) -> dict[str, list[str]]:
    return {**{key: [month] for key in MONTHLY_BELOW}, **{key: days for key in DAILY_BELOW}}


def days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [str(start + dt.timedelta(d)) for d in range((end - start).days + 1)]


def test_automation_builds_downstream_of_a_month_but_not_past_a_failed_blocking_check(
    tmp_path, http_source, postgres, instance, monkeypatch
):
    resources = pipeline_resources(tmp_path, http_source.url, postgres)
    for month in ("2021-01", "2021-02"):
        http_source.publish(month, SAMPLE)
    # The first evaluation only records where things stand: opening `make dev` on a project
    # with history starts nothing.
    first = dg.evaluate_automation_conditions(defs, instance)
    assert first.total_requested == 0

    take(resources, instance, "2021-01")
    january = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)

    # Every partition, not only the latest window (July 2021 in this fixed release), of every
    # sink below the cleaned trips. The last day of a month also reads the next month's file
    # (late-filed trips), so it waits for it.
    assert {"ny_taxi/yellow_cab_data", "yellow_trips_parquet"} <= set(MONTHLY_BELOW)
    assert {"yellow_trips_by_day", "yellow_trips_daily_export"} <= set(DAILY_BELOW)
    assert requested(january) == expected_requests("2021-01-01", days("2021-01-01", "2021-01-30"))

    # Fault injection: cleaning regresses to the tutorial's commented-out filter, so the
    # blocking check fails on February; cleaned_yellow_trips is materialized all the same.
    monkeypatch.setattr(clean, "kept_trips", lambda dataset, trips: (trips, {}))
    assert not take(resources, instance, "2021-02", raise_on_error=False).success
    bad_february = dg.evaluate_automation_conditions(defs, instance, cursor=january.cursor)
    assert requested(bad_february) == {}

    monkeypatch.undo()
    take(resources, instance, "2021-02")
    february = dg.evaluate_automation_conditions(defs, instance, cursor=bad_february.cursor)
    assert requested(february) == expected_requests("2021-02-01", days("2021-01-31", "2021-02-27"))


# --- what is on by default, and the schedules ------------------------------------------------


def test_only_the_automation_sensor_is_on_by_default():
    running = dg.DefaultSensorStatus.RUNNING
    assert {s.name: s.default_status == running for s in REPO.sensor_defs} == {
        AUTOMATION_SENSOR: True,
        "new_yellow_month_published": False,
        "yellow_source_file_changed": False,
        "new_green_month_published": False,
        "green_source_file_changed": False,
        "taxi_zone_lookup_changed": False,
    }
    assert REPO.get_sensor_def("new_yellow_month_published").minimum_interval_seconds == 3600
    assert {s.name: s.default_status for s in REPO.schedule_defs} == {
        "monthly_yellow_trips_schedule": dg.DefaultScheduleStatus.STOPPED,
        "daily_yellow_trips_schedule": dg.DefaultScheduleStatus.STOPPED,
        "monthly_green_trips_schedule": dg.DefaultScheduleStatus.STOPPED,
        "daily_green_trips_schedule": dg.DefaultScheduleStatus.STOPPED,
    }


# build_schedule_from_partitioned_job calls Dagster's own deprecated run_request_for_partition.
# (The monthly schedule asks the source: test_tlc_feed.py.)
@pytest.mark.filterwarnings("ignore:Function `JobDefinition.run_request_for_partition`")
@pytest.mark.parametrize(
    "schedule, tick_at, partition",
    [
        ("daily_yellow_trips_schedule", dt.datetime(2021, 3, 2, 7), "2021-03-01"),
    ],
)
def test_a_schedule_tick_runs_the_period_that_just_ended(schedule, tick_at, partition):
    schedule_def = REPO.get_schedule_def(schedule)
    context = dg.build_schedule_context(
        scheduled_execution_time=tick_at.replace(tzinfo=dt.timezone.utc)
    )
    run_requests = schedule_def.evaluate_tick(context).run_requests
    assert [r.partition_key for r in run_requests] == [partition]
