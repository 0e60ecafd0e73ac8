import warnings

from taxi_assets import first_line

# `python -m taxi_assets.cli run` says what it is about to do before the imports below, which
# take a second or more.
first_line.announce_cli_run()

import pyarrow as pa  # noqa: E402

# The system allocator hands a month's freed buffers back to the OS as soon as they go;
# Arrow's default jemalloc pool keeps them, and a month's run then peaks ~40% higher.
pa.set_memory_pool(pa.system_memory_pool())

# Dagster's notices for the Beta and Preview APIs this project uses by choice (single-run
# backfills, partitioned checks, optional upstream partitions) would open every console that
# loads the code location, `make run`, `make dev` and each run, and no user can act on them.
# Matched by their wording, not their class, so that tlc/ and storage/ load without Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview), ")
