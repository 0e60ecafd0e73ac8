"""`make backfill`: a range of months as one Dagster backfill per dataset (run.py)."""
