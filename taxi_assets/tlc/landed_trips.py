"""A landed trip file read as its dataset's canonical columns: the one way a month's rows are
read, and the recipe that says how.

The raw step plans the era mapping from the file's schema alone (a bad header or type fails
there, before a row is read) and keeps the file itself with its `ReadRecipe` beside it; the step
after reads, maps and cleans the rows in one pass through `mapped_trips`, with the same recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.datasets import dataset_named
from taxi_assets.tlc.batches import TripBatches
from taxi_assets.tlc.schema import file_schema, trip_batches
from taxi_assets.tlc.schema_mapping import MappingPlan, map_batches, plan_mapping

# The metadata key of how many rows the file held, kept and dropped: counted by the step that
# reads them (the cleaning), since the raw step does not.
ROWS_READ_KEY = "rows_read"


@dataclass(frozen=True)
class ReadRecipe:
    """How to read a landed file: its dataset, the types the sinks hold for columns beyond the
    canonical ones (by pyarrow alias), the ceilings on its rows and decompressed bytes, and the
    name its errors give it (the source's file name)."""

    dataset: str
    file_name: str
    max_rows: int
    max_bytes: int
    known_types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        dataset: str,
        file_name: str,
        *,
        max_rows: int,
        max_bytes: int,
        known_types: dict[str, pa.DataType] | None = None,
    ) -> ReadRecipe:
        return cls(
            dataset,
            file_name,
            max_rows,
            max_bytes,
            {name: str(type_) for name, type_ in (known_types or {}).items()},
        )


@dataclass(frozen=True)
class LandedTrips:
    """A month's raw trips as stored: the landed file itself, and how to read it."""

    path: Path
    recipe: ReadRecipe

    def read(self) -> tuple[MappingPlan, TripBatches]:
        return mapped_trips(self.path, self.recipe)


def mapped_trips(path: Path, recipe: ReadRecipe) -> tuple[MappingPlan, TripBatches]:
    """The file's trips as the dataset's canonical columns, read and mapped batch by batch as
    they are iterated; and the mapping, planned from the file's schema before a row is read."""
    dataset = dataset_named(recipe.dataset)
    known_types = {name: pa.type_for_alias(alias) for name, alias in recipe.known_types.items()}
    plan = plan_mapping(path.name, file_schema(path, dataset), dataset, known_types)
    return plan, TripBatches(
        plan.schema,
        lambda: map_batches(
            plan,
            trip_batches(
                path, dataset=dataset, max_rows=recipe.max_rows, max_bytes=recipe.max_bytes
            ),
        ),
    )


def rows_in_footer(path: Path) -> int | None:
    """How many rows the file holds when that costs no read of them (a Parquet footer's count);
    None for a CSV, which only a full read can count."""
    return pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None
