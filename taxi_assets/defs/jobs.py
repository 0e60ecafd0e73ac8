"""Jobs: one per dataset and partitioning.

A job holds every asset of one dataset and partitioning, so a month's file is downloaded,
cleaned, checked and written to every monthly sink in one run, and a range of days is one run
(the daily assets' single-run backfill policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from taxi_assets.datasets import TripDataset
from taxi_assets.defs.partitions import daily_partitions, monthly_partitions


def keys_partitioned_by(assets: Sequence[dg.AssetsDefinition], partitions_def) -> list[dg.AssetKey]:
    return [key for asset in assets if asset.partitions_def == partitions_def for key in asset.keys]


def build_jobs(
    dataset: TripDataset, assets: Sequence[dg.AssetsDefinition]
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.UnresolvedAssetJobDefinition]:
    """The dataset's monthly job and its daily job (a job cannot mix the two partitionings)."""

    def job(name: str, partitions_def, description: str) -> dg.UnresolvedAssetJobDefinition:
        # AssetSelection.assets also selects the checks of those assets, so the blocking
        # checks gate the sinks in every run these jobs make.
        return dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*keys_partitioned_by(assets, partitions_def)),
            description=description,
        )

    return (
        job(
            dataset.monthly_job,
            monthly_partitions,
            f"A month of {dataset.title} trips: download, clean, check, and every monthly sink.",
        ),
        job(
            dataset.daily_job,
            daily_partitions,
            f"A range of days of {dataset.title} trips from the cleaned months, in one run.",
        ),
    )
