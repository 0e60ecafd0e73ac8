"""Dagster partitions replace Mage's `execution_date`: one key per file month, one per day."""

import dagster as dg

# The months the public yellow-taxi CSV release (DataTalksClub nyc-tlc-data) holds.
FIRST_MONTH = "2019-01-01"
END_OF_RELEASE = "2021-08-01"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, end_date=END_OF_RELEASE)
daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_MONTH, end_date=END_OF_RELEASE)

# A trip is filed in the month its record reached the TLC, so the last hours of a month also
# turn up in the next month's file. A day therefore reads its own month and the next one;
# the release's last month has no next file, which is not an error.
day_to_file_months = dg.TimeWindowPartitionMapping(
    start_offset=0, end_offset=1, allow_nonexistent_upstream_partitions=True
)
