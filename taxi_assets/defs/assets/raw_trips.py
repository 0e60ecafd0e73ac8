import dagster as dg
import pyarrow as pa

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.datasets import TripDataset
from taxi_assets.defs.partitions import monthly_partitions
from taxi_assets.defs.resources import MonthNotCarried, TaxiSourceResource
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


def build_raw_trips(dataset: TripDataset) -> dg.AssetsDefinition:
    @dg.asset(
        name=dataset.raw_asset,
        partitions_def=monthly_partitions,
        group_name=dataset.group("ingest"),
        kinds={"csv", "parquet"},  # read from CSV.gz or Parquet, staged as Parquet
        description=f"Every trip in the month's TLC {dataset.title} file, mapped to the "
        "canonical columns. Its data version is the source file's version (ETag, or "
        "Last-Modified and size): a re-uploaded file makes a new version of the month.",
        # Network faults are retried inside the download; a run-level retry would repeat them.
    )
    def raw_trips(
        context: dg.AssetExecutionContext, taxi_source: TaxiSourceResource
    ) -> dg.Output[TripBatches]:
        month = context.partition_key[:7]
        # Nothing here writes a sink: whatever fails, the failure says every sink is unchanged,
        # so a failed download is not read as a failed write.
        unchanged = f"Every sink is unchanged: {', '.join(dataset.sink_assets)}."
        try:
            landed = taxi_source.fetch(dataset, month, log=context.log.info)
            plan, trips = taxi_source.trips(
                dataset, landed.path, known_types=new_column_types(context)
            )
        except (SourceNotPublished, MonthNotCarried) as error:
            # A month the source does not have is an answer, not a crash: say it in one line.
            published = isinstance(error, SourceNotPublished)
            raise dg.Failure(
                description=(
                    f"{month} is not published by the source: {error}" if published else str(error)
                )
                + f"\n{unchanged}",
                metadata={
                    "month": month,
                    "source_file": taxi_source.file_name(dataset, month),
                    "setting": "TAXI_SOURCE_URL" if published else "TAXI_SOURCE",
                    "sinks_unchanged": dataset.sink_assets,
                },
                allow_retries=False,
            ) from error
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise dg.Failure(
                description=f"{type(error).__name__}: {first_line}\n{unchanged}",
                metadata={"month": month, "sinks_unchanged": dataset.sink_assets},
            ) from error
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
                "source_file": taxi_source.file_name(dataset, month),
                "source_version": landed.version,
                "bytes": landed.path.stat().st_size,
                "schema_mapping": dg.MetadataValue.json(report),
            },
        )

    return raw_trips
