"""The TLC trip files: their download, reading, columns and eras, as Arrow batches. No Dagster."""
