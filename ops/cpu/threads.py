"""How many threads an ops kernel uses, and how they share the work: as in the GEMM driver.

`threads=` per call, else I8GEMM_NUM_THREADS, else all of numba's threads; work below
PARALLEL_MIN_ELEMENTS runs on the calling thread, because waking numba's pool costs more (10-20 us)
than it saves on small arrays (the single-thread fast path).

A parallel kernel cuts its rows (or slabs, or runs of values) into blocks and its threads take
them from a shared counter as they come free (`take_block`), not in fixed shares: on shared cores
a thread that loses its core for a while would otherwise hold up the whole call at the join.
Which thread computes a block never changes what is computed, so results do not depend on the
thread count or on timing. The pattern, with (workers, block) from `split()`:

    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            ...rows lo:hi...
            lo, hi = take_block(counter, block, rows)
"""

from __future__ import annotations

# OpenMP's spin before a thread sleeps, as the GEMM driver sets it (dispatch/cpu.py says why).
from dispatch.cpu import set_openmp_spin_default  # noqa: E402

set_openmp_spin_default()

from numba import njit  # noqa: E402

import dispatch  # noqa: E402
from dispatch.atomics import fetch_add  # noqa: E402

# About 20-40 us of single-thread work for the row kernels here.
PARALLEL_MIN_ELEMENTS = 1 << 16
# A block holds at least this many values (64 KiB of float32, some microseconds of work), so
# taking one from the counter (tens of ns) costs nothing...
BLOCK_VALUES = 1 << 14
# ...unless that would leave fewer blocks than this per thread: then they are smaller, so that a
# thread delayed in its last block leaves the others little to wait for.
BLOCKS_PER_THREAD = 4


# The GEMM's thread policy, shared: `threads=`, then I8GEMM_NUM_THREADS, then all of numba's.
resolve_threads = dispatch.cpu.resolve_threads


def threads_for(elements: int, rows: int, threads) -> int:
    """Threads to use for `rows` independent rows holding `elements` values in all (1 = run the
    serial kernel). Also sets numba's thread count to it, for kernels that always use prange."""
    n = resolve_threads(threads)
    if n == 1 or rows < 2 or elements < PARALLEL_MIN_ELEMENTS:
        n = 1
    n = min(n, rows) if rows > 0 else 1
    dispatch.cpu.use_threads(n)
    return n


def split(units: int, unit_values: int, threads: int) -> tuple[int, int]:
    """(workers, block): `units` (rows, slabs, ...) of `unit_values` values each, in blocks of
    `block` units, for `threads` threads; workers = how many of them to start (no more than there
    are blocks)."""
    if threads <= 1 or units <= 1:
        return 1, max(units, 1)
    by_size = -(-BLOCK_VALUES // max(unit_values, 1))
    by_count = -(-units // (threads * BLOCKS_PER_THREAD))
    block = max(1, min(by_size, by_count))
    return min(threads, -(-units // block)), block


@njit(error_model="numpy", cache=True, nogil=True)
def take_block(counter, block, units):
    """(lo, hi): the next block of units lo:hi from the shared counter (a 1-element int64
    array); lo == hi once all are taken."""
    lo = min(fetch_add(counter, 1) * block, units)
    return lo, min(lo + block, units)
