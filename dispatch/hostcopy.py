"""Host-side copies into and out of mapped GPU staging memory: plain byte copies, and the float32
copy that checks finiteness on the way (a numpy A's check and its upload in one pass).

A copy of megabytes is bound by one core (on an H200's host a 4 MB read-back's copy out of mapped
memory took 280 us, torch's whole read-back 260 us), so larger copies are cut into parts that
threads copy at once: numpy releases the GIL while it copies, and the numba kernel is nogil.
Imports numba on first use of the checking copy only (the rest of `dispatch` does not need it).
"""

from __future__ import annotations

import functools
import os

import numpy as np

PART_BYTES = 1 << 20
THREADS = min(4, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _pool():
    import concurrent.futures
    return concurrent.futures.ThreadPoolExecutor(THREADS - 1, "i8gemm-copy")


def in_parts(work, nbytes: int, align: int) -> list:
    """work(lo, hi) over the bytes [0, nbytes), cut at multiples of `align` into parts on up to
    THREADS threads (one part below 2 * PART_BYTES); the parts' results."""
    parts = min(THREADS, nbytes // PART_BYTES)
    if parts < 2:
        return [work(0, nbytes)]
    bounds = [nbytes * i // parts // align * align for i in range(parts)] + [nbytes]
    others = [_pool().submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True)]
    first = work(0, bounds[1])
    return [first] + [f.result() for f in others]


def copy_bytes(into: np.ndarray, source: np.ndarray) -> None:
    """into[:] = source: uint8 arrays of one size."""
    in_parts(lambda lo, hi: np.copyto(into[lo:hi], source[lo:hi]), into.nbytes, 64)


def copy_if_finite(into: np.ndarray, source: np.ndarray) -> bool:
    """into[:] = source (uint32 views of float32 values, one size) where every value is finite;
    False, with `into` partly written, where one is NaN or infinite."""
    kernel = _copy_finite_kernel()
    return all(in_parts(lambda lo, hi: kernel(into[lo // 4:hi // 4], source[lo // 4:hi // 4]),
                         into.nbytes, 64))


@functools.lru_cache(maxsize=1)
def _copy_finite_kernel():
    from numba import njit

    @njit(nogil=True, cache=True, error_model="numpy")
    def copy_finite(into, source):
        # float32 bits with an all-ones exponent are NaN or infinity; an OR over the whole part
        # (no early exit) keeps the loop one vectorised pass.
        special = np.uint32(0)
        for i in range(source.shape[0]):
            bits = source[i]
            into[i] = bits
            special |= np.uint32((bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
        return special == 0

    return copy_finite
