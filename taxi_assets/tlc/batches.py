"""Trips as a stream of Arrow record batches: what flows between the pipeline's steps.

A month is 1.5-15 M rows; held whole it costs about 370 bytes a row several times over. A step
therefore never holds it: it reads batches of `BATCH_ROWS` from the step before (a staged
Parquet file, read row group by row group), works on one at a time and hands them on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from queue import Full, Queue

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.tlc.schema import to_pandas

# Rows per batch and per staged row group. 64k rows (~8 MB of Arrow) measured fastest for the
# Postgres COPY, which encodes each batch in one piece, and keeps every step's memory to a few
# batches (`make bench`, README). Tests shrink it to run a small month through many batches.
BATCH_ROWS = 65_536


@dataclass
class TripBatches:
    """A re-readable stream of record batches under one schema.

    Each iteration starts from the beginning (`open` is called anew), so a check and a sink can
    each read the same staged month. `num_rows` is known when the source says so up front (a
    staged file), else None. Producers put what they learn while the batches pass (rows
    dropped, say) in `metadata`; the IO manager consuming the stream records it once done.
    """

    schema: pa.Schema
    open: Callable[[], Iterable[pa.RecordBatch]]
    num_rows: int | None = None
    metadata: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return iter(self.open())

    @classmethod
    def of(cls, obj: TripBatches | pd.DataFrame | pa.Table) -> TripBatches:
        """A stream over what an asset returned: batches as they are, or a frame in slices."""
        if isinstance(obj, TripBatches):
            return obj
        table = (
            obj if isinstance(obj, pa.Table) else pa.Table.from_pandas(obj, preserve_index=False)
        )
        return cls(
            table.schema,
            lambda: table.to_batches(max_chunksize=BATCH_ROWS),
            num_rows=table.num_rows,
        )

    def map(
        self, function: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema | None = None
    ) -> TripBatches:
        """The same stream with `function`, which keeps a batch's rows, applied to each batch
        as it passes."""
        return TripBatches(schema or self.schema, lambda: map(function, self), self.num_rows)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, iter(self))

    def to_table(self) -> pa.Table:
        """All of it at once: for people (notebooks, small days), never for the pipeline."""
        return pa.Table.from_batches(list(self), schema=self.schema)

    def to_pandas(self) -> pd.DataFrame:
        return to_pandas(self.to_table())


def true_count(mask: pa.BooleanArray | pa.ChunkedArray) -> int:
    """How many rows `mask` selects (nulls select none)."""
    return pc.sum(mask, min_count=0).as_py()


class RowsPerDay(dict):
    """An input typed RowsPerDay asks its IO manager how many rows each day ("YYYY-MM-DD") of
    the partition column holds, counted where the rows are, not for the rows: all a
    reconciliation needs, whatever the size of the days."""


def conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch under `schema`, the union of several files' schemas: a column another file
    brought is nulls here, a column typed null here (all empty) gets the union's type."""
    if batch.schema.equals(schema):
        return batch
    names = batch.schema.names
    return pa.RecordBatch.from_arrays(
        [
            batch.column(f.name).cast(f.type)
            if f.name in names
            else pa.nulls(batch.num_rows, f.type)
            for f in schema
        ],
        schema=schema,
    )


def rows_per_day(batches: Iterable[pa.RecordBatch], column: str) -> RowsPerDay:
    """The batches' rows counted per day of `column`, one batch at a time."""
    counts = RowsPerDay()
    for batch in batches:
        for entry in pc.value_counts(pc.cast(batch.column(column), pa.date32())).to_pylist():
            day = str(entry["values"])
            counts[day] = counts.get(day, 0) + entry["counts"]
    return counts


def rebatched(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches regrouped into tables of `rows` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = batch.slice(0, rows - held)
            pending.append(take)
            held += take.num_rows
            batch = batch.slice(take.num_rows)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def prefetched(batches: Iterable[pa.RecordBatch], depth: int = 3) -> Iterator[pa.RecordBatch]:
    """The batches, produced by a thread of their own at most `depth` ahead of the consumer.

    While the consumer (a COPY the driver sends with the GIL released) is busy with one batch,
    the thread reads and prepares the next ones on the other core; the queue bounds how many
    batches are in memory at once. An error in the producer is raised in the consumer.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failed(error))
            return
        put(_END)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
