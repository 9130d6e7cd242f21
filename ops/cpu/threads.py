"""How many threads an ops kernel uses: the same convention as the GEMM driver.

`threads=` per call, else I8GEMM_NUM_THREADS, else all of numba's threads; work below
PARALLEL_MIN_ELEMENTS runs on the calling thread, because waking numba's pool costs more (10-20 us)
than it saves on small arrays (the single-thread fast path).
"""

from __future__ import annotations

import os

# Short OpenMP spin after a parallel region, as in gemm/cpu/driver.py (why: see there). Effective
# only if OpenMP is not yet loaded; a user's own setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")

import numba  # noqa: E402  (after the OpenMP setting)
import numpy as np  # noqa: E402

import dispatch  # noqa: E402

# About 20-40 us of single-thread work for the row kernels here.
PARALLEL_MIN_ELEMENTS = 1 << 16


def resolve_threads(threads) -> int:
    """The thread count asked for (argument, then I8GEMM_NUM_THREADS, then all), checked."""
    if threads is None:
        env = dispatch.cpu.setting("I8GEMM_NUM_THREADS")
        if not env:
            return numba.config.NUMBA_NUM_THREADS
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"I8GEMM_NUM_THREADS={env!r} is not a whole number") from None
        argument = "I8GEMM_NUM_THREADS"
    else:
        argument = "threads"
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"{argument}: expected a whole number >= 1, got {threads!r}")
    return min(int(threads), numba.config.NUMBA_NUM_THREADS)


def threads_for(elements: int, rows: int, threads) -> int:
    """Threads to use for `rows` independent rows holding `elements` values in all (1 = run the
    serial kernel). Also sets numba's thread count to it, for kernels that always use prange."""
    n = resolve_threads(threads)
    if n == 1 or rows < 2 or elements < PARALLEL_MIN_ELEMENTS:
        n = 1
    n = min(n, rows) if rows > 0 else 1
    numba.set_num_threads(n)
    return n
