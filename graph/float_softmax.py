"""Softmax over the last axis for the run loop: onnx's reference steps, bit for bit, on threads.

onnx's reference evaluator computes Softmax as `t = x - max(x); e = exp(t); e / sum(e)` in numpy,
and the graph must reproduce it bit for bit (its result is quantized again after the next
MatMul, where one ulp can move a value to the next integer step): ops.softmax(float32_steps=True)
does (numpy's own exp in the middle). The rows are split in `threads` even shares, one per thread
of graph/float_matmul.py's pool, the calling thread taking the first; each share is one
single-threaded ops call, so numpy's exp runs on all threads too (it releases the GIL, and so do
the ops kernels).

Attention computes Softmax(Div(scores, sqrt(d))): `divisor` folds that Div in (x / d first, in
the input's type, as the Div node would).
"""

from __future__ import annotations

import os

import numpy as np

import ops

from .float_matmul import _pool

# Below this many values one thread does it: handing work to the pool costs ~50 us.
_SPLIT_VALUES = 1 << 16


class FloatSoftmax:
    """Softmax(x, axis) (opset 13 on; after x / divisor, if given). threads: None for all
    cores."""

    def __init__(self, threads: int | None, divisor=None, axis: int = -1):
        self.threads = threads
        self.divisor = divisor
        self.axis = axis

    def __call__(self, x, axis=None):
        axis = self.axis if axis is None else axis
        if x.ndim == 0 or x.size == 0 or axis % x.ndim != x.ndim - 1 or x.dtype != np.float32:
            return self._numpy(x, axis)
        threads = self.threads or len(os.sched_getaffinity(0))
        n = x.shape[-1]
        rows = x.size // n
        src = np.ascontiguousarray(x).reshape(rows, n)
        out = np.empty((rows, n), np.float32)
        shares = threads if threads > 1 and x.size >= _SPLIT_VALUES else 1
        bounds = np.linspace(0, rows, shares + 1).astype(int)
        jobs = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        futures = [_pool(threads).submit(self._rows, src, out, lo, hi) for lo, hi in jobs[1:]]
        self._rows(src, out, *jobs[0])
        for f in futures:
            f.result()
        return out.reshape(x.shape)

    def _rows(self, src, out, lo, hi):
        x, e = src[lo:hi], out[lo:hi]
        if self.divisor is not None:
            x = np.divide(x, self.divisor, out=e)
        ops.softmax(x, float32_steps=True, out=e, threads=1)

    def _numpy(self, x, axis):
        if self.divisor is not None:
            x = np.divide(x, self.divisor).astype(x.dtype, copy=False)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
