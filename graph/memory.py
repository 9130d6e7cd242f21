"""Keeping freed activation memory in the process, so a session's runs do not page it in again.

A run allocates every intermediate tensor afresh (numpy's own allocator, glibc malloc below it)
and frees it after its last reader. glibc maps blocks of 128 KB and more (a threshold it raises
to the largest block freed so far) straight from the kernel and hands them back on free, and it
returns the top of its heap to the kernel once more than twice that threshold is free. Either
way the next run touches new pages, and every first touch is a page fault: on the shared 2-core
virtual machine the encoder benchmark runs on, 3 800 faults per run of the int8 encoder (16 x
128 tokens, width 256) cost 14 ms of a 45 ms run (about 3.7 us each).

onnxruntime avoids this with an arena that keeps its buffers for the process's lifetime. Here
glibc is asked to do the same: serve blocks of up to 32 MB (its largest allowed threshold)
from its heap, and keep up to 1 GB of free heap instead of returning it. Freed memory is then
reused by the next run; the process's resident size stays at its high-water mark, as with an
arena. The settings are process-wide and apply from the first Session on;
I8GEMM_KEEP_FREED_MEMORY=0 leaves malloc as it is. Elsewhere than on glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the malloc settings above once per process. True if they are in effect."""
    if os.environ.get("I8GEMM_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The trim threshold first: setting either one ends glibc's own adjustment of both.
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
