"""What a run started from the terminal prints: a line per step, a closing table, the cause.

`terminal_logger` is the code location's `console` logger; `python -m taxi_assets.cli run` picks
it in the run config, so a re-execution from the UI logs the same way. At INFO it prints the
assets' own messages (download and load progress) and one line as each step starts and ends,
with its figures; at DEBUG every Dagster event, as Dagster's own console logger does. The full
stack trace of a failure is in the run's event log, not here.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping

import dagster as dg

from taxi_assets import human
from taxi_assets.datasets import TripDataset
from taxi_assets.tlc.landed_trips import ROWS_READ_KEY
from taxi_assets.tlc.month_window import (
    OUTSIDE_DATES_KEY,
    OUTSIDE_ROWS_KEY,
    outside_window_sentence,
)

LOGGER_NAME = "console"
NOT_EXECUTING = re.compile(r"Dependencies for step \S+ (?:failed|were not executed): \[(.*)\]")
RECORD_METADATA = "dagster_meta"  # the attribute Dagster's log handler sets on each record

# Which setting fixes a failure, by the exception types (anywhere in its chain) it raised.
SETTING_FOR_ERROR = {
    "DownloadFailed": "TAXI_SOURCE_URL (where the monthly files come from) or TAXI_SOURCE "
    "(datatalks for CSV.gz, tlc for Parquet)",
    "URLError": "TAXI_SOURCE_URL (where the monthly files come from)",
    "OperationalError": "TAXI_PG_PORT (locally) or TAXI_PG_HOST/TAXI_PG_PORT (gcp)",
}
# A database error's message says which Postgres setting is wrong, whatever its driver's class.
POSTGRES_HINTS = [
    (
        re.compile(
            r"password authentication failed|authentication failed|no pg_hba\.conf entry"
            r"|no password supplied|role \S+ does not exist",
            re.IGNORECASE,
        ),
        "TAXI_PG_PASSWORD (and TAXI_PG_USER, whose password it is)",
    ),
    (re.compile(r"database \S+ does not exist", re.IGNORECASE), "TAXI_PG_DB"),
    (
        re.compile(
            r"connection refused|could not translate host name|Name or service not known"
            r"|timeout expired|No route to host",
            re.IGNORECASE,
        ),
        "TAXI_PG_HOST and TAXI_PG_PORT (locally TAXI_PG_PORT alone)",
    ),
]
_DATABASE_ERRORS = ("OperationalError", "ProgrammingError", "InterfaceError", "DatabaseError")


def run_config(log_level: str) -> dict:
    return {"loggers": {LOGGER_NAME: {"config": {"log_level": log_level}}}}


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO")},
    description="One line per step, with its figures; every event at DEBUG.",
)
def terminal_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("taxi_assets", level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stdout)
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    handler.addFilter(StepLines(level if isinstance(level, int) else logging.INFO))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    return logger


class StepLines(logging.Filter):
    """Rewrites Dagster's records into the console's lines, or drops them."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level
        self.figures: dict[str, list[Mapping]] = defaultdict(list)
        self.checks: dict[str, list] = defaultdict(list)

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, RECORD_METADATA, None) or {}
        if self.level <= logging.DEBUG or not meta:
            return record.levelno >= self.level
        event = meta.get("dagster_event")
        step = meta.get("step_key") or meta.get("job_name") or ""
        if event is None:  # an asset's own message, or the executor's
            message = meta.get("orig_message", record.getMessage())
            needs = NOT_EXECUTING.match(message)
            if needs:
                return self._say(record, step, f"not run: it needs {needs.group(1)}")
            if record.levelno < self.level:
                return False
            level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
            return self._say(record, step, level + message)
        line = self._event_line(event, step)
        return line is not None and self._say(record, step, line)

    def _say(self, record: logging.LogRecord, step: str, text: str) -> bool:
        # Step keys spell asset keys with "__" ("ny_taxi__yellow_cab_data"); say them as the
        # closing table and the UI do.
        record.msg, record.args = f"{step.replace('__', '/'):27} {text}", None
        return True

    def _event_line(self, event: dg.DagsterEvent, step: str) -> str | None:
        kind = event.event_type_value
        data = event.event_specific_data
        if kind == "STEP_START":
            return "started"
        if kind == "ASSET_MATERIALIZATION":
            self.figures[step].append(data.materialization.metadata)
        elif kind == "ASSET_CHECK_EVALUATION":
            self.checks[step].append(data)
        elif kind == "STEP_SUCCESS":
            return f"done in {human.duration(data.duration_ms / 1000)}{self._figures(step)}"
        elif kind == "STEP_FAILURE":
            return f"FAILED: {failure_cause(data)}"
        return None

    def _figures(self, step: str) -> str:
        parts = []
        materializations = self.figures.pop(step, [])
        if materializations:
            rows = _rows(materializations[0])
            if rows is not None:
                parts.append(f"{rows:,} rows")
            if len(materializations) > 1:
                parts.append(f"{len(materializations)} partitions")
        checks = self.checks.pop(step, [])
        if checks:
            failed = sorted({c.check_name for c in checks if not c.passed})
            passed = sum(c.passed for c in checks)
            parts.append(
                f"checks: {passed} passed"
                + (f", {len(checks) - passed} failed ({', '.join(failed)})" if failed else "")
            )
        return ": " + "; ".join(parts) if parts else ""


def run_line(run: dg.DagsterRun) -> str:
    return f"{run.job_name} {_partitions(run.job_name, run.tags)}: run {run.run_id}"


def _partitions(job_name: str, tags: Mapping[str, str]) -> str:
    from taxi_assets.datasets import DATASETS

    if "dagster/partition" in tags:
        key = tags["dagster/partition"]
        monthly = {dataset.monthly_job for dataset in DATASETS.values()}
        return key[:7] if job_name in monthly else key  # a month as YYYY-MM
    first = tags.get("dagster/asset_partition_range_start")
    return (
        f"{first}...{tags.get('dagster/asset_partition_range_end')}" if first else "unpartitioned"
    )


def _rows(metadata: Mapping) -> int | None:
    for key in ("rows_in_run", "dagster/row_count"):
        if key in metadata:
            return int(metadata[key].value)
    return None


# --- failure ---------------------------------------------------------------------------------


def _chain(error) -> Iterable:
    while error is not None:
        yield error
        error = error.cause or error.context


def failure_cause(step_failure) -> str:
    """The failure in one line: a `dg.Failure`'s description, else the first exception raised
    by our code or a library (not Dagster's wrapper around it)."""
    if getattr(step_failure, "user_failure_data", None) and (
        step_failure.user_failure_data.description
    ):
        return step_failure.user_failure_data.description.splitlines()[0]
    errors = list(_chain(step_failure.error))
    ours = [e for e in errors if not (e.cls_name or "").startswith("Dagster")]
    cause = (ours or errors or [None])[0]
    if cause is None:
        return "unknown error"
    # "taxi_assets.tlc.source.DownloadFailed: ..." reads as "DownloadFailed: ..."
    return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", cause.message.strip().splitlines()[0])


def setting_for(step_failure) -> str | None:
    if step_failure.user_failure_data:
        setting = step_failure.user_failure_data.metadata.get("setting")
        if setting is not None:
            return str(setting.value)
    errors = list(_chain(step_failure.error))
    for error in errors:
        if (error.cls_name or "").endswith(_DATABASE_ERRORS):
            for pattern, setting in POSTGRES_HINTS:
                if pattern.search(error.message):
                    return setting
    for error in errors:
        if error.cls_name in SETTING_FOR_ERROR:
            return SETTING_FOR_ERROR[error.cls_name]
    return None


def sinks_written(results) -> list[str]:
    """The sinks these runs wrote, in order: each asset they materialized but the staged raw
    and cleaned trips."""
    from taxi_assets.datasets import DATASETS

    staging = {a for d in DATASETS.values() for a in (d.raw_asset, d.cleaned_asset)}
    written = [
        e.event_specific_data.materialization.asset_key.to_user_string()
        for result in results
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    return [a for a in dict.fromkeys(written) if a not in staging]


def sinks_sentence(written: list[str], unchanged: list[str]) -> str:
    """Which sinks a failed run (or command) wrote and which it left as they were: a failed
    download is told apart from a failed write, and a write that failed half-way says which
    half."""
    if not written:
        return "No sink was written: every sink is unchanged" + (
            f" ({', '.join(unchanged)})." if unchanged else "."
        )
    return f"Sinks written: {', '.join(written)}." + (
        f" Unchanged: {', '.join(unchanged)}." if unchanged else ""
    )


def sinks_line(result, earlier=()) -> str:
    """Which sinks the command wrote (its runs before the failed one included), and which of
    the failed run's it left as they were."""
    from taxi_assets.datasets import DATASETS

    written = sinks_written([*earlier, result])
    job = result.dagster_run.job_name
    sinks = [
        sink
        for dataset in DATASETS.values()
        if job in (dataset.monthly_job, dataset.daily_job)
        for sink in dataset.sink_assets
    ]
    return sinks_sentence(written, [sink for sink in sinks if sink not in written])


def failure_summary(result, webserver: str, earlier=()) -> list[str]:
    """The closing lines of a failed run: its cause, the setting to change, which sinks were
    written before it (`earlier`: the command's runs before this one), where the trace is."""
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    lines = [f"The run {result.run_id} failed."]
    if failures:
        data = failures[0].event_specific_data
        lines.append(f"Cause ({failures[0].step_key}): {failure_cause(data)}")
        setting = setting_for(data)
        if setting:
            lines.append(f"Setting that fixes it: {setting}")
    else:
        # Failed outside any step (e.g. claiming a pool slot): the run's own error says why.
        errors = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value in ("RUN_FAILURE", "ENGINE_EVENT")
            and getattr(e.event_specific_data, "error", None) is not None
        ]
        lines.append(f"Cause: {failure_cause(errors[-1])}" if errors else "Cause: unknown")
    lines.append(sinks_line(result, earlier))
    lines.append(f"Full trace: `make dev`, then {webserver}/runs/{result.run_id}")
    return lines


# --- the closing table -----------------------------------------------------------------------


def _where(metadata: Mapping) -> str:
    values = {key: value.value for key, value in metadata.items()}
    if "chart_path" in values:  # the revenue mart: its table, and its picture
        rest = {key: value for key, value in metadata.items() if key != "chart_path"}
        return f"{_where(rest)}; chart {values['chart_path']}"
    if "table" in values:
        return f"PostgreSQL table {values['table']}"
    if "objects" in values and values["objects"]:
        return re.sub(r"\d{4}/\d{2}/\d{2}", "YYYY/MM/DD", str(values["objects"][0]))
    if "uri" in values:
        return str(values["uri"])
    if values.get("dagster/storage_kind") == "duckdb":
        database, schema, table = str(values["dagster/table_name"]).rsplit(".", 2)
        return f"DuckDB {database}, table {schema}.{table}"
    if "dagster/table_name" in values:
        return f"{values.get('dagster/storage_kind', 'table')} {values['dagster/table_name']}"
    if "path" in values:
        return f"staging {values['path']}"
    return "-"


def landed(results) -> list[tuple[str, str, int | None, int]]:
    """Each asset the runs materialized: where, rows, and how many daily partitions."""
    by_asset: dict[str, list] = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            by_asset.setdefault(materialization.asset_key.to_user_string(), []).append(
                materialization
            )
    from taxi_assets.datasets import DATASETS

    # A raw month is its landed file, not read to count it: its rows are those its cleaning read.
    cleaned_of = {dataset.raw_asset: dataset.cleaned_asset for dataset in DATASETS.values()}
    table = []
    for asset, materializations in by_asset.items():
        first = materializations[0]
        days = len(materializations) if len(materializations) > 1 else 0
        rows = _rows(first.metadata)
        if rows is None and cleaned_of.get(asset) in by_asset:
            read = by_asset[cleaned_of[asset]][0].metadata.get(ROWS_READ_KEY)
            rows = int(read.value) if read else None
        table.append((asset, _where(first.metadata), rows, days))
    return table


def closing_table(
    month: str,
    rows: list[tuple[str, str, int | None, int]],
    seconds: float,
    datasets: list[TripDataset],
    outside: Mapping[str, tuple[int, str]] | None = None,
) -> list[str]:
    width = max([27, *(len(asset) for asset, *_ in rows)])
    lines = [
        f"{month} materialized in {human.duration(seconds)}:",
        f"  {'asset':{width}} {'rows':>9} {'days':>4}  where",
    ]
    for asset, where, count, days in rows:
        lines.append(
            f"  {asset:{width}} {'' if count is None else f'{count:,}':>9} {days or '':>4}  {where}"
        )
    counts = {asset: count for asset, _, count, _ in rows}
    for dataset in datasets:
        month_rows = counts.get(dataset.cleaned_asset)
        day_rows = counts.get(dataset.lake_by_day_asset)
        outside_rows, dates = (outside or {}).get(dataset.cleaned_asset, (0, ""))
        if outside_rows:
            lines.append(
                f"The {dataset.title} month: "
                + outside_window_sentence(outside_rows, dates, f"{month}-01")
            )
            if month_rows is not None:
                month_rows -= outside_rows
        if month_rows is not None and day_rows is not None and month_rows != day_rows:
            lines.append(late_filed_note(dataset, month, month_rows, day_rows))
    return lines


def outside_window(results) -> dict[str, tuple[int, str]]:
    """Per cleaned asset, its trips picked up outside the days its month can feed, and when."""
    found = {}
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            metadata = materialization.metadata
            if OUTSIDE_ROWS_KEY in metadata:
                found[materialization.asset_key.to_user_string()] = (
                    metadata[OUTSIDE_ROWS_KEY].value,
                    metadata[OUTSIDE_DATES_KEY].value,
                )
    return found


def late_filed_note(dataset: TripDataset, month: str, month_rows: int, day_rows: int) -> str:
    if month_rows > day_rows:
        return (
            f"The {dataset.title} days hold {month_rows - day_rows:,} fewer trips than the "
            "month: the TLC files "
            f"a trip in the month it reached them, so {month}'s file also holds trips picked "
            "up before the month (late-filed). They stay in Postgres and the monthly file, and "
            "belong to the days they were picked up on."
        )
    return (
        f"The {dataset.title} days hold {day_rows - month_rows:,} more trips than the month: "
        "late-filed trips "
        f"of {month}'s days from the next month's file."
    )
