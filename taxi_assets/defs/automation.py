"""Declarative automation: every asset below a dataset's cleaned trips follows its upstream.

`downstream_automation` (sensors.py) evaluates these conditions; the cleaned trips themselves
are left to the jobs, so their blocking checks always run with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg


def downstream_condition() -> dg.AutomationCondition:
    """eager() over every partition, held back while a blocking check upstream has failed.

    eager() alone looks at the latest time window only (last month, yesterday), so that part
    is dropped: a re-uploaded 2015 month rebuilds its days too. Because eager() waits for
    missing dependencies, a day is built once both files it reads are in: its month's and the
    next month's (the release's last month needs only its own).
    """
    eager = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    # A blocking check that fails stops its run's downstream steps, but the asset itself is
    # still materialized; without this, automation would write the sinks on the next tick.
    upstream_check_failed = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_checks_match(
            dg.AutomationCondition.check_failed(), blocking_only=True
        )
    )
    return (eager & ~upstream_check_failed).with_label(
        "eager (all partitions), unless an upstream blocking check failed"
    )


def with_downstream_automation(
    assets: Sequence[dg.AssetsDefinition], cleaned: dg.AssetKey
) -> list[dg.AssetsDefinition]:
    """The assets, with downstream_condition() on each below `cleaned` (where automation starts:
    everything downstream of the checked, cleaned trips) that has none."""
    below = dg.AssetSelection.assets(cleaned).downstream(include_self=False).resolve(assets)

    def automate(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key in below and spec.automation_condition is None:
            return spec.replace_attributes(automation_condition=downstream_condition())
        return spec

    return list(dg.map_asset_specs(automate, assets))
