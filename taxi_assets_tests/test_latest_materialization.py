"""What sensors, checks and the backfill plan read of an asset's latest materialization: the
newest one of the partition asked about, never another partition's, and nothing when none; for
an asset renamed, what its former key recorded until it has its own."""

import dagster as dg

from taxi_assets.backfill.plan import plan_dataset
from taxi_assets.datasets import YELLOW
from taxi_assets.definitions import defs
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.materializations import (
    latest_materialization,
    latest_metadata_value,
    latest_storage_ids,
)

MONTHS = dg.StaticPartitionsDefinition(["2021-01-01", "2021-02-01"])
VERSION = "source_version"


def configured_version(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={VERSION: context.op_execution_context.op_config["version"]}
    )


@dg.asset(partitions_def=MONTHS, config_schema={"version": str})
def months(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return configured_version(context)


# `months` under the key it is given after a rename: its history so far is under `months`.
@dg.asset(partitions_def=MONTHS, config_schema={"version": str})
def renamed_months(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return configured_version(context)


@dg.asset
def lookup() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={VERSION: "etag-1"})


def materialize_month(instance: dg.DagsterInstance, month: str, version: str, asset=months) -> None:
    result = dg.materialize(
        [asset],
        instance=instance,
        partition_key=month,
        run_config={"ops": {asset.op.name: {"config": {"version": version}}}},
    )
    assert result.success


def test_the_latest_materialization_of_a_partition_is_its_newest_and_only_its_own():
    instance = dg.DagsterInstance.ephemeral()
    key = months.key
    assert latest_materialization(instance, key, "2021-01-01") is None
    assert latest_metadata_value(instance, key, VERSION, "2021-01-01") is None

    materialize_month(instance, "2021-01-01", "a")
    materialize_month(instance, "2021-01-01", "b")
    materialize_month(instance, "2021-02-01", "c")

    assert latest_metadata_value(instance, key, VERSION, "2021-01-01") == "b"
    assert latest_metadata_value(instance, key, VERSION, "2021-02-01") == "c"
    assert latest_metadata_value(instance, key, "no such entry", "2021-01-01") is None
    january = latest_materialization(instance, key, "2021-01-01")
    assert january is not None and january.partition_key == "2021-01-01"
    assert latest_storage_ids(instance, key) == {
        "2021-01-01": january.storage_id,
        "2021-02-01": latest_materialization(instance, key, "2021-02-01").storage_id,
    }


def test_the_latest_materialization_of_an_unpartitioned_asset():
    instance = dg.DagsterInstance.ephemeral()
    assert latest_metadata_value(instance, lookup.key, VERSION) is None
    assert dg.materialize([lookup], instance=instance).success
    assert latest_metadata_value(instance, lookup.key, VERSION) == "etag-1"


def test_a_renamed_asset_answers_with_its_former_keys_history_until_it_has_its_own():
    instance = dg.DagsterInstance.ephemeral()
    key, former = renamed_months.key, months.key
    materialize_month(instance, "2021-01-01", "a")
    materialize_month(instance, "2021-02-01", "b")
    assert latest_metadata_value(instance, key, VERSION, "2021-01-01") is None

    materialize_month(instance, "2021-01-01", "c", asset=renamed_months)

    january = latest_materialization(instance, key, "2021-01-01")
    february = latest_materialization(instance, former, "2021-02-01")
    assert latest_metadata_value(instance, key, VERSION, "2021-01-01", former_key=former) == "c"
    assert latest_metadata_value(instance, key, VERSION, "2021-02-01", former_key=former) == "b"
    assert latest_storage_ids(instance, key, former_key=former) == {
        "2021-01-01": january.storage_id,
        "2021-02-01": february.storage_id,
    }
    assert latest_storage_ids(instance, key) == {"2021-01-01": january.storage_id}


def test_a_backfill_on_an_instance_from_before_the_rename_skips_the_months_it_took(
    http_source, tmp_path
):
    """The cleaned trips' months recorded under their former key, as an instance upgraded from
    then holds them: the plan takes them for up to date, as it did before the rename."""
    http_source.publish("2021-01", "yellow_tripdata_2021-01.csv.gz")
    taxi_source = TaxiSourceResource(
        kind="datatalks", base_url=http_source.url, landing_dir=str(tmp_path)
    )
    version = taxi_source.remote(YELLOW, "2021-01").version

    def plan(former_key: str):
        instance = dg.DagsterInstance.ephemeral()
        month = "2021-01-01"
        taken = {YELLOW.raw_asset: {VERSION: version}, former_key: {}}
        for key in [*taken, YELLOW.postgres_asset, YELLOW.lake_month_asset]:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key, partition=month, metadata=taken.get(key, {}))
            )
        graph = defs.resolve_asset_graph()
        return plan_dataset(instance, taxi_source, YELLOW, "2021-01", "2021-01", graph)

    upgraded = plan(YELLOW.former_cleaned_asset)
    assert (upgraded.up_to_date, upgraded.to_run) == (["2021-01-01"], [])
    # Another key's history is not the cleaned trips': that month is taken again.
    unrelated = plan("some_other_trips")
    assert (unrelated.up_to_date, unrelated.to_run) == ([], ["2021-01-01"])
