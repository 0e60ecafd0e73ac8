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
from taxi_assets.tlc.month_window import feedable_days

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
        # Pickups near the file's month: the days it can feed, the month before's included.
        self.window = tuple(t.to_pydatetime() for t in feedable_days(month_key))
        self.reset()

    def reset(self) -> None:
        self.totals = QualityCounts(
            not_dropped=dict.fromkeys((rule.check_name for rule in self.dataset.drop_rules), 0),
            columns=list(self.columns),
        )
        self.unknown_ids: set[int] = set()
        self.earliest = self.latest = None  # pickups, over the batches so far

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
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None:  # a batch without pickup times has no bounds
            self.earliest = low if self.earliest is None else min(self.earliest, low)
            self.latest = high if self.latest is None else max(self.latest, high)

    def counts(self) -> QualityCounts:
        self.totals.unknown_ids = sorted(self.unknown_ids)
        # As pandas prints a pickup: microseconds only where there are some; NaT for none.
        self.totals.earliest_pickup, self.totals.latest_pickup = (
            str(pd.Timestamp(self.earliest)),
            str(pd.Timestamp(self.latest)),
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
