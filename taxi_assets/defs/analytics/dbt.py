"""The course's dbt models (taxi_assets/dbt) as assets, downstream of the warehouse tables.

Three `@dbt_assets` over one dbt project, because their partitioning differs:
`zone_models` (dim_zones, unpartitioned) → `trip_models` (staging, the union and fct_trips, by
day: Dagster's partition window goes to dbt as the vars `min_date`/`max_date`, and fct_trips
replaces only those days) → `revenue_mart` (fct_monthly_zone_revenue, unpartitioned, with its
chart). dbt's tests are their asset checks; those of severity `error` block.

Every step that opens the warehouse shares the pool WAREHOUSE_POOL: DuckDB lets one process
at a time write its file, and dbt holds it for a whole build. (A process outside the project
holding the file is waited for briefly: profiles.yml's `connect_attempts`.)
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_dbt import dbt_assets

from taxi_assets.defs.analytics import revenue_chart
from taxi_assets.defs.analytics.dbt_project import (
    ANALYTICS_GROUP,
    TaxiDbtTranslator,
    dbt_project,
    prepared_manifest,
)
from taxi_assets.defs.analytics.dbt_resource import DbtBuild, WarehouseDbtResource
from taxi_assets.defs.assets.warehouse import WAREHOUSE_POOL
from taxi_assets.defs.partitions import daily_partitions

ANALYTICS_JOB = "analytics"
TRIP_MODELS = "stg_yellow_trips stg_green_trips int_trips_unioned fct_trips"
DAILY_TABLES = {"fct_trips"}  # partitioned tables: their rows are counted in the run's window
TABLES = {"dim_zones", "fct_monthly_zone_revenue"}  # views' rows are not worth a count
CHART_FILE = "fct_monthly_zone_revenue.png"


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
