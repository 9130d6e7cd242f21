"""Splitting a step's work over the session's threads so that a busy core cannot stall it.

numba's prange (its OpenMP layer) gives each thread an equal share up front, and a parallel
region ends only when its slowest thread does. On cores shared with other processes one
descheduled thread then stalls the whole op for a scheduler time slice (milliseconds; measured on
a shared 2-core machine: a 0.5 ms GEMM taking 2-4 ms with 2 threads, 1.3 ms with one). onnxruntime
avoids this by letting the calling thread take whatever work is left. `run_chunks` does the same:
the calling thread and `threads - 1` pool workers take chunk numbers from a shared counter, each
chunk runs a single-threaded kernel that releases the GIL, and a worker that gets no core costs
at most the chunk it holds. The graph's float MatMuls use it (numpy's matmul on pieces of the
stack). gemm_i8 and the ops kernels split their own work the same way inside numba (blocks taken
from a shared counter), which costs less than ~10 us of Python per chunk: the graph calls them
once per step with the session's thread count (`resolve`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os

# Chunks per thread: enough that the last one to finish is short, few enough that the ~10 us of
# Python per chunk stays small.
CHUNKS_PER_THREAD = 3


@functools.cache
def pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="i8gemm-graph")


def resolve(threads: int | None) -> int:
    """The session's thread count: None means every core this process may run on."""
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bounds(total: int, threads: int, minimum: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering range(total): about CHUNKS_PER_THREAD per thread, none shorter
    than `minimum` (one range for one thread or a small total, none if total is 0)."""
    if total <= 0:
        return []
    if threads < 2:
        return [(0, total)]
    count = max(1, min(threads * CHUNKS_PER_THREAD, total // max(minimum, 1)))
    step = -(-total // count)
    return [(lo, min(lo + step, total)) for lo in range(0, total, step)]


def run_chunks(fn, chunks: list, threads: int) -> None:
    """fn(*chunk) for every chunk, on the calling thread and up to threads - 1 pool workers,
    each taking the next chunk when it is free. Exceptions propagate."""
    if threads < 2 or len(chunks) < 2:   # (no chunks: nothing to do)
        for chunk in chunks:
            fn(*chunk)
        return
    counter = itertools.count()   # next() on it is atomic under the GIL

    def work():
        while (i := next(counter)) < len(chunks):
            fn(*chunks[i])

    futures = [pool(threads).submit(work) for _ in range(min(threads, len(chunks)) - 1)]
    try:
        work()
    finally:
        for f in futures:
            f.result()
