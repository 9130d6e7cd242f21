"""logsoftmax, softmax and log_softmax_topk on the GPU (WGSL).

Last axis: one workgroup per row (softmax.wgsl, topk.wgsl over rows.wgsl): one pass computes the
max and the sum of e**(x - max) online -- each invocation reads vec4 groups WG apart, eight
loads in flight, so a workgroup's loads are contiguous -- a workgroup tree merges the
invocations, and softmax's second pass re-reads the row and writes it. Memory sees the row read
twice (the second read often from L2) and written once, whatever the row length.
Another axis: one invocation per column of the (outer, n, inner) view (softmax_strided.wgsl).
top-k (topk.wgsl, k up to TOPK_MAX): the first pass also keeps each invocation's largest
value; the k-th largest of those is a threshold, and only the shares of the invocations that
reach it (k of them, more with ties) are read again to gather the values at or above it.
These kernels run ROW_WG invocations per row: on an H200, (4096, 32000) top-k with k = 8 took
211 us with 128 against 434 us with 256 (more rows in flight; logsoftmax 397 against 378 us).
One size for all three keeps top-k's values bit for bit logsoftmax's (the size sets the
order of the sum), and it bounds k, since the threshold is the k-th of ROW_WG maxima.
"""

from __future__ import annotations

import math

import numpy as np

from . import programs as pg

ROW_WG = 128          # invocations per row in softmax.wgsl and topk.wgsl
TOPK_MAX = ROW_WG     # k at most: the threshold is the k-th largest of ROW_WG maxima


def _rows_source(vec: bool) -> dict:
    """Template values of rows.wgsl: the array type and load4() for rows of this alignment."""
    return dict(XT=pg.xtype(vec), LOAD=pg.row_load(vec), WG=ROW_WG)


def _softmax(x, axis: int, out, mode: int):
    if x.size == 0:
        return out
    shape = x.shape
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    dst = pg.target(out, x)
    if inner == 1:
        vec = n % 4 == 0
        prog = pg.program("softmax.wgsl", "rwu", "rows.wgsl", MODE=mode, STORE=pg.row_store(vec),
                          **_rows_source(vec))
        disp = (prog, (x.buffer, dst.buffer, pg.params(outer, n, -(-n // 4), 0)), pg.grid(outer))
    else:
        prog = pg.program("softmax_strided.wgsl", "rwu", MODE=mode)
        disp = (prog, (x.buffer, dst.buffer, pg.params(outer, n, inner, 0)),
                pg.grid(-(-(outer * inner) // pg.WG)))
    pg.run([disp])
    return pg.finish(out, dst)


def logsoftmax(x, axis: int, out, threads):
    """x: float32 GpuArray; axis normalised; out: float32 GpuArray of x's shape."""
    return _softmax(x, axis, out, 0)


def softmax(x, axis: int, out, threads):
    return _softmax(x, axis, out, 1)


def log_softmax_topk(x, k: int, out_values, out_indices, threads):
    """out_values float32 and out_indices int32 GpuArrays of shape (..., k)."""
    if k > TOPK_MAX:
        raise ValueError(f"k: the GPU kernel selects at most {TOPK_MAX} values per row, got {k}")
    if out_values.size == 0:
        return out_values, out_indices
    n = x.shape[-1]
    rows = x.size // n
    vec = n % 4 == 0
    prog = pg.program("topk.wgsl", "rwwu", "rows.wgsl", "candidates.wgsl", **_rows_source(vec))
    pg.run([(prog, (x.buffer, out_values.buffer, out_indices.buffer,
                     pg.params(rows, n, -(-n // 4), k)), pg.grid(rows))])
    return out_values, out_indices


INDEX_DTYPE = np.dtype(np.int32)


def softmax_float32_steps(x, out, threads, divide_by=None):
    raise ValueError("float32_steps: only on the CPU (it follows numpy's float32 exp and "
                     "summation order bit for bit)")
