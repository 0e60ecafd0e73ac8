import dagster as dg

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import monthly_partitions


@dg.asset(
    key=["ny_taxi", "yellow_cab_data"],
    partitions_def=monthly_partitions,
    group_name="postgres",
    kinds={"postgres"},
    io_manager_key="postgres_io_manager",
    metadata={"partition_column": "source_month"},
    pool="postgres_yellow_cab_data",
)
def yellow_cab_data(yellow_trips: TripBatches) -> TripBatches:
    """The tutorial's `ny_taxi.yellow_cab_data`: the cleaned trips, with the month they were filed in."""
    return yellow_trips
