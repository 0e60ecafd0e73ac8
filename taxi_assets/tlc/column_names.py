"""Which column names from a source file may reach the sinks: the one rule, checked before any.

A file's column names are data from outside, and each sink holds names differently: PostgreSQL
cuts a name at 63 bytes, BigQuery takes letters, digits and underscores only (and reserves some
prefixes), DuckDB and BigQuery compare names without case, and PostgreSQL refuses its system
columns' names. A name one sink holds and another cuts, refuses or merges with another column
would leave the month half-written, so a new column is carried only when its name is

- letters (A–Z, a–z), digits and underscores, not starting with a digit;
- at most 63 bytes long;
- unique among the month's columns ignoring case (`Fee` and `fee` are one column);
- not one the project adds itself (`source_month`, the pickup date column, the snake_case
  names a dataset gives its contract's columns), a PostgreSQL system column, or one of
  BigQuery's reserved prefixes.

Anything else fails the month in its raw asset, before any sink, naming the column and the rule.
The sinks quote every name too, each by its dialect's rule: the rule keeps names portable, the
quoting keeps them data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from taxi_assets.datasets import TripDataset
from taxi_assets.tlc.schema import TripFileError

POSTGRES_MAX_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently cuts longer names
_PORTABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BIGQUERY_RESERVED_PREFIXES = (
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "__root__",
    "_colon_",
    "_change_",
)
_POSTGRES_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"})
PROJECT_COLUMN = "source_month"  # the Postgres table's partition column: the file's month

RULE = (
    "a source column's name must be letters, digits and underscores, not start with a digit, "
    f"be at most {POSTGRES_MAX_BYTES} bytes, differ from the month's other columns ignoring "
    "case, and not be a name the project adds or a sink reserves"
)


def project_names(dataset: TripDataset) -> set[str]:
    """Names the project gives columns itself, lower-cased: a file's column may not take one."""
    return {
        PROJECT_COLUMN,
        dataset.pickup_date.lower(),
        *(name.lower() for name in dataset.renamed.values()),
    }


def name_problem(name: str, reserved: Iterable[str] = ()) -> str | None:
    """Why `name` cannot be a sink's column name, or None when every sink can hold it."""
    if not _PORTABLE.fullmatch(name):
        return (
            "it has characters other than letters, digits and underscores, or starts with a digit"
        )
    if len(name.encode()) > POSTGRES_MAX_BYTES:
        return (
            f"it is {len(name.encode())} bytes long; PostgreSQL holds at most "
            f"{POSTGRES_MAX_BYTES} and would cut it"
        )
    lower = name.lower()
    if lower in set(reserved):
        return "the project adds a column of that name itself"
    if lower in _POSTGRES_SYSTEM_COLUMNS:
        return "it is a PostgreSQL system column's name"
    if lower.startswith(_BIGQUERY_RESERVED_PREFIXES):
        return "BigQuery reserves names starting like it"
    return None


def check_new_columns(file_name: str, names: Iterable[str], dataset: TripDataset) -> None:
    """Refuse the file when one of the new columns `names` breaks the rule (module docstring).

    Uniqueness ignoring case is checked where the file's names are matched to the contract's.
    """
    reserved = project_names(dataset)
    for name in names:
        problem = name_problem(name, reserved)
        if problem:
            raise TripFileError(
                file_name,
                f"column {name!r} cannot be loaded: {problem}. Rule: {RULE}. Nothing was "
                "loaded; rename the column in the file (or drop it) and run again",
            )
