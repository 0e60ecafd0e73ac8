"""Mapping a trip file of any era onto the canonical columns, one record batch at a time.

The TLC renamed and retyped its columns over the years (README, "Sources, eras and the
mapping"). `plan_mapping`
decides, from a file's schema alone (a Parquet footer, a CSV's parsed types), what happens to
each column, and refuses a column whose type cannot become the canonical one before a row is
read. `map_batch` then applies the plan to each batch as it streams. The plan's `report()` is
what the UI shows for the month: what was renamed, cast, absent, or new.

Rules: names match case-insensitively; int8..int32 → int64; large_string → string; a
Null-typed column → nulls of the canonical type; an absent column → nulls; double → int64
only when every value is whole (else the file, column, row and value are named); string
datetimes (yellow 2009/2010) are parsed; any other type change fails, naming the column and
both types. A column the contract does not know is carried, at the end, and reported as new, when its
name meets the sinks' rule (column_names.py).
A file without the dataset's pickup, dropoff or cleaning rules' columns is refused: it is
another series' (its columns are named), or it would lose every trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from taxi_assets.tlc.column_names import RULE, check_new_columns
from taxi_assets.datasets import TripDataset
from taxi_assets.tlc.schema import DATETIME_FORMAT, TripFileError, foreign_file_hint

_INTEGERS = (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16(), pa.uint32())


@dataclass(frozen=True)
class ColumnMapping:
    """How one output column is made from the file's column `source` (None: absent)."""

    name: str
    type: pa.DataType
    source: str | None
    source_type: pa.DataType | None
    action: str  # "as is", "cast", "whole numbers", "parse", "null-typed", "absent", "new"


@dataclass
class MappingPlan:
    file_name: str
    columns: list[ColumnMapping] = field(default_factory=list)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.type) for c in self.columns])

    @property
    def new_columns(self) -> dict[str, str]:
        return {c.name: str(c.type) for c in self.columns if c.action == "new"}

    def report(self) -> dict:
        """What was renamed, cast, absent or new: the month's mapping, for its metadata."""
        return {
            "renamed": {
                c.source: c.name
                for c in self.columns
                if c.source is not None and c.source != c.name
            },
            "cast": {
                c.name: f"{c.source_type} → {c.type}"
                for c in self.columns
                if c.action in ("cast", "whole numbers", "parse")
            },
            "null_typed": [c.name for c in self.columns if c.action == "null-typed"],
            "absent": [c.name for c in self.columns if c.action == "absent"],
            "new": self.new_columns,
        }


def _carried_type(type_: pa.DataType) -> pa.DataType:
    """A new column's type in the sinks: the canonical widths, and strings for untyped nulls."""
    if type_ in _INTEGERS:
        return pa.int64()
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_) or pa.types.is_null(type_):
        return pa.string()
    if pa.types.is_floating(type_):
        return pa.float64()
    return type_


def _action(source: pa.DataType, target: pa.DataType) -> str | None:
    """How a file column of type `source` becomes `target`; None if it cannot."""
    if source == target:
        return "as is"
    if pa.types.is_null(source):
        return "null-typed"
    if pa.types.is_integer(target) and (source in _INTEGERS):
        return "cast"
    if pa.types.is_integer(target) and pa.types.is_floating(source):
        return "whole numbers"
    if pa.types.is_floating(target) and (
        pa.types.is_floating(source) or pa.types.is_integer(source)
    ):
        return "cast"
    if pa.types.is_string(target) and (
        pa.types.is_large_string(source) or pa.types.is_string_view(source)
    ):
        return "cast"
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(source) and source.tz is None:
        return "cast"
    if pa.types.is_timestamp(target) and (
        pa.types.is_string(source) or pa.types.is_large_string(source)
    ):
        return "parse"
    return None


def plan_mapping(
    file_name: str,
    schema: pa.Schema,
    dataset: TripDataset,
    known_types: dict[str, pa.DataType] | None = None,
) -> MappingPlan:
    """The mapping of a file with this schema onto the dataset's canonical columns; raises
    TripFileError for an incompatible type or a file of another series.

    `known_types` are the types the sinks already hold for columns outside the contract: a
    new column that arrives with another type fails here too, before any sink is touched.
    """
    layout = dataset.legacy
    legacy = layout is not None and any(name.lower() in layout.extra_names for name in schema.names)
    by_canonical: dict[str, str] = {}
    for name in schema.names:
        canonical = (layout.names.get(name.lower(), name) if legacy else name).lower()
        if canonical in by_canonical:
            raise TripFileError(
                file_name,
                f"columns {by_canonical[canonical]!r} and {name!r} both map to {canonical!r}"
                f" (column names are compared ignoring case). Rule: {RULE}. Nothing was loaded",
            )
        by_canonical[canonical] = name
    lacking = [name for name in dataset.required_columns if name.lower() not in by_canonical]
    if lacking:
        raise TripFileError(
            file_name,
            f"is not a complete {dataset.title} file: it lacks {', '.join(lacking)}, "
            "which the pipeline needs of every month; nothing was loaded"
            + foreign_file_hint(dataset, schema.names),
        )
    plan = MappingPlan(file_name)
    taken: set[str] = set()
    for name, target in dataset.canonical_columns.items():
        source = by_canonical.get(name.lower())
        action = None if source is None else _action(schema.field(source).type, target)
        if source is not None and action is None:
            if not legacy:
                raise TripFileError(
                    file_name,
                    f"column {source!r} is {schema.field(source).type}, which cannot "
                    f"become the canonical {name!r} ({target})",
                )
            source = None  # a legacy column of names, not codes: carried below as it is
        plan.columns.append(
            ColumnMapping(
                name,
                target,
                source,
                None if source is None else schema.field(source).type,
                action or "absent",
            )
        )
        taken.add(source)
    for field_ in schema:
        if field_.name in taken:
            continue
        lower = field_.name.lower()
        name = (
            layout.extra_names.get(lower) or layout.named_codes.get(lower, lower)
            if legacy
            else field_.name
        )
        type_ = _carried_type(field_.type)
        known = (known_types or {}).get(name)
        if known is not None and known != type_:
            if _action(field_.type, known) not in ("as is", "cast", "null-typed"):
                raise TripFileError(
                    file_name,
                    f"column {field_.name!r} is {field_.type}, but the "
                    f"sinks hold it as {known}: not an additive change",
                )
            type_ = known
        plan.columns.append(ColumnMapping(name, type_, field_.name, field_.type, "new"))
    check_new_columns(file_name, plan.new_columns, dataset)
    return plan


def map_batch(plan: MappingPlan, batch: pa.RecordBatch, first_row: int = 0) -> pa.RecordBatch:
    """One batch of the file, as the plan's columns. `first_row`: the batch's row in the file."""
    arrays = []
    for column in plan.columns:
        if column.source is None:
            arrays.append(pa.nulls(batch.num_rows, column.type))
            continue
        values = batch.column(column.source)
        if column.action == "as is" or values.type == column.type:
            arrays.append(values)
        elif pa.types.is_null(values.type):
            arrays.append(pa.nulls(batch.num_rows, column.type))
        elif column.action == "whole numbers":
            arrays.append(_whole_numbers(plan, column, values, first_row))
        elif column.action == "parse":
            arrays.append(_parsed_times(plan, column, values, first_row))
        else:
            arrays.append(values.cast(column.type))
    return pa.RecordBatch.from_arrays(arrays, schema=plan.schema)


def map_batches(plan: MappingPlan, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A file's batches, as they stream, mapped by the plan made from its schema."""
    row = 0
    for batch in batches:
        yield map_batch(plan, batch, row)
        row += batch.num_rows


def _fail_at(
    plan: MappingPlan,
    column: ColumnMapping,
    values: pa.Array,
    bad: pa.Array,
    first_row: int,
    problem: str,
):
    row = pc.index(bad, True).as_py()
    raise TripFileError(
        plan.file_name,
        f"column {column.source!r}, row {first_row + row + 1}: {values[row].as_py()!r} {problem}",
    )


def _whole_numbers(plan, column, values: pa.Array, first_row: int) -> pa.Array:
    fraction = pc.not_equal(values, pc.trunc(values))
    if pc.any(fraction).as_py():
        _fail_at(
            plan,
            column,
            values,
            pc.fill_null(fraction, False),
            first_row,
            f"is not a whole number ({values.type} → {column.type})",
        )
    return pc.cast(values, column.type)


def _parsed_times(plan, column, values: pa.Array, first_row: int) -> pa.Array:
    parsed = pc.strptime(values, format=DATETIME_FORMAT, unit="us", error_is_null=True)
    failed = pc.and_(pc.is_null(parsed), pc.is_valid(values))
    if pc.any(failed).as_py():
        _fail_at(
            plan,
            column,
            values,
            failed,
            first_row,
            f"is not a valid timestamp (expected {DATETIME_FORMAT})",
        )
    return parsed
