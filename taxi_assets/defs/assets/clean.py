import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.tlc.batches import TripBatches, true_count
from taxi_assets.datasets import TripDataset
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets.tlc.month_window import FeedableDays
from taxi_assets.tlc.trip_quality import QUALITY_COUNTS_KEY, QualityCounter
from taxi_assets.defs.assets.raw_trips import sinks_unchanged_failure
from taxi_assets.defs.io_managers.staging import STAGING_NAME_METADATA_KEY
from taxi_assets.defs.partitions import monthly_partitions


def kept_trips(
    dataset: TripDataset, trips: pa.RecordBatch
) -> tuple[pa.RecordBatch, dict[str, int]]:
    """The trips no drop rule of the dataset matches, and how many rows each rule matches (a
    row two rules match counts for both; `dropped_rows` counts it once)."""
    dropped = pa.repeat(False, trips.num_rows)
    counts = {}
    for rule in dataset.drop_rules:
        matches = rule.matches(trips, dataset.column(rule.column))
        counts[rule.count_key] = true_count(matches)
        dropped = pc.or_(dropped, matches)
    counts["dropped_rows"] = true_count(dropped)
    return trips.filter(pc.invert(dropped)), counts


def renamed(dataset: TripDataset, trips: TripBatches) -> TripBatches:
    """The trips with the dataset's names for the contract's columns (green: snake_case)."""
    if not dataset.renamed:
        return trips
    schema = pa.schema([field.with_name(dataset.column(field.name)) for field in trips.schema])
    return trips.map(lambda batch: batch.rename_columns(schema.names), schema)


def build_cleaned_trips(dataset: TripDataset) -> dg.AssetsDefinition:
    rules = " or ".join(rule.what for rule in dataset.drop_rules)

    @dg.asset(
        name=dataset.cleaned_asset,
        ins={"raw_trips": dg.AssetIn(dataset.raw_asset)},
        partitions_def=monthly_partitions,
        group_name=dataset.group("ingest"),
        kinds={"parquet"},  # Arrow batches, staged as Parquet
        metadata={STAGING_NAME_METADATA_KEY: dataset.former_cleaned_asset},
        description=f"The month's {dataset.title} trips"
        + (f", without those with {rules}" if rules else "")
        + (", columns in snake_case" if dataset.renamed else "")
        + ".",
    )
    def cleaned_trips(context: dg.AssetExecutionContext, raw_trips: TripBatches) -> TripBatches:
        trips = renamed(dataset, raw_trips)
        counts = {rule.count_key: 0 for rule in dataset.drop_rules} | {
            "dropped_rows": 0,
            ROWS_READ_KEY: 0,
        }
        window = FeedableDays(dataset.column(dataset.pickup), context.partition_key)
        # The quality checks' counts, in the same pass: the staged file keeps them.
        quality = QualityCounter(dataset, context.partition_key, trips.schema.names)

        def cleaned(batch: pa.RecordBatch) -> pa.RecordBatch:
            kept, dropped = kept_trips(dataset, batch)
            for key, count in dropped.items():
                counts[key] += count
            counts[ROWS_READ_KEY] += batch.num_rows
            window.count(kept)
            quality.add(kept)
            return kept

        def batches():
            counts.update(dict.fromkeys(counts, 0))
            window.reset()
            quality.reset()
            try:
                # The month's file is read here, as the rows pass: a bad row, bytes or a
                # ceiling fails the step before its stage is replaced.
                yield from map(cleaned, trips)
            except Exception as error:
                raise sinks_unchanged_failure(dataset, context.partition_key[:7], error) from error
            by_rule = ", ".join(
                f"{counts[rule.count_key]:,} with {rule.what}" for rule in dataset.drop_rules
            )
            context.log.info(f"dropped {counts['dropped_rows']:,} trips ({by_rule})")
            counts.update(window.metadata())
            counts[QUALITY_COUNTS_KEY] = quality.counts().as_dict()
            if window.outside:
                context.log.warning(window.sentence())

        return TripBatches(trips.schema, batches, metadata=counts)

    return cleaned_trips
