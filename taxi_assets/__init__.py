import warnings

import pyarrow as pa
from dagster import BetaWarning, PreviewWarning

# The system allocator hands a month's freed buffers back to the OS as soon as they go;
# Arrow's default jemalloc pool keeps them, and a month's run then peaks ~40% higher.
pa.set_memory_pool(pa.system_memory_pool())

# Dagster's notices for the Beta and Preview APIs this project uses by choice (single-run
# backfills, partitioned checks, optional upstream partitions) would open every console that
# loads the code location, `make run`, `make dev` and each run, and no user can act on them.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
