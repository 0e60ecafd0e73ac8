import dagster as dg
import pyarrow as pa

from taxi_assets.datasets import TripDataset
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import MonthNotCarried, TaxiSourceResource
from taxi_assets.tlc.landed_trips import LandedTrips, rows_in_footer
from taxi_assets.tlc.source import SourceNotPublished

# How many of the newest months' mappings say which types the sinks hold for new columns.
MAPPINGS_CONSULTED = 100


def new_column_types(context: dg.AssetExecutionContext) -> dict[str, pa.DataType]:
    """The types earlier months carried their new (non-contract) columns to the sinks in."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key), limit=MAPPINGS_CONSULTED
    ).records
    known: dict[str, pa.DataType] = {}
    for record in reversed(records):  # oldest first: the newest month's type wins
        mapping = record.asset_materialization.metadata.get("schema_mapping")
        for name, type_name in ((mapping.value if mapping else {}).get("new") or {}).items():
            known[name] = pa.type_for_alias(type_name)
    return known


def sinks_unchanged_failure(
    dataset: TripDataset, month: str, error: Exception, source_file: str | None = None
) -> dg.Failure:
    """A failure while the month's file is fetched or its rows read, said as such: nothing had
    been written, so it names every sink as unchanged and is not read as a failed write. The
    one wording wherever the month's rows are read (here, and in the cleaning step)."""
    unchanged = f"Every sink is unchanged: {', '.join(dataset.sink_assets)}."
    if isinstance(error, (SourceNotPublished, MonthNotCarried)):
        # A month the source does not have is an answer, not a crash: say it in one line.
        published = isinstance(error, SourceNotPublished)
        return dg.Failure(
            description=(
                f"{month} is not published by the source: {error}" if published else str(error)
            )
            + f"\n{unchanged}",
            metadata={
                "month": month,
                "source_file": source_file,
                "setting": "TAXI_SOURCE_URL" if published else "TAXI_SOURCE",
                "sinks_unchanged": dataset.sink_assets,
            },
            allow_retries=False,
        )
    first_line = (str(error).strip().splitlines() or [""])[0]
    return dg.Failure(
        description=f"{type(error).__name__}: {first_line}\n{unchanged}",
        metadata={"month": month, "sinks_unchanged": dataset.sink_assets},
    )


def build_raw_trips(dataset: TripDataset) -> dg.AssetsDefinition:
    @dg.asset(
        name=dataset.raw_asset,
        partitions_def=monthly_partitions,
        group_name=dataset.group("ingest"),
        kinds={"csv", "parquet"},  # the TLC's CSV.gz or Parquet, kept as it landed
        description=f"The month's TLC {dataset.title} file as it landed, with how to read it "
        "as the canonical columns (mapping planned from its header or footer; its rows are "
        "read by the step that cleans them). Its data version is the source file's version "
        "(ETag, or Last-Modified and size): a re-uploaded file makes a new version of the month.",
        # Network faults are retried inside the download; a run-level retry would repeat them.
    )
    def raw_trips(
        context: dg.AssetExecutionContext, taxi_source: TaxiSourceResource
    ) -> dg.Output[LandedTrips]:
        month = context.partition_key[:7]
        source_file = None
        try:
            source_file = taxi_source.file_name(dataset, month)
            landed = taxi_source.fetch(dataset, month, log=context.log.info)
            recipe = taxi_source.recipe(dataset, landed.path, new_column_types(context))
            trips = LandedTrips(landed.path, recipe)
            plan, _ = trips.read()  # plans the mapping: a wrong header or type fails here
            rows = rows_in_footer(landed.path)
        except Exception as error:
            raise sinks_unchanged_failure(dataset, month, error, source_file) from error
        report = plan.report()
        changes = ", ".join(f"{len(names)} {change}" for change, names in report.items() if names)
        context.log.info(
            f"{landed.path.name}: mapped to the canonical columns "
            f"({changes or 'as they were'}; the run's schema_mapping metadata has each)"
        )
        return dg.Output(
            trips,
            data_version=dg.DataVersion(landed.version),
            metadata={
                "source_file": source_file,
                "source_version": landed.version,
                "bytes": landed.path.stat().st_size,
                "schema_mapping": dg.MetadataValue.json(report),
                # Free only where the file's footer says it; a CSV is not read to count it.
                **({"dagster/row_count": rows} if rows is not None else {}),
            },
        )

    return raw_trips
