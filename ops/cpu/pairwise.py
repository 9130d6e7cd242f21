"""numpy's float32 sum of a contiguous row, in numpy's order of additions (bit for bit).

np.add.reduce over a contiguous float32 row (np.sum(x, axis=-1) on a C-contiguous array) adds
in numpy's pairwise_sum order: a block of at most 128 values in eight running sums (lane j takes
values j, j + 8, j + 16, ...), combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then
the last n % 8 one by one; a longer row split in two at n // 2 rounded down to a multiple of 8,
each half summed so, and the two sums added. onnx's reference evaluator sums this way (softmax's
denominator, layer norm's mean and variance), so kernels that must reproduce it bit for bit use
this.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PAIRWISE_BLOCK = 128   # numpy's PW_BLOCKSIZE


@njit(error_model="numpy", cache=True, nogil=True)
def _block_sum(x, lo, n):
    """numpy's pairwise_sum for n <= 128 values: eight running sums, combined as a tree, then
    the last n % 8 values one by one. (Offsets 8k from a slice's start: numba then drops its
    bounds arithmetic and the loop runs at about 0.2 ns per value.)"""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(lo, lo + n):
            res += x[i]
        return res
    m = n // 8
    b = x[lo:lo + 8 * m]
    r0, r1, r2, r3, r4, r5, r6, r7 = b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
    for k in range(1, m):
        o = 8 * k
        r0 += b[o]
        r1 += b[o + 1]
        r2 += b[o + 2]
        r3 += b[o + 3]
        r4 += b[o + 4]
        r5 += b[o + 5]
        r6 += b[o + 6]
        r7 += b[o + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(lo + 8 * m, lo + n):
        res += x[i]
    return res


@njit(error_model="numpy", cache=True, nogil=True)
def pairwise_sum(x, scratch, stack):
    """sum(x) in float32, added in numpy's order (np.add.reduce of a contiguous row): blocks of
    at most 128 values, a longer range split in halves at a multiple of 8, the halves' sums added.
    numpy recurses; this walks the same tree with an explicit stack (numba's recursion does not
    survive every caller). scratch: 64 float32; stack: (64, 3) int64."""
    n = x.shape[0]
    if n <= PAIRWISE_BLOCK:
        return _block_sum(x, 0, n)
    half = n // 2
    half -= half % 8
    if n - half <= PAIRWISE_BLOCK:   # one split (rows up to 256 values)
        return _block_sum(x, 0, half) + _block_sum(x, half, n - half)
    values = scratch
    vp = 0
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 0
    sp = 1
    while sp > 0:
        sp -= 1
        lo, m, combine = stack[sp, 0], stack[sp, 1], stack[sp, 2]
        if combine:
            values[vp - 2] = values[vp - 2] + values[vp - 1]
            vp -= 1
        elif m <= PAIRWISE_BLOCK:
            values[vp] = _block_sum(x, lo, m)
            vp += 1
        else:
            half = m // 2
            half -= half % 8
            stack[sp, 0], stack[sp, 1], stack[sp, 2] = lo, m, 1
            stack[sp + 1, 0], stack[sp + 1, 1], stack[sp + 1, 2] = lo + half, m - half, 0
            stack[sp + 2, 0], stack[sp + 2, 1], stack[sp + 2, 2] = lo, half, 0
            sp += 3
    return values[0]
