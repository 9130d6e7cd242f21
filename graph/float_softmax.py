"""Softmax over the last axis for the run loop: numpy's own steps, on row blocks, on our threads.

onnx's reference evaluator computes Softmax as `t = x - max(x); e = exp(t); e / sum(e)` in numpy,
and the graph must reproduce it bit for bit (its result is quantized again after the next
MatMul, where one ulp can move a value to the next integer step). numpy's float32 exp is its own
SIMD code, so these are numpy calls too -- but on blocks of rows small enough to stay in L2
between the five passes, in place on the output, and split over `threads` threads (numpy releases
the GIL inside its loops) on graph/float_matmul.py's pool. Each row's result does not depend on
the block it is in: the steps are elementwise or reduce one contiguous row.

Attention computes Softmax(Div(scores, sqrt(d))): `divisor` folds that Div in (x / d first, as
the Div node would, in float32).
"""

from __future__ import annotations

import os

import numpy as np

from .float_matmul import _pool

# Rows per block: 64 KiB of float32 per block keeps the passes in L2.
_BLOCK_BYTES = 1 << 16


class FloatSoftmax:
    """Softmax(x, axis) (opset 13 on; after x / divisor, if given) for float x. threads: None
    for all cores."""

    def __init__(self, threads: int | None, divisor=None, axis: int = -1):
        self.threads = threads
        self.divisor = divisor
        self.axis = axis

    def __call__(self, x, axis=None):
        axis = self.axis if axis is None else axis
        if x.ndim == 0 or x.size == 0 or axis % x.ndim != x.ndim - 1 or x.dtype.kind != "f":
            return self._plain(x, axis)
        threads = self.threads or len(os.sched_getaffinity(0))
        src = np.ascontiguousarray(x)
        out = np.empty_like(src)
        n = src.shape[-1]
        rows = src.size // n
        s2, o2 = src.reshape(rows, n), out.reshape(rows, n)
        block = max(1, _BLOCK_BYTES // (n * src.itemsize))
        starts = list(range(0, rows, block))
        if threads < 2 or len(starts) < 2:
            self._rows(s2, o2, 0, rows)
            return out
        # Even shares, one per thread; the calling thread does the first.
        bounds = np.linspace(0, len(starts), threads + 1).astype(int)
        shares = [(starts[a], starts[b] if b < len(starts) else rows)
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        futures = [_pool(threads).submit(self._share, s2, o2, lo, hi, block)
                   for lo, hi in shares[1:]]
        self._share(s2, o2, *shares[0], block)
        for f in futures:
            f.result()
        return out

    def _share(self, s2, o2, lo, hi, block):
        for start in range(lo, hi, block):
            self._rows(s2, o2, start, min(start + block, hi))

    def _rows(self, s2, o2, lo, hi):
        x, e = s2[lo:hi], o2[lo:hi]
        if self.divisor is not None:
            np.divide(x, self.divisor, out=e)
            x = e
        np.subtract(x, x.max(axis=-1, keepdims=True), out=e)
        np.exp(e, out=e)
        e /= e.sum(axis=-1, keepdims=True)

    def _plain(self, x, axis):
        if self.divisor is not None:
            x = np.divide(x, self.divisor).astype(x.dtype, copy=False)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
