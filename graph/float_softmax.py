"""Softmax over the last axis for the run loop: onnx's reference steps, bit for bit, on threads.

onnx's reference evaluator computes Softmax as `t = x - max(x); e = exp(t); e / sum(e)` in numpy,
and the graph must reproduce it bit for bit (its result is quantized again after the next
MatMul, where one ulp can move a value to the next integer step): ops.softmax(float32_steps=True)
does, one pass per row with numpy's exp replicated (ops/cpu/numpy_exp.py), on the session's
threads.

Attention computes Softmax(Div(scores, sqrt(d))): `divisor` folds that Div in (x / d first, in
float32, as the Div node would), in the same pass.
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
        # ops.softmax divides in float32: right for the float32 Div an ONNX graph has.
        self.divisor_is_float32 = divisor is None or np.asarray(divisor).dtype == np.float32

    def __call__(self, x, axis=None):
        axis = self.axis if axis is None else axis
        if x.ndim == 0 or x.size == 0 or axis % x.ndim != x.ndim - 1 or x.dtype != np.float32 \
                or not self.divisor_is_float32:
            return self._numpy(x, axis)
        return ops.softmax(x, float32_steps=True, divide_by=self.divisor,
                           threads=parallel.resolve(self.threads))

    def _numpy(self, x, axis):
        if self.divisor is not None:
            x = np.divide(x, self.divisor).astype(x.dtype, copy=False)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
