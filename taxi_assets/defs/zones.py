"""The TLC's taxi zones: the lookup of the trips' `PULocationID` and `DOLocationID`.

`checked_taxi_zones` reads `taxi_zone_lookup.csv` from the chosen source (the DataTalksClub
release's `misc`, the TLC feed's `misc/`, or beside the trip files in a folder), checks its contract
(blocking: the ids unique and 1 to 265, the boroughs known) and goes to Postgres, the lake and
the warehouse, where dbt's `dim_zones` reads it. Its data version is the file's version at
the source, and `taxi_zone_lookup_changed` takes a re-published lookup as the re-upload
sensor takes a re-published month.
"""

import hashlib
from pathlib import Path
from urllib.parse import urljoin

import dagster as dg
import pandas as pd

from taxi_assets.defs import automation
from taxi_assets.tlc import source
from taxi_assets.tlc.download import download
from taxi_assets.defs.assets.warehouse import WAREHOUSE_POOL
from taxi_assets.defs.io_managers.lake_writers import LakeLayout
from taxi_assets.defs.io_managers.staging import STAGING_NAME_METADATA_KEY
from taxi_assets.materializations import latest_metadata_value
from taxi_assets.defs.resources import TaxiSourceResource
from taxi_assets.tlc.source_kinds import SOURCE_KINDS

LOOKUP_FILE = "taxi_zone_lookup.csv"
COLUMNS = {
    "LocationID": "location_id",
    "Borough": "borough",
    "Zone": "zone",
    "service_zone": "service_zone",
}
ZONE_IDS = range(1, 266)
# Both published versions' boroughs: the newer one names zone 265 "N/A", "Outside of NYC".
KNOWN_BOROUGHS = frozenset(
    {"Bronx", "Brooklyn", "EWR", "Manhattan", "Queens", "Staten Island", "Unknown", "N/A"}
)
# The real file is 12 kB: anything this large is not the lookup.
MAX_LOOKUP_BYTES = 1_000_000

# Not `taxi_zones`: the graph labels an asset by its key's last part, and that is the
# warehouse table's (`ny_taxi/taxi_zones`). Its staging folder and an instance's history from
# before keep that former key.
ZONES_ASSET = dg.AssetKey("checked_taxi_zones")
FORMER_ZONES_ASSET = dg.AssetKey("taxi_zones")
POSTGRES_ZONES = dg.AssetKey(["ny_taxi", "taxi_zone_lookup"])
LAKE_ZONES = dg.AssetKey("taxi_zones_parquet")
WAREHOUSE_ZONES = dg.AssetKey(["ny_taxi", "taxi_zones"])
ZONES_JOB = "taxi_zones_job"


def lookup_base_url(taxi_source: TaxiSourceResource) -> str:
    """Where the source keeps the lookup: where `{dataset}` is `misc` (the release's layout, a
    folder per dataset); in the TLC feed's `misc/` beside `trip-data/`; else beside the trip
    files (a folder or mirror holding every dataset's files)."""
    base = taxi_source.base_url or SOURCE_KINDS[taxi_source.kind].base_url
    if "{dataset}" in base:
        return base.replace("{dataset}", "misc")
    if taxi_source.kind == "tlc" and base.startswith(("http://", "https://")):
        return urljoin(base.rstrip("/") + "/", "../misc")
    return base


def read_lookup(path: Path) -> pd.DataFrame:
    """The lookup's rows, columns in snake_case; fails naming the file, column or row at fault."""
    size = path.stat().st_size
    if size > MAX_LOOKUP_BYTES:
        raise ValueError(f"{path.name}: {size:,} bytes, over the lookup's {MAX_LOOKUP_BYTES:,}")
    # Every cell as text: "NA" and "N/A" are zone names here, not missing values.
    zones = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(zones.columns) != list(COLUMNS):
        raise ValueError(f"{path.name}: columns {list(zones.columns)}, expected {list(COLUMNS)}")
    ids = pd.to_numeric(zones["LocationID"], errors="coerce")
    not_ids = ids.isna() | (ids % 1 != 0)
    if not_ids.any():
        row = int(not_ids.idxmax())
        raise ValueError(
            f"{path.name}: row {row + 2}: LocationID {zones['LocationID'][row]!r} is not a "
            "whole number"
        )
    return zones.assign(LocationID=ids.astype("int64")).rename(columns=COLUMNS)


def zone_checks(zones: pd.DataFrame) -> list[dg.AssetCheckResult]:
    duplicated = zones["location_id"][zones["location_id"].duplicated()]
    outside = zones["location_id"][~zones["location_id"].isin(ZONE_IDS)]
    unknown = zones["borough"][~zones["borough"].isin(KNOWN_BOROUGHS)]

    def result(name: str, failing: pd.Series) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            check_name=name,
            passed=failing.empty,
            metadata={
                "failing_rows": len(failing),
                "failing_values": sorted({str(v) for v in failing})[:20],
            },
        )

    return [
        result("zone_ids_unique", duplicated),
        result("zone_ids_in_range", outside),
        result("boroughs_known", unknown),
    ]


CHECK_DESCRIPTIONS = {
    "zone_ids_unique": "Each LocationID names one zone.",
    "zone_ids_in_range": f"Every LocationID is a TLC zone, {ZONE_IDS[0]} to {ZONE_IDS[-1]}.",
    "boroughs_known": f"Every borough is one of {', '.join(sorted(KNOWN_BOROUGHS))}.",
}


@dg.asset(
    key=ZONES_ASSET,
    group_name="zones",
    kinds={"csv", "pandas"},
    metadata={STAGING_NAME_METADATA_KEY: FORMER_ZONES_ASSET.to_user_string()},
    check_specs=[
        dg.AssetCheckSpec(name, asset=ZONES_ASSET, description=f"Blocking: {text}", blocking=True)
        for name, text in CHECK_DESCRIPTIONS.items()
    ],
    description="The TLC's taxi zone lookup (`taxi_zone_lookup.csv`) from the chosen source: "
    "265 zones, their borough, name and service zone. Its data version is the file's version "
    "at the source.",
)
def checked_taxi_zones(context: dg.AssetExecutionContext, taxi_source: TaxiSourceResource):
    base = lookup_base_url(taxi_source)
    try:
        landed = download(
            base,
            LOOKUP_FILE,
            taxi_source.landing_path / "misc",
            retries=taxi_source.retries,
            backoff_seconds=taxi_source.backoff_seconds,
            timeout=taxi_source.timeout_seconds,
            log=context.log.info,
        )
    except source.SourceNotPublished as error:
        raise dg.Failure(
            description=f"the source has no zone lookup: {error}",
            metadata={
                "source_file": source.source_url(base, LOOKUP_FILE),
                "setting": "TAXI_SOURCE_URL",
            },
            allow_retries=False,
        ) from error
    zones = read_lookup(landed.path)
    yield dg.Output(
        zones,
        data_version=dg.DataVersion(landed.version),
        metadata={
            "source_file": source.source_url(base, LOOKUP_FILE),
            "source_version": landed.version,
            "dagster/row_count": len(zones),
        },
    )
    yield from zone_checks(zones)


def _sink(key: dg.AssetKey, io_manager_key: str, kinds: set[str], where: str, **kwargs):
    @dg.asset(
        key=key,
        ins={"zones": dg.AssetIn(ZONES_ASSET)},
        group_name="zones",
        kinds=kinds,
        io_manager_key=io_manager_key,
        description=f"The checked taxi zones {where}.",
        **kwargs,
    )
    def zones_sink(zones: pd.DataFrame) -> pd.DataFrame:
        return zones

    return zones_sink


@dg.definitions
def taxi_zones_definitions() -> dg.Definitions:
    assets = automation.with_downstream_automation(
        [
            checked_taxi_zones,
            _sink(POSTGRES_ZONES, "postgres_table_io_manager", {"postgres"}, "in PostgreSQL"),
            _sink(
                LAKE_ZONES,
                "lake_object_io_manager",
                {"parquet"},
                "in the lake: `misc/taxi_zone_lookup.parquet`",
                metadata=LakeLayout(name="misc/taxi_zone_lookup").as_metadata(),
            ),
            _sink(
                WAREHOUSE_ZONES,
                "warehouse_io_manager",
                {"bigquery", "duckdb"},
                "in the warehouse, where dbt's dim_zones reads them",
                pool=WAREHOUSE_POOL,
            ),
        ],
        cleaned=ZONES_ASSET,
    )
    job = dg.define_asset_job(
        ZONES_JOB,
        selection=dg.AssetSelection.assets(*(key for a in assets for key in a.keys)),
        description="The taxi zone lookup: download, check, and every sink.",
    )
    return dg.Definitions(assets=assets, jobs=[job], sensors=[build_lookup_changed_sensor(job)])


def build_lookup_changed_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="taxi_zone_lookup_changed",
        job=job,
        minimum_interval_seconds=24 * 3600,
        # Off, as the months' re-upload sensor: it asks the source every day.
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="HEADs the source's taxi_zone_lookup.csv and takes it again when its "
        "version changed (a re-published lookup); the automation then rebuilds its sinks and "
        "the models over them.",
    )
    def lookup_changed(context: dg.SensorEvaluationContext, taxi_source: TaxiSourceResource):
        taken = latest_metadata_value(
            context.instance, ZONES_ASSET, "source_version", former_key=FORMER_ZONES_ASSET
        )
        if taken is None:
            return dg.SkipReason(
                f"the zone lookup has not been taken yet: materialize {ZONES_ASSET.to_user_string()}"
            )
        try:
            now = source.remote_file(
                lookup_base_url(taxi_source), LOOKUP_FILE, timeout=taxi_source.timeout_seconds
            ).version
        except OSError as error:
            return dg.SkipReason(f"the source did not answer for the zone lookup: {error}")
        if now == taken:
            return dg.SkipReason(f"the zone lookup is unchanged at the source ({now})")
        context.log.info(f"{LOOKUP_FILE} changed at the source ({taken} → {now}): taking it again")
        return dg.RunRequest(run_key=f"zone-lookup-{hashlib.sha256(now.encode()).hexdigest()[:16]}")

    return lookup_changed
