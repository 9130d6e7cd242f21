"""Float MatMul for the run loop: BLAS on one thread per piece, the pieces on our own threads.

Attention's MatMuls are stacks of small products ((batch, heads) x 128 x 64 x 128). OpenBLAS
threads each small product separately, and on shared cores its spinning workers starve the
int8 kernels' threads that run next (measured: 43 ms for a stack one thread does in 6 ms). So
a Session runs BLAS single-threaded (`blas_single_threaded()`, held for the whole run) and
splits each MatMul itself: the stacked products, or the rows of a 2-D one, in pieces that the
calling thread and the pool's workers take as they are free (graph/parallel.py; numpy releases
the GIL inside BLAS). Results are numpy's np.matmul on each piece, so they are numpy's results.
"""

from __future__ import annotations

import functools

import numpy as np

from . import parallel

# Below this many multiply-adds one thread does it: handing work to the pool costs ~50 us.
_SPLIT_WORK = 1 << 22


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded (none if it finds none)."""
    try:
        import threadpoolctl
        return tuple(threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers)
    except Exception:  # no BLAS threadpool found: nothing to limit
        return ()


class blas_single_threaded:  # noqa: N801 (used as a function: `with blas_single_threaded():`)
    """A context in which numpy's BLAS uses one thread, restoring its count after.

    Each Session.run enters it, so it asks each library for its count and sets only what
    differs: ~2 us a run, where threadpoolctl's own `limit` context took ~11 us (it lists the
    libraries and their settings anew each time)."""

    def __enter__(self):
        self._restore = []
        for lib in _blas_libraries():
            threads = lib.get_num_threads()
            if threads is not None and threads != 1:
                lib.set_num_threads(1)
                self._restore.append((lib, threads))
        return self

    def __exit__(self, *exc):
        for lib, threads in self._restore:
            lib.set_num_threads(threads)
        return False


class FloatMatMul:
    """np.matmul(A, B) split over `threads` threads."""

    def __init__(self, threads: int):
        self.threads = threads

    def __call__(self, A, B):
        if A.ndim < 2 or B.ndim < 2 or self.threads < 2:
            return np.matmul(A, B)
        m, k = A.shape[-2:]
        n = B.shape[-1]
        batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        count = int(np.prod(batch)) if batch else 1
        if count * m * k * n < _SPLIT_WORK or B.shape[-2] != k:
            return np.matmul(A, B)
        out = np.empty((*batch, m, n), np.result_type(A, B))
        if A.ndim == B.ndim >= 3 and A.shape[:-2] == B.shape[:-2] and A.shape[0] >= self.threads:
            # Stacks of equal batch shape (attention's (batch, heads) products), split along the
            # first axis: views of the operands as they are -- transposed views included, as the
            # reference evaluator passes them -- with no copy to a flat stack.
            pieces = parallel.bounds(A.shape[0], self.threads, 1)
            parallel.run_chunks(lambda lo, hi: np.matmul(A[lo:hi], B[lo:hi], out=out[lo:hi]),
                                pieces, self.threads)
        elif count >= self.threads:
            a = np.broadcast_to(A, (*batch, m, k)).reshape(count, m, k)
            b = np.broadcast_to(B, (*batch, k, n)).reshape(count, k, n)
            o = out.reshape(count, m, n)
            pieces = parallel.bounds(count, self.threads, 1)
            parallel.run_chunks(lambda lo, hi: np.matmul(a[lo:hi], b[lo:hi], out=o[lo:hi]),
                                pieces, self.threads)
        else:
            # np.matmul's out= must not be a strided view with broadcasting quirks: row slices
            # of a C-contiguous array are accepted.
            a = np.broadcast_to(A, (*batch, m, k))
            pieces = parallel.bounds(m, self.threads, 16)
            parallel.run_chunks(lambda lo, hi: np.matmul(a[..., lo:hi, :], B, out=out[..., lo:hi, :]),
                                pieces, self.threads)
        return out
