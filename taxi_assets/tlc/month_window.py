"""A month's file feeds the days of its month and, with late-filed trips, of the month before.
Trips picked up on any other day (real files carry 2002 and 2088 pickups) reach Postgres and
the monthly object, but no day: they are counted and their dates said, apart from late-filed.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

OUTSIDE_ROWS_KEY = "outside_window_rows"
OUTSIDE_DATES_KEY = "outside_window_pickups"


class FeedableDays:
    """Kept trips picked up outside the days a month's file can feed: its own month's, and
    (filed late) the month before's. They stay in Postgres and the month's object, in no day."""

    def __init__(self, pickup: str, month_key: str):
        self.pickup, self.month_key = pickup, month_key
        self.start, self.end = feedable_days(month_key)
        self.reset()

    def reset(self) -> None:
        self.outside = 0
        self.first: pd.Timestamp | None = None
        self.last: pd.Timestamp | None = None

    def count(self, trips: pa.RecordBatch) -> None:
        pickups = trips.column(self.pickup)
        start, end = (pa.scalar(t.to_pydatetime(), pickups.type) for t in (self.start, self.end))
        # Trips without a pickup time are in no window, and not counted outside either.
        outside = pickups.filter(pc.or_(pc.less(pickups, start), pc.greater_equal(pickups, end)))
        if not len(outside):
            return
        self.outside += len(outside)
        bounds = pc.min_max(outside)
        low, high = pd.Timestamp(bounds["min"].as_py()), pd.Timestamp(bounds["max"].as_py())
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)

    def metadata(self) -> dict:
        return {
            OUTSIDE_ROWS_KEY: self.outside,
            OUTSIDE_DATES_KEY: f"{self.first:%Y-%m-%d} … {self.last:%Y-%m-%d}"
            if self.outside
            else "",
        }

    def sentence(self) -> str:
        return outside_window_sentence(
            self.outside, self.metadata()[OUTSIDE_DATES_KEY], self.month_key
        )


def feedable_days(month_key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The pickup times a month's file can feed days with: [start of the month before, end of
    the month)."""
    month = pd.Timestamp(month_key)
    return month - pd.DateOffset(months=1), month + pd.DateOffset(months=1)


def outside_window_sentence(rows: int, dates: str, month_key: str) -> str:
    start, end = feedable_days(month_key)
    last = end - pd.Timedelta(days=1)
    return (
        f"{rows:,} trips were picked up outside the days this file can feed "
        f"({start:%Y-%m-%d} to {last:%Y-%m-%d}), on {dates}: they stay in "
        "Postgres and the monthly file, in no day."
    )
