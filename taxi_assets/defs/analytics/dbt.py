"""The course's dbt models (taxi_assets/dbt) as assets, downstream of the warehouse tables.

Three `@dbt_assets` over one dbt project, because their partitioning differs:
`zone_models` (dim_zones, unpartitioned) → `trip_models` (staging, the union and fct_trips, by
day: Dagster's partition window goes to dbt as the vars `min_date`/`max_date`, and fct_trips
replaces only those days) → `revenue_mart` (fct_monthly_zone_revenue, unpartitioned, with its
chart). dbt's tests are their asset checks; those of severity `error` block.

Every step that writes the warehouse shares the pool WAREHOUSE_POOL: DuckDB lets one process
at a time write its file, and dbt holds it for a whole build. (A reader that finds it held,
such as a warehouse check, waits: dagster-duckdb and dbt-duckdb retry the connection.)
"""

import contextlib
import fcntl
import io
import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from taxi_assets.defs.analytics import revenue_chart
from taxi_assets import settings
from taxi_assets.defs.assets.warehouse import WAREHOUSE_POOL
from taxi_assets.defs.automation import downstream_condition
from taxi_assets.defs.partitions import daily_partitions

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
ANALYTICS_GROUP = "analytics"
ANALYTICS_JOB = "analytics"
TRIP_MODELS = "stg_yellow_trips stg_green_trips int_trips_unioned fct_trips"
DAILY_TABLES = {"fct_trips"}  # partitioned tables: their rows are counted in the run's window
TABLES = {"dim_zones", "fct_monthly_zone_revenue"}  # views' rows are not worth a count
CHART_FILE = "fct_monthly_zone_revenue.png"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def prepared_manifest(project: DbtProject = dbt_project) -> Path:
    """The project's manifest, parsed again whenever a file of the project is newer.

    Never committed, so never stale: `dbt parse` runs when the code location loads after a
    change (a few seconds, once), and the image parses it at build time, so a deployment never
    does. Processes loading the location at once (webserver, daemon, runs) take turns.
    """

    def stale() -> bool:
        root = project.project_dir
        sources = [
            root / "dbt_project.yml",
            root / "profiles.yml",
            *(root / "models").rglob("*"),
            *(root / "macros").rglob("*"),
        ]
        newest = max(path.stat().st_mtime for path in sources)
        manifest = project.manifest_path
        return not manifest.exists() or manifest.stat().st_mtime < newest

    if stale():
        project.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        with open(project.manifest_path.parent / ".prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if stale():  # unless the process that held the lock prepared it
                # dbt's lines would land amid a run's console or the webserver's log.
                printed = io.StringIO()
                try:
                    with contextlib.redirect_stdout(printed):
                        project.preparer.prepare(project)
                except Exception as error:
                    raise RuntimeError(
                        f"dbt parse of {project.project_dir} failed:\n{printed.getvalue()}"
                    ) from error
    return project.manifest_path


class TaxiDbtTranslator(DagsterDbtTranslator):
    """Models are `analytics/<model>` in one group, and follow their upstream as the other
    assets below the cleaned trips do; sources are the warehouse assets their `meta` names."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([ANALYTICS_GROUP, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return ANALYTICS_GROUP

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        return downstream_condition()

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project):
        """A dbt test's check says, as the project's own checks do, what it asserts and whether
        it blocks (severity `error`) or only warns."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        says = "Blocking" if spec.blocking else "Warns only"
        return dg.AssetCheckSpec(
            name=spec.name,
            asset=spec.asset_key,
            description=f"{says}: {spec.description or _test_asserts(manifest['nodes'][unique_id])}",
            additional_deps=spec.additional_deps,
            blocking=spec.blocking,
            metadata=spec.metadata,
        )


def _test_asserts(test: Mapping[str, Any]) -> str:
    """What a dbt generic test asserts, in words (its name, for a test this does not know)."""
    name = test.get("test_metadata", {}).get("name", test["name"])
    kwargs = test.get("test_metadata", {}).get("kwargs", {})
    column = kwargs.get("column_name", "")
    if name == "unique":
        return f"no two rows share a {column}."
    if name == "not_null":
        return f"every row has a {column}."
    if name == "accepted_values":
        values = kwargs.get("values") or kwargs.get("arguments", {}).get("values")
        return f"every {column} is one of {values}."
    if name == "relationships":
        field, to = kwargs.get("field"), kwargs.get("to", "")
        return f"every {column} is a {field} of {to.removeprefix('ref(').strip(chr(39) + ')')}."
    return f"dbt's `{name}` test of {column or test['name']}."


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


def _output(model: str) -> str:
    """The output name dagster-dbt gives a model's asset."""
    return dg.AssetKey([ANALYTICS_GROUP, model]).to_python_identifier()


def where_built(relation: str, dbt: WarehouseDbtResource) -> dict:
    """Where a model is, as the warehouse IO manager says it of its tables (for the console's
    closing table and the UI): a DuckDB table by its file's path, a BigQuery one in full."""
    _catalog, schema, table = (part.strip('"`') for part in relation.split("."))
    if dbt.target == "gcp":
        return {"dagster/storage_kind": "bigquery", "dagster/table_name": relation.replace("`", "")}
    return {
        "dagster/storage_kind": "duckdb",
        "dagster/table_name": f"{dbt.warehouse_vars['duckdb_path']}.{schema}.{table}",
    }


def with_row_counts(
    build: DbtBuild, dbt: WarehouseDbtResource, days: dg.TimeWindow | None = None
) -> Iterator:
    """The build's events, each model's output saying where it is, and a table's how many rows
    it holds (in the run's days, for a partitioned one); then the build's failure, if any."""
    outputs = {_output(model): model for model in build.relations}
    for event in build.events:
        model = outputs.get(getattr(event, "output_name", None))
        if model is not None:
            relation = build.relations[model]
            figures = where_built(relation, dbt)
            if model in TABLES:
                (figures["dagster/row_count"],) = dbt.query(f"select count(*) from {relation}")[0]
            elif model in DAILY_TABLES and days is not None:
                (figures["rows_in_run"],) = dbt.query(
                    f"select count(*) from {relation} where pickup_date >= "
                    f"date '{days.start:%Y-%m-%d}' and pickup_date < date '{days.end:%Y-%m-%d}'"
                )[0]
            event = event.with_metadata({**event.metadata, **figures})
        yield event
    if build.error is not None:
        raise build.error


def with_chart(build: DbtBuild, dbt: WarehouseDbtResource) -> Iterator:
    """The build's events, the mart's output with its chart: inline for the UI, and in
    `chart_dir` for the console and other viewers."""
    for event in with_row_counts(build, dbt):
        if getattr(event, "output_name", None) == _output("fct_monthly_zone_revenue"):
            relation = build.relations["fct_monthly_zone_revenue"]
            png = revenue_chart.chart_png(
                dbt.query(revenue_chart.CHART_SQL.format(relation=relation))
            )
            chart = {"chart": dg.MetadataValue.md(revenue_chart.chart_markdown(png))}
            if dbt.state_dir:
                path = revenue_chart.save_chart(png, Path(dbt.state_dir) / CHART_FILE)
                chart["chart_path"] = dg.MetadataValue.path(str(path))
            event = event.with_metadata({**event.metadata, **chart})
        yield event


@dg.definitions
def analytics_definitions() -> dg.Definitions:
    manifest = prepared_manifest()
    common = dict(
        manifest=manifest,
        project=dbt_project,
        dagster_dbt_translator=TaxiDbtTranslator(),
        pool=WAREHOUSE_POOL,
    )

    @dbt_assets(select="dim_zones", name="zone_models", **common)
    def zone_models(context: dg.AssetExecutionContext, dbt: WarehouseDbtResource):
        yield from with_row_counts(dbt.build(context), dbt)

    @dbt_assets(
        select=TRIP_MODELS,
        name="trip_models",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **common,
    )
    def trip_models(context: dg.AssetExecutionContext, dbt: WarehouseDbtResource):
        days = context.partition_time_window
        yield from with_row_counts(dbt.build(context, days), dbt, days)

    @dbt_assets(select="fct_monthly_zone_revenue", name="revenue_mart", **common)
    def revenue_mart(context: dg.AssetExecutionContext, dbt: WarehouseDbtResource):
        yield from with_chart(dbt.build(context), dbt)

    assets = [zone_models, trip_models, revenue_mart]
    return dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job(
                ANALYTICS_JOB,
                selection=dg.AssetSelection.assets(*assets),
                description="The dbt models and their tests over a range of days: dim_zones, "
                "fct_trips for those days, and the revenue mart with its chart.",
            )
        ],
    )


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
