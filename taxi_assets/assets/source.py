import dagster as dg

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import monthly_partitions
from taxi_assets.resources import TaxiSourceResource
from taxi_assets.source import SourceNotPublished


@dg.asset(
    partitions_def=monthly_partitions,
    group_name="ingest",
    kinds={"csv", "pandas"},
    # Network faults are retried inside the download; a run-level retry would only repeat them.
)
def raw_yellow_trips(context: dg.AssetExecutionContext, taxi_source: TaxiSourceResource) -> TripBatches:
    """Every trip in the month's TLC yellow-taxi file, parsed under the column contract."""
    month = context.partition_key[:7]
    try:
        path = taxi_source.fetch(month, log=context.log.info)
    except SourceNotPublished as error:
        # A month the source has not published is an answer, not a crash: say it in one line.
        raise dg.Failure(
            description=f"{month} is not published by the source: {error}",
            metadata={"month": month, "source_file": taxi_source.file_name(month),
                      "setting": "TAXI_SOURCE_URL"},
            allow_retries=False,
        ) from error
    trips = taxi_source.trips(path)
    context.add_output_metadata({
        "source_file": taxi_source.file_name(month),
        "bytes": path.stat().st_size,
    })
    return trips
