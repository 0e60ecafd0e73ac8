"""dbt over the profile's warehouse: a `dbt build` whose events are kept until dbt has let go
of the warehouse, and queries of the warehouse as dbt's target reaches it."""

import contextlib
import io
import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from pydantic import Field

from taxi_assets import settings
from taxi_assets.defs.analytics.dbt_project import DBT_PROJECT_DIR, dbt_project


@dataclass(frozen=True)
class DbtBuild:
    events: list  # the build's Dagster events, in dbt's order
    relations: dict[str, str]  # model name → its relation in the warehouse
    error: Exception | None  # why dbt failed, raised once its events are yielded


class WarehouseDbtResource(DbtCliResource):
    """dbt over the profile's warehouse. `warehouse_vars` tell profiles.yml where it is (the
    same DuckDB file or BigQuery project as the warehouse IO manager's); `target` is the
    taxi_assets profile (`local`, `gcp`); `state_dir` keeps the revenue chart's file and a
    failed build's dbt artifacts (a successful build's are removed)."""

    warehouse_vars: dict[str, str] = Field(default_factory=dict)
    state_dir: str = ""

    def build(self, context: dg.AssetExecutionContext, days: dg.TimeWindow | None = None):
        """`dbt build` of the context's models and tests, for `days` if given. Its events are
        kept until dbt has ended (and so let go of a DuckDB file), a failed build's too: the
        models it built and the tests that failed are recorded before the step fails."""
        dbt_vars: dict[str, str] = dict(self.warehouse_vars)
        if days is not None:
            dbt_vars |= {"min_date": f"{days.start:%Y-%m-%d}", "max_date": f"{days.end:%Y-%m-%d}"}
        # `buildable`: a model's tests run with it once their other parents are built too
        # (the relationships tests with fct_trips, not before it with dim_zones).
        args = ["build", "--vars", json.dumps(dbt_vars), "--indirect-selection", "buildable"]
        op, run = context.op_execution_context.op.name, context.run.run_id[:8]
        artifacts = Path(self.state_dir or DBT_PROJECT_DIR / "target", "dbt") / (
            f"{op}-{run}-{uuid.uuid4().hex[:7]}"
        )
        invocation = self.cli(args, context=context, raise_on_error=False, target_path=artifacts)
        # dagster-dbt prints dbt's every line; the console keeps one line per step, so they
        # go to the step's debug log, and the summary (or the failure's lines) to its info.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            events = list(invocation.stream())
        context.log.debug(printed.getvalue())
        error = invocation.get_error()
        if error is None:
            context.log.info(_dbt_summary(printed.getvalue()))
        else:
            context.log.error(_dbt_problems(printed.getvalue()))
        manifest = artifacts / "manifest.json"
        # No manifest: dbt failed before it parsed the project, and built nothing.
        nodes = json.loads(manifest.read_text())["nodes"].values() if manifest.exists() else []
        if error is None:  # ~2 MB a build, of no use once it succeeded
            shutil.rmtree(artifacts, ignore_errors=True)
        return DbtBuild(
            events,
            {n["name"]: n["relation_name"] for n in nodes if n["resource_type"] == "model"},
            error,
        )

    def query(self, sql: str) -> list[tuple]:
        """Rows of `sql` in the warehouse, as dbt's target reaches it."""
        if self.target == "gcp":
            from taxi_assets.storage.bigquery_tables import bigquery_client

            client = bigquery_client(
                project=self.warehouse_vars["bigquery_project"],
                location=self.warehouse_vars.get("bigquery_location") or None,
                api_endpoint=self.warehouse_vars.get("bigquery_api_endpoint") or None,
            )
            return [tuple(row.values()) for row in client.query(sql).result()]
        import duckdb

        for attempt in range(8):  # another process may be writing the file: wait for it
            try:
                with duckdb.connect(self.warehouse_vars["duckdb_path"], read_only=True) as conn:
                    return conn.sql(sql).fetchall()
            except duckdb.IOException:
                if attempt == 7:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")


def _dbt_summary(printed: str) -> str:
    done = [line for line in printed.splitlines() if line.startswith("Done. PASS=")]
    return f"dbt build: {done[-1].removeprefix('Done. ')}" if done else "dbt build: done"


def _dbt_problems(printed: str) -> str:
    lines = [
        line
        for line in printed.splitlines()
        if any(word in line for word in ("ERROR", "FAIL", "WARN", "Error", "Failure"))
    ]
    return "dbt build failed:\n" + "\n".join(lines[-20:] or printed.splitlines()[-20:])


def _setting(value) -> str:
    """A resource field's value, an EnvVar's from the environment."""
    if isinstance(value, dg.EnvVar):
        return value.get_value() or ""
    return "" if value is None else str(value)


def warehouse_dbt(
    warehouse_io_manager: dg.ConfigurableIOManager, state_dir: str
) -> WarehouseDbtResource:
    """dbt over the warehouse `warehouse_io_manager` writes: its DuckDB file, or its BigQuery
    project (the models in the dataset TAXI_BQ_ANALYTICS_DATASET, default `analytics`)."""
    from taxi_assets.defs.io_managers.bigquery import BigQueryWarehouseIOManager

    if isinstance(warehouse_io_manager, BigQueryWarehouseIOManager):
        endpoint = _setting(warehouse_io_manager.api_endpoint)
        warehouse_vars = {
            "bigquery_project": _setting(warehouse_io_manager.project),
            "trips_dataset": _setting(warehouse_io_manager.dataset),
            "bigquery_dataset": settings.value("TAXI_BQ_ANALYTICS_DATASET"),
            "bigquery_location": _setting(warehouse_io_manager.location) or "US",
            "bigquery_api_endpoint": endpoint,
            # An emulator takes any token; a real project, Application Default Credentials.
            **(
                {"bigquery_method": "oauth-secrets", "bigquery_token": "emulator"}
                if endpoint
                else {}
            ),
        }
        target = "gcp"
    else:
        warehouse_vars, target = {"duckdb_path": _setting(warehouse_io_manager.database)}, "local"
    # The environment's own dbt, on PATH or not (a venv's python run without activating it).
    beside_python = Path(sys.executable).with_name("dbt")
    return WarehouseDbtResource(
        dbt_executable=str(beside_python) if beside_python.exists() else "dbt",
        project_dir=dbt_project,
        target=target,
        warehouse_vars=warehouse_vars,
        state_dir=state_dir,
    )
