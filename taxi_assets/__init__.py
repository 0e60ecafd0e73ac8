import warnings

from taxi_assets import first_line

# `python -m taxi_assets.cli run` says what it is about to do before the imports below, which
# take a second or more.
first_line.announce_cli_run()

import ctypes  # noqa: E402
import os  # noqa: E402


def _return_freed_buffers_to_the_os() -> None:
    """Arrow allocates from the system allocator, glibc's malloc, which gives a block of
    128 KiB or more back to the OS when freed (it is an mmap), but raises that threshold (up to
    32 MiB) each time such a block is freed: after a month's first batches its buffers came
    from the heap, whose freed holes glibc keeps. A fixed threshold stays put; two arenas keep
    each thread (Arrow's, the Postgres client's) from holding a heap of its own. Arrow's C++
    default pool, mimalloc, kept 60-70 MB of a month's freed buffers as well. Together 130-150 MB off a
    month's peak, for ~15% more CPU in page faults; docs/performance.md has the trade-off."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "gnu_get_libc_version"):  # other C libraries have other knobs
        m_arena_max, m_mmap_threshold = -8, -3  # glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_arena_max, 2)
    # Read by Arrow's C++ (the CSV and Parquet readers, compute kernels) when pyarrow loads;
    # set_memory_pool covers pyarrow's own calls in a process that loaded it before us.
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"


_return_freed_buffers_to_the_os()

import pyarrow as pa  # noqa: E402

pa.set_memory_pool(pa.system_memory_pool())

# Dagster's notices for the Beta and Preview APIs this project uses by choice (single-run
# backfills, partitioned checks, optional upstream partitions) would open every console that
# loads the code location, `make run`, `make dev` and each run, and no user can act on them.
# Matched by their wording, not their class, so that tlc/ and storage/ load without Dagster.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview), ")
