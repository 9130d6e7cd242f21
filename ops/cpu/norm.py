"""layer_norm on the CPU (numba): per row, mean and variance in float64, then one write.

A row (the normalised trailing axes, flattened) is read three times while it sits in L1/L2 --
sum, sum of squared deviations (two passes: no cancellation, unlike E[x^2] - E[x]^2), write -- so
memory sees it read once and written once. The write computes ((x - mean) * rstd) * w + b in
float64 and rounds once to float32.

float32_steps: the float32 arithmetic of onnx's reference LayerNormalization instead, bit for
bit -- numpy's sums (pairwise.py: numpy's order of additions for a contiguous float32 row),
mean = sum / n, d = x - mean, var = sum(d * d) / n, rstd = 1 / sqrt(var + float32(eps)),
y = (d * rstd) * w + b, each operation rounded to float32 and no FMA. A graph runner needs it:
the result is quantized again next, and one ulp can move a value to the next integer step.

A residual, if given, is added first (x + residual, in float32: ONNX Add followed by
LayerNormalization), so the sum is never written to memory.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .mathfuncs import REDUCE_FLAGS
from .pairwise import pairwise_sum
from .threads import split, take_block, threads_for


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


@njit(error_model="numpy", cache=True, nogil=True)
def layer_norm_rows(x, w, b, epsilon, out):
    for r in range(x.shape[0]):
        layer_norm_row(x[r], w, b, epsilon, out[r])


@njit(error_model="numpy", cache=True, parallel=True)
def layer_norm_rows_parallel(x, w, b, epsilon, out, workers, block):
    """Blocks of `block` rows, taken by `workers` threads as they come free (threads.py)."""
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            for r in range(lo, hi):
                layer_norm_row(x[r], w, b, epsilon, out[r])
            lo, hi = take_block(counter, block, rows)


# -- float32 steps (onnx's reference, bit for bit) ---------------------------------------------

@njit(error_model="numpy", cache=True)
def layer_norm_row_f32(x, w, b, epsilon, out, d, sq, scratch, stack):
    """One row in float32 steps; d, sq: scratch of the row's length (out may be x); scratch and
    stack: pairwise_sum's."""
    n = x.shape[0]
    nf = np.float32(n)
    mean = pairwise_sum(x, scratch, stack) / nf
    for i in range(n):
        v = x[i] - mean
        d[i] = v
        sq[i] = v * v
    var = pairwise_sum(sq, scratch, stack) / nf
    rstd = np.float32(1.0) / np.sqrt(var + epsilon)
    if b.shape[0] > 0:
        for i in range(n):
            out[i] = (d[i] * rstd) * w[i] + b[i]
    else:
        for i in range(n):
            out[i] = (d[i] * rstd) * w[i]


@njit(error_model="numpy", cache=True)
def _rows_f32(x, res, w, b, epsilon, out, lo, hi, d, sq, s, scratch, stack):
    """Rows lo:hi; d, sq, s: scratch of a row's length; scratch, stack: pairwise_sum's."""
    for r in range(lo, hi):
        if res.shape[0] > 0:
            _add(x[r], res[r], s)
            layer_norm_row_f32(s, w, b, epsilon, out[r], d, sq, scratch, stack)
        else:
            layer_norm_row_f32(x[r], w, b, epsilon, out[r], d, sq, scratch, stack)


@njit(error_model="numpy", cache=True)
def _add(a, b, out):
    for i in range(a.shape[0]):
        out[i] = a[i] + b[i]


@njit(error_model="numpy", cache=True)
def _f32_scratch(n):
    return (np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32),
            np.empty(64, np.float32), np.empty((64, 3), np.int64))


@njit(error_model="numpy", cache=True, nogil=True)
def layer_norm_rows_f32(x, res, w, b, epsilon, out):
    d, sq, s, scratch, stack = _f32_scratch(x.shape[1])
    _rows_f32(x, res, w, b, epsilon, out, 0, x.shape[0], d, sq, s, scratch, stack)


@njit(error_model="numpy", cache=True, parallel=True)
def layer_norm_rows_f32_parallel(x, res, w, b, epsilon, out, workers, block):
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        d, sq, s, scratch, stack = _f32_scratch(x.shape[1])
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            _rows_f32(x, res, w, b, epsilon, out, lo, hi, d, sq, s, scratch, stack)
            lo, hi = take_block(counter, block, rows)


@njit(error_model="numpy", cache=True)
def _add_rows(x, res, out):
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[r, i] = x[r, i] + res[r, i]


_NO_BIAS = np.empty(0, np.float32)
_NO_RESIDUAL = np.empty((0, 0), np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias, epsilon: float, axis: int,
               out: np.ndarray, threads, residual=None, float32_steps: bool = False) -> np.ndarray:
    """Normalise x (+ residual, of x's shape, or None) over the axes axis..ndim-1 (ONNX
    LayerNormalization); weight (and bias, or None) hold x.shape[axis:] values; out C-contiguous
    float32 of x's shape."""
    if x.size == 0:
        return out
    x = np.ascontiguousarray(x)
    width = math.prod(x.shape[axis:])
    x2, out2 = x.reshape(-1, width), out.reshape(-1, width)
    w = np.ascontiguousarray(weight).reshape(-1)
    b = _NO_BIAS if bias is None else np.ascontiguousarray(bias).reshape(-1)
    res2 = _NO_RESIDUAL if residual is None else \
        np.ascontiguousarray(residual).reshape(-1, width)
    workers, block = split(x2.shape[0], width, threads_for(x.size, x2.shape[0], threads))
    if float32_steps:
        eps32 = np.float32(epsilon)
        if workers == 1:
            layer_norm_rows_f32(x2, res2, w, b, eps32, out2)
        else:
            layer_norm_rows_f32_parallel(x2, res2, w, b, eps32, out2, workers, block)
        return out
    if residual is not None:
        # The float64 path reads its row three times: form x + residual once (out is scratch).
        _add_rows(x2, res2, out2)
        x2 = out2
    if workers == 1:
        layer_norm_rows(x2, w, b, float(epsilon), out2)
    else:
        layer_norm_rows_parallel(x2, w, b, float(epsilon), out2, workers, block)
    return out
