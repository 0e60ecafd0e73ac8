import dagster as dg
import pandas as pd
import pyarrow as pa

from taxi_assets.batches import TripBatches
from taxi_assets.partitions import monthly_partitions
from taxi_assets.schema import to_pandas


def drop_zero_passenger_trips(trips: pd.DataFrame) -> pd.DataFrame:
    # Missing counts go too: a trip nobody recorded riders for cannot pass as one with riders.
    return trips[trips["passenger_count"].fillna(0) > 0]


@dg.asset(partitions_def=monthly_partitions, group_name="ingest", kinds={"pandas"})
def yellow_trips(context: dg.AssetExecutionContext, raw_yellow_trips: TripBatches) -> TripBatches:
    """The month's trips that carried at least one passenger."""
    counts = {"dropped_zero_or_missing_passengers": 0}

    def cleaned(batch: pa.RecordBatch) -> pa.RecordBatch:
        trips = drop_zero_passenger_trips(to_pandas(batch))
        counts["dropped_zero_or_missing_passengers"] += batch.num_rows - len(trips)
        return pa.RecordBatch.from_pandas(trips, schema=batch.schema, preserve_index=False)

    def batches():
        counts["dropped_zero_or_missing_passengers"] = 0
        yield from map(cleaned, raw_yellow_trips)
        context.log.info(
            f"dropped {counts['dropped_zero_or_missing_passengers']:,} trips "
            "with zero or missing passenger_count"
        )

    return TripBatches(raw_yellow_trips.schema, batches, metadata=counts)
