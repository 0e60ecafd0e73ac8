"""Dagster partitions replace Mage's `execution_date`: one key per file month, one per day."""

import dagster as dg

# The TLC's first monthly file, yellow's; every dataset shares these partitions, and the
# source says which of them it carries of each (green's begin in 2013-08). There is no fixed
# end: a month's partition exists once the month is over (and a day's once the day is),
# whether or not it is published yet.
FIRST_MONTH = "2009-01-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH)
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_MONTH)

# A trip is filed in the month its record reached the TLC, so the last hours of a month also
# turn up in the next month's file. A day therefore reads its own month and the next one;
# the newest month has no next file yet, which is not an error.
day_to_file_months = dg.TimeWindowPartitionMapping(
    start_offset=0, end_offset=1, allow_nonexistent_upstream_partitions=True
)
