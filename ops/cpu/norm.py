"""layer_norm on the CPU (numba): per row, mean and variance in float64, then one write.

A row (the normalised trailing axes, flattened) is read three times while it sits in L1/L2 --
sum, sum of squared deviations (two passes: no cancellation, unlike E[x^2] - E[x]^2), write -- so
memory sees it read once and written once. The write computes ((x - mean) * rstd) * w + b in
float64 and rounds once to float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .mathfuncs import REDUCE_FLAGS
from .threads import threads_for


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def _row_sum(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.float64(x[i])
    return s


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def _row_sq_dev(x, mean):
    s = 0.0
    for i in range(x.shape[0]):
        d = np.float64(x[i]) - mean
        s += d * d
    return s


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write(x, mean, rstd, w, b, out):
    for i in range(x.shape[0]):
        out[i] = np.float32((np.float64(x[i]) - mean) * rstd * np.float64(w[i]) + np.float64(b[i]))


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write_no_bias(x, mean, rstd, w, out):
    for i in range(x.shape[0]):
        out[i] = np.float32((np.float64(x[i]) - mean) * rstd * np.float64(w[i]))


@njit(error_model="numpy", cache=True)
def layer_norm_row(x, w, b, epsilon, out):
    n = x.shape[0]
    mean = _row_sum(x) / n
    var = _row_sq_dev(x, mean) / n
    rstd = 1.0 / math.sqrt(var + epsilon)
    if b.shape[0] > 0:
        _row_write(x, mean, rstd, w, b, out)
    else:
        _row_write_no_bias(x, mean, rstd, w, out)


@njit(error_model="numpy", cache=True)
def layer_norm_rows(x, w, b, epsilon, out):
    for r in range(x.shape[0]):
        layer_norm_row(x[r], w, b, epsilon, out[r])


@njit(error_model="numpy", cache=True, parallel=True)
def layer_norm_rows_parallel(x, w, b, epsilon, out):
    for r in prange(x.shape[0]):
        layer_norm_row(x[r], w, b, epsilon, out[r])


_NO_BIAS = np.empty(0, np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias, epsilon: float, axis: int,
               out: np.ndarray, threads) -> np.ndarray:
    """Normalise over the axes axis..ndim-1 (ONNX LayerNormalization); weight (and bias, or None)
    hold x.shape[axis:] values; out C-contiguous float32 of x's shape."""
    if x.size == 0:
        return out
    x = np.ascontiguousarray(x)
    width = math.prod(x.shape[axis:])
    x2, out2 = x.reshape(-1, width), out.reshape(-1, width)
    w = np.ascontiguousarray(weight).reshape(-1)
    b = _NO_BIAS if bias is None else np.ascontiguousarray(bias).reshape(-1)
    if threads_for(x.size, x2.shape[0], threads) == 1:
        layer_norm_rows(x2, w, b, float(epsilon), out2)
    else:
        layer_norm_rows_parallel(x2, w, b, float(epsilon), out2)
    return out
