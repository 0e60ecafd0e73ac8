"""With the real processes: a backfill through the webserver's GraphQL API, run by the
daemon under the run queue and the Postgres pool; declarative automation downstream; and the UI
in a real browser.

One `dagster-webserver` + `dagster-daemon run` pair serves the whole module (instance storage in
a fresh database of the suite's PostgreSQL, state in a temp TAXI_HOME). The tests run in file
order and build on each other's data: the backfill first, then what the daemon derives from it,
then the browser looks at the result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pandas as pd
import pytest
from playwright.sync_api import expect

from taxi_assets.definitions import defs
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions
from taxi_assets.defs.jobs import keys_partitioned_by
from taxi_assets.datasets import DATASETS, YELLOW
from taxi_assets.defs.sensors import AUTOMATION_SENSOR
from taxi_assets_tests.dagster_processes import (
    DagsterStack,
    create_database,
    dagster_env,
    dagster_stack,
)
from taxi_assets_tests.browser import ui_page
from taxi_assets_tests.conftest import sample
from taxi_assets_tests.pipeline import POSTGRES_TABLE, query

MONTHS = ["2021-01-01", "2021-02-01", "2021-03-01"]
SAMPLE = "yellow_tripdata_2021-01.csv.gz"
CLEAN_ROWS = 28_401 - 589
POOL = "postgres_yellow_cab_data"
POSTGRES_STEP = "ny_taxi__yellow_cab_data"
# The yellow dataset's: the suite's source serves yellow files.
MONTHLY_KEYS = [
    k for k in keys_partitioned_by(defs.assets, monthly_partitions) if "yellow" in str(k)
]
DAILY_KEYS = [k for k in keys_partitioned_by(defs.assets, daily_partitions) if "yellow" in str(k)]
BACKFILL_TIMEOUT = 600.0
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "automation"


def sample_moved_to(month: str) -> bytes:
    """The real January sample with its pickup and dropoff times moved by whole months into
    `month` (days past the month's end clip to its last day), so each month's file holds that
    month's trips and its 16 late-filed trips from the month before, as the real files do."""
    frame = pd.read_csv(sample(SAMPLE), dtype=str, keep_default_na=False)
    shift = pd.DateOffset(months=(pd.Period(month, "M") - pd.Period("2021-01", "M")).n)
    for column in (YELLOW.pickup, YELLOW.dropoff):
        times = pd.to_datetime(frame[column], format="%Y-%m-%d %H:%M:%S") + shift
        frame[column] = times.dt.strftime("%Y-%m-%d %H:%M:%S")
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz:
        gz.write(frame.to_csv(index=False, lineterminator="\r\n").encode())
    return out.getvalue()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres, _http_server) -> Iterator[DagsterStack]:
    tmp = tmp_path_factory.mktemp("automation_live")
    query(postgres, "DROP SCHEMA IF EXISTS ny_taxi CASCADE")
    env = dagster_env(
        tmp,
        dagster_pg_url=create_database(postgres, "dagster_automation_live"),
        source_url=_http_server.url,
        postgres=postgres,
    )
    with dagster_stack(env, tmp / "logs") as running:
        yield running


@contextlib.contextmanager
def instance_of(stack: DagsterStack) -> Iterator[dg.DagsterInstance]:
    """The stack's instance, opened in the test process from the same dagster.yaml."""
    names = ("DAGSTER_HOME", "DAGSTER_PG_URL", "TAXI_HOME")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: stack.env[name] for name in names})
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def key_input(key: dg.AssetKey) -> dict:
    return {"path": list(key.path)}


# The mutation the UI's "Launch backfill" dialog sends for assets outside any job
# (LaunchAssetChoosePartitionsDialog.tsx): asset selection, partition names, UI tag.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs { runId status startTime endTime tags { key value }
             stepStats { stepKey status startTime endTime } }
    }
    ... on PythonError { message }
  }
}
"""

POOL_STATE = """
query Pool($key: String!) {
  instance { concurrencyLimit(concurrencyKey: $key) {
    slotCount limit usingDefaultLimit activeRunIds pendingStepRunIds } }
}
"""

MATERIALIZED = """
query Materialized($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def launch_backfill(stack: DagsterStack, keys, partitions) -> str:
    launched = stack.graphql(
        LAUNCH_BACKFILL,
        {
            "backfillParams": {
                "assetSelection": [key_input(k) for k in keys],
                "partitionNames": partitions,
                "fromFailure": False,
                "tags": [{"key": "dagster/from_ui", "value": "true"}],
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def backfill(stack: DagsterStack, backfill_id: str) -> dict:
    result = stack.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert result["__typename"] == "PartitionBackfill", result
    return result


def materialized_partitions(stack: DagsterStack, key: dg.AssetKey, partitions=None) -> set[str]:
    asset = stack.graphql(MATERIALIZED, {"key": key_input(key), "partitions": partitions})
    asset = asset["assetOrError"]
    if asset["__typename"] != "Asset":  # never materialized
        return set()
    return {m["partition"] for m in asset["assetMaterializations"]}


def pool(stack: DagsterStack) -> dict:
    return stack.graphql(POOL_STATE, {"key": POOL})["instance"]["concurrencyLimit"]


def test_backfill_through_the_ui_api_runs_queued_and_one_postgres_writer_at_a_time(
    stack, http_source, postgres
):
    for month in MONTHS:
        http_source.publish_bytes(month[:7], sample_moved_to(month[:7]))
    with instance_of(stack) as instance:
        # The pool gets its limit from dagster.yaml's `pools: default_limit` ...
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
        # ... and the test holds its only slot, as a writer that is slow to finish would: the
        # runs must then wait at their Postgres step, however fast the machine is.
        holder = "held-by-the-test"
        claim = instance.event_log_storage.claim_concurrency_slot(POOL, holder, "writer")
        assert claim.is_claimed
    assert pool(stack)["slotCount"] == 1 and pool(stack)["usingDefaultLimit"]

    backfill_id = launch_backfill(stack, MONTHLY_KEYS, MONTHS)

    def two_runs_waiting_on_the_pool_and_one_queued():
        runs = backfill(stack, backfill_id)["runs"]
        statuses = sorted(r["status"] for r in runs)
        waiting = set(pool(stack)["pendingStepRunIds"])
        started = {r["runId"] for r in runs if r["status"] == "STARTED"}
        if statuses == ["QUEUED", "STARTED", "STARTED"] and waiting == started:
            return runs

    # dagster.yaml's run queue (max_concurrent_runs: 2) holds the third month back, and both
    # running months stop at the Postgres write while the pool's slot is taken.
    stack.wait_until(
        two_runs_waiting_on_the_pool_and_one_queued,
        "two runs blocked on the pool and one queued",
        timeout=BACKFILL_TIMEOUT,
    )
    with instance_of(stack) as instance:
        instance.event_log_storage.free_concurrency_slots_for_run(holder)

    done = stack.wait_until(
        lambda: (
            (b := backfill(stack, backfill_id))["status"] not in ("REQUESTED", "CANCELING")
            and all(r["status"] in FINISHED for r in b["runs"])
            and b
        ),
        "the backfill to finish",
        timeout=BACKFILL_TIMEOUT,
    )

    assert done["status"] == "COMPLETED_SUCCESS", (done, stack.logs())
    runs = done["runs"]
    assert (
        sorted(dict((t["key"], t["value"]) for t in r["tags"])["dagster/partition"] for r in runs)
        == MONTHS
    ), "one run per month"
    for key in MONTHLY_KEYS:
        assert materialized_partitions(stack, key, MONTHS) == set(MONTHS), key
    rows = query(
        postgres, f"SELECT source_month::text, count(*) FROM {POSTGRES_TABLE} GROUP BY 1 ORDER BY 1"
    )
    assert rows == [(month, CLEAN_ROWS) for month in MONTHS]
    # Once released, the writers took the slot one after the other.
    writes = sorted(
        (s["startTime"], s["endTime"])
        for r in runs
        for s in r["stepStats"]
        if s["stepKey"] == POSTGRES_STEP
    )
    assert len(writes) == len(MONTHS)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(writes, writes[1:]))


def test_automation_builds_the_days_of_the_backfilled_months_a_range_per_run(stack):
    # A day reads its own month's file and, for the last day, the next month's too (late-filed
    # trips); March 31 waits for April, and December 31 for December.
    expected = days("2021-01-01", "2021-03-30")

    for key in DAILY_KEYS:
        stack.wait_until(
            lambda: materialized_partitions(stack, key, expected) == set(expected),
            f"automation to build {key.to_user_string()}",
            timeout=BACKFILL_TIMEOUT,
        )
        assert not materialized_partitions(stack, key, ["2020-12-31", "2021-03-31"])

    # A run's materializations are visible before it ends (its checks may still be running).
    runs = stack.wait_until(
        lambda: (
            (runs := automation_runs(stack)) and all(r["status"] in FINISHED for r in runs) and runs
        ),
        "automation's runs to finish",
        timeout=BACKFILL_TIMEOUT,
    )
    day_runs = [r for r in runs if "dagster/asset_partition_range_start" in r["tags"]]
    assert day_runs and all(r["status"] == "SUCCESS" for r in day_runs), runs
    # Single-run backfill policy: each run covers a range of days, not a day.
    assert len(day_runs) < len(expected) / 10
    # The monthly sinks were written by the backfill only: automation saw them up to date.
    assert not [r for r in runs if set(r["assets"]) & {k.to_user_string() for k in MONTHLY_KEYS}]


def days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [str(start + dt.timedelta(d)) for d in range((end - start).days + 1)]


AUTOMATION_RUNS = """
query AutomationRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status tags { key value } assetSelection { path } } }
  }
}
"""


def automation_runs(stack: DagsterStack) -> list[dict]:
    """Every run the automation sensor requested (its backfills' runs carry its name too)."""
    results = stack.graphql(
        AUTOMATION_RUNS,
        {"filter": {"tags": [{"key": "dagster/sensor_name", "value": AUTOMATION_SENSOR}]}},
    )["runsOrError"]["results"]
    return [
        {
            "status": r["status"],
            "tags": {t["key"]: t["value"] for t in r["tags"]},
            "assets": ["/".join(a["path"]) for a in r["assetSelection"] or []],
        }
        for r in results
    ]


# --- the UI in a real browser ----------------------------------------------------------------


@pytest.fixture
def page(tmp_path):
    with ui_page() as page:
        yield page
        # What the browser showed last: on a failure, the page the test gave up on.
        screenshot(page, tmp_path, "last-page")


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


def test_the_ui_shows_every_asset_and_the_backfilled_partitions(stack, page, tmp_path):
    graph = defs.resolve_asset_graph()
    keys_by_group: dict[str, list[dg.AssetKey]] = {}
    for key in graph.get_all_asset_keys():
        keys_by_group.setdefault(graph.get(key).group_name, []).append(key)

    # The global graph starts with every group folded: each dataset's groups unfolded (as
    # clicking them does), the other dataset's left folded, each dataset shown in turn.
    for dataset in DATASETS.values():
        groups = sorted(g for g in keys_by_group if g.startswith(f"{dataset.name}_"))
        assert len(groups) == 4, groups
        expanded = ",".join(f"global@global:{group}" for group in groups)
        page.goto(f"{stack.webserver.url}/asset-groups?expanded={quote(expanded)}")
        keys = [key for group in groups for key in keys_by_group[group]]
        # A node shows the last part of its key (ny_taxi/yellow_trips as yellow_trips), and no
        # two nodes show the same.
        for key in keys:
            expect(page.locator("svg").get_by_text(key.path[-1], exact=True)).to_have_count(1)
        expect(page.locator("svg").get_by_text("Loading")).to_have_count(0)  # their statuses
        shot = screenshot(page, tmp_path, f"asset-graph-{dataset.name}")

    # Straight to the month: with partitions from 2009 on, the list opens at the newest ones.
    page.goto(
        f"{stack.webserver.url}/assets/ny_taxi/yellow_cab_data"
        f"?view=partitions&partition={MONTHS[0]}"
    )
    page.get_by_text(f"Materialized ({len(MONTHS)})").wait_for()
    page.get_by_text("dagster/row_count").wait_for()
    assert page.get_by_text(str(CLEAN_ROWS), exact=True).count() >= 1
    screenshot(page, tmp_path, "yellow_cab_data-partitions")

    page.goto(f"{stack.webserver.url}/automation")
    for name in (
        "monthly_yellow_trips_schedule",
        "daily_yellow_trips_schedule",
        "new_yellow_month_published",
        AUTOMATION_SENSOR,
    ):
        page.get_by_text(name, exact=True).wait_for()
    screenshot(page, tmp_path, "automation")
    assert shot.stat().st_size > 10_000
