"""A pipeline run in a process of its own that SIGKILLs itself at a chosen point of a sink's write.

`python -m taxi_assets_tests.killed_run SPEC_JSON` arms the kill, then materializes, as
`pipeline.materialize` does, with the local profile's resources pointed at the spec's state
folder, source and PostgreSQL. The kill is real (no cleanup, no `finally`, no rollback sent);
only its moment is chosen, by wrapping one function of the write path: the n-th call of
`target` (`module:attribute.path`, counting only calls whose arguments mention `match`) kills
the process `before` it runs or `after` it returns. A test cannot hit such an instant from
outside the process reliably, and a kill at a random instant would test a random point.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg


@dataclass
class KillPoint:
    target: str
    nth: int = 1
    when: str = "before"
    match: str | None = None

    def arm(self) -> None:
        module_name, _, attribute = self.target.partition(":")
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        static = isinstance(inspect.getattr_static(owner, name), staticmethod)
        calls = 0
        point = self

        def wrapper(*args, **kwargs):
            nonlocal calls
            if point.match is None or point.match in repr((args, kwargs)):
                calls += 1
            if calls == point.nth and point.when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = original(*args, **kwargs)
            if calls == point.nth and point.when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def main(spec: dict) -> None:
    from taxi_assets_tests.conftest import PostgresUnderTest
    from taxi_assets_tests.pipeline import (
        failure_messages,
        materialize,
        materialize_days,
        pipeline_resources,
    )

    if spec.get("kill"):
        KillPoint(**spec["kill"]).arm()
    postgres = PostgresUnderTest(**spec["postgres"])
    warehouse = None
    if "bigquery" in spec:
        from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager

        warehouse = BigQueryWarehouseIOManager(**spec["bigquery"])
    lake = None
    if "lake" in spec:
        from taxi_assets.defs.resources import LakeResource

        lake = LakeResource(**spec["lake"])
    resources = pipeline_resources(
        Path(spec["state"]), spec["source_url"], postgres, lake=lake, warehouse_io_manager=warehouse
    )
    # The instance of DAGSTER_HOME (pool slots are kept there), else an ephemeral one.
    instance = dg.DagsterInstance.get() if spec.get("instance") == "home" else None
    if "days" in spec:
        result = materialize_days(
            resources,
            *spec["days"],
            selection=spec["selection"],
            raise_on_error=False,
            instance=instance,
        )
    else:
        result = materialize(
            resources, selection=spec["selection"], raise_on_error=False, instance=instance
        )
    if not result.success:  # for the test to read: each failed step's error and its causes
        print(json.dumps({"failures": failure_messages(result)}))
    # With a kill point armed, reaching this line means it was never hit: the test fails then.
    sys.exit(3 if result.success else 4)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
