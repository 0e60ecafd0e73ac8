import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.tlc.batches import TripBatches
from taxi_assets.datasets import TripDataset
from taxi_assets.defs.io_managers.postgres_partitions import MonthObject
from taxi_assets.defs.partitions import monthly_partitions


def with_pickup_date(trips: TripBatches, pickup: str, name: str) -> TripBatches:
    """The trips with one more column, `name`: the date of their `pickup` time."""
    schema = trips.schema.append(pa.field(name, pa.date32()))
    return trips.map(
        lambda batch: batch.append_column(name, pc.cast(batch.column(pickup), pa.date32())),
        schema,
    )


def build_postgres_table(dataset: TripDataset) -> dg.AssetsDefinition:
    pickup_date = dataset.pickup_date if dataset.postgres_has_pickup_date else None

    @dg.asset(
        key=dataset.postgres_asset,
        ins={"trips": dg.AssetIn(dataset.cleaned_asset)},
        partitions_def=monthly_partitions,
        group_name=dataset.group("postgres"),
        kinds={"postgres"},
        io_manager_key="postgres_io_manager",
        # The month's lake object is written beside the partition: one version of a month.
        metadata=MonthObject(dataset.lake_name, omits=pickup_date).as_metadata(),
        pool=f"postgres_{dataset.postgres_asset.path[-1]}",
        description=f"`{dataset.postgres_table}`: the cleaned {dataset.title} trips"
        + (f", with their {pickup_date}" if pickup_date else "")
        + ", and the month they were filed in (`source_month`, one list partition each).",
    )
    def postgres_table(trips: TripBatches) -> TripBatches:
        return with_pickup_date(trips, dataset.pickup, pickup_date) if pickup_date else trips

    return postgres_table
