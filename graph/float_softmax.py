"""Softmax over the last axis for the run loop: onnx's reference steps, bit for bit, on threads.

onnx's reference evaluator computes Softmax as `t = x - max(x); e = exp(t); e / sum(e)` in numpy,
and the graph must reproduce it bit for bit (its result is quantized again after the next
MatMul, where one ulp can move a value to the next integer step): ops.softmax(float32_steps=True)
does (numpy's own exp in the middle). The rows are split in blocks that the calling thread and
the pool's workers take as they are free (graph/parallel.py); each block is one single-threaded
ops call, so numpy's exp runs on all threads too (it releases the GIL, and so do the ops
kernels).

Attention computes Softmax(Div(scores, sqrt(d))): `divisor` folds that Div in (x / d first, in
the input's type, as the Div node would).
"""

from __future__ import annotations

import numpy as np

import ops

from . import parallel


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
        threads = parallel.resolve(self.threads)
        n = x.shape[-1]
        rows = x.size // n
        src = np.ascontiguousarray(x).reshape(rows, n)
        out = np.empty((rows, n), np.float32)
        blocks = parallel.bounds(rows, threads, max(1, (1 << 15) // n))
        parallel.run_chunks(lambda lo, hi: self._rows(src, out, lo, hi), blocks, threads)
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
