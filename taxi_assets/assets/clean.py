import dagster as dg
import pandas as pd

from taxi_assets.partitions import monthly_partitions


def drop_zero_passenger_trips(trips: pd.DataFrame) -> pd.DataFrame:
    # Missing counts go too: a trip nobody recorded riders for cannot pass as one with riders.
    return trips[trips["passenger_count"].fillna(0) > 0]


@dg.asset(partitions_def=monthly_partitions, group_name="ingest", kinds={"pandas"})
def yellow_trips(context: dg.AssetExecutionContext, raw_yellow_trips: pd.DataFrame) -> pd.DataFrame:
    """The month's trips that carried at least one passenger."""
    trips = drop_zero_passenger_trips(raw_yellow_trips)
    dropped = len(raw_yellow_trips) - len(trips)
    context.log.info(f"dropped {dropped:,} trips with zero or missing passenger_count")
    context.add_output_metadata({
        "dagster/row_count": len(trips),
        "dropped_zero_or_missing_passengers": dropped,
    })
    return trips
