"""The taxi_assets code location: whatever the modules under `defs/` define, merged."""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
