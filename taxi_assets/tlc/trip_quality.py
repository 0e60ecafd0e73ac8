"""What a month's quality checks count, over every batch of its cleaned trips.

The cleaning counts them as its batches pass (one pass over the rows: read, map, clean, count),
and the staged file keeps the counts in its footer, beside exactly the rows they count; the
checks read them there. A file staged without them is counted by reading it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.datasets import TripDataset
from taxi_assets.tlc.batches import true_count

QUALITY_COUNTS_KEY = "quality_counts"


@dataclass
class QualityCounts:
    """The checks' counts over one month's cleaned trips, as the footer keeps them."""

    rows: int = 0
    not_dropped: dict[str, int] = field(default_factory=dict)  # by drop rule's check name
    dropoff_before_pickup: int = 0
    unknown_vendor_rows: int = 0
    missing_vendors: int = 0
    unknown_ids: list[int] = field(default_factory=list)
    outside_months: int = 0  # picked up neither in the month nor the month before
    earliest_pickup: str = "NaT"
    latest_pickup: str = "NaT"
    columns: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, stored: dict) -> QualityCounts:
        return cls(**stored)

    def as_dict(self) -> dict:
        return asdict(self)


class QualityCounter:
    """Counts batch by batch; `counts()` says what they came to."""

    def __init__(self, dataset: TripDataset, month_key: str, columns: list[str]):
        self.dataset, self.columns = dataset, columns
        self.vendor, self.pickup = dataset.column("VendorID"), dataset.pickup
        self.dropoff = dataset.dropoff
        self.known_vendor_ids = pa.array(sorted(dataset.known_vendor_ids))
        month = pd.Timestamp(month_key)
        earliest, end = month - pd.DateOffset(months=1), month + pd.DateOffset(months=1)
        self.window = (earliest.to_pydatetime(), end.to_pydatetime())
        self.reset()

    def reset(self) -> None:
        self.totals = QualityCounts(
            not_dropped=dict.fromkeys((rule.check_name for rule in self.dataset.drop_rules), 0),
            columns=list(self.columns),
        )
        self.unknown_ids: set[int] = set()
        self.bounds: list = []  # each batch's first and last pickup

    def add(self, batch: pa.RecordBatch) -> None:
        totals, dataset = self.totals, self.dataset
        totals.rows += batch.num_rows
        for rule in dataset.drop_rules:
            totals.not_dropped[rule.check_name] += true_count(
                rule.matches(batch, dataset.column(rule.column))
            )
        picked_up = batch.column(self.pickup)
        totals.dropoff_before_pickup += true_count(pc.less(batch.column(self.dropoff), picked_up))
        if len(self.known_vendor_ids):
            vendors = batch.column(self.vendor)
            unknown = pc.and_(
                pc.is_valid(vendors), pc.invert(pc.is_in(vendors, value_set=self.known_vendor_ids))
            )
            totals.unknown_vendor_rows += true_count(unknown)
            totals.missing_vendors += vendors.null_count
            self.unknown_ids.update(int(v) for v in pc.unique(vendors.filter(unknown)).to_pylist())
        start, stop = (pa.scalar(t, picked_up.type) for t in self.window)
        outside = pc.or_(pc.less(picked_up, start), pc.greater_equal(picked_up, stop))
        totals.outside_months += true_count(outside)
        bounds = pc.min_max(picked_up)
        self.bounds += [bounds["min"].as_py(), bounds["max"].as_py()]
        # Two per batch are enough: the earliest and the latest so far.
        pickups = [b for b in self.bounds if b is not None]
        self.bounds = [min(pickups), max(pickups)] if pickups else []

    def counts(self) -> QualityCounts:
        pickups = pd.Series(self.bounds, dtype="datetime64[us]")
        self.totals.unknown_ids = sorted(self.unknown_ids)
        self.totals.earliest_pickup, self.totals.latest_pickup = (
            str(pickups.min()),
            str(pickups.max()),
        )
        return self.totals


def counted(
    dataset: TripDataset, month_key: str, columns: list[str], batches: Iterable[pa.RecordBatch]
) -> QualityCounts:
    """The counts of a month's batches, read for the purpose."""
    counter = QualityCounter(dataset, month_key, columns)
    for batch in batches:
        counter.add(batch)
    return counter.counts()
