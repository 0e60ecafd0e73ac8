"""What Dagster loads: `dg.load_from_defs_folder` reads every module here (definitions.py)."""
