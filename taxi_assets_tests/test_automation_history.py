"""The automation sensor's tick over ten years of history: it requests exactly what three new
months need, their days as one range (a backfill, built a range per run), never a run a day.

The history is simulated (bench/automation_tick.py): every partition of every yellow asset
from 2009-01 to 2018-12 recorded as materialized, in a PostgreSQL-backed instance as in
production. What a tick costs is measured by `python -m bench.automation_tick`, not here.
"""

from __future__ import annotations

import dagster as dg
import pytest

from bench.automation_tick import days_between, record_history, take_new_months
from taxi_assets.dagster_private import automation_run_requests
from taxi_assets.datasets import YELLOW
from taxi_assets.definitions import defs
from taxi_assets_tests.dagster_processes import DAGSTER_YAML, create_database
from taxi_assets_tests.test_automation import DAILY_BELOW, MONTHLY_BELOW, requested

NEW_MONTHS = ["2019-01-01", "2019-02-01", "2019-03-01"]


@pytest.fixture
def instance(postgres, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", create_database(postgres, "automation_history"))
    monkeypatch.setenv("TAXI_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def test_a_tick_over_ten_years_requests_the_new_months_and_their_days_in_one_range(instance):
    history = record_history(instance, [YELLOW], "2009-01-01", 120)
    assert (history[0], history[-1]) == ("2009-01-01", "2018-12-01")
    first = dg.evaluate_automation_conditions(defs, instance)
    # Ten years, all built: nothing to do.
    assert first.total_requested == 0

    take_new_months(instance, [YELLOW], NEW_MONTHS)
    tick = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)

    # The months' sinks; and their days, from the last day of December 2018 (it waited for
    # January's file) to the day before the last of March (which waits for April's).
    days = days_between("2018-12-01", "2019-04-01")[30:-1]
    assert (days[0], days[-1]) == ("2018-12-31", "2019-03-30")
    assert requested(tick) == {
        **{key: NEW_MONTHS for key in MONTHLY_BELOW},
        **{key: days for key in DAILY_BELOW},
    }
    # As the sensor submits it: one backfill, whose daily assets' single-run policy builds
    # each ready range of days in one run.
    [request] = automation_run_requests(tick, defs.resolve_asset_graph())
    assert request.requires_backfill_daemon()
    subset = request.asset_graph_subset
    for key in DAILY_BELOW:
        assert (
            sorted(
                subset.get_partitions_subset(dg.AssetKey.from_user_string(key)).get_partition_keys()
            )
            == days
        )

    settled = dg.evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
    assert settled.total_requested == 0
