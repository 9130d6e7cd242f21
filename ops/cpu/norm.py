"""layer_norm on the CPU (numba): per row, mean and variance in float64, then one write.

A row (the normalised trailing axes, flattened) is read twice while it sits in L1/L2 -- the sum
and the sum of squares about one of its values (see STAT_CHUNK: the shift bounds the
cancellation of E[x^2] - E[x]^2), then the write -- so memory sees it read once and written once.
The write computes ((x - mean) * rstd) * w + b in float64 and rounds once to float32, which
keeps the error within 2 eps (|y64| + |b|); float32 arithmetic could not (x - mean and
rstd * w would each round once before the final rounding).

float32_steps: the float32 arithmetic of onnx's reference LayerNormalization instead, bit for
bit -- numpy's sums (pairwise.py: numpy's order of additions for a contiguous float32 row),
mean = sum / n, d = x - mean, var = sum(d * d) / n, rstd = 1 / sqrt(var + float32(eps)),
y = (d * rstd) * w + b, each operation rounded to float32 and no FMA. A graph runner needs it:
the result is quantized again next, and one ulp can move a value to the next integer step.

A residual, if given, is added first (x + residual, in float32: ONNX Add followed by
LayerNormalization), row by row into `out`, which the row is then normalised in.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dispatch.cpu import prange_only

from .arrays import out_is_x
from .mathfuncs import REDUCE_FLAGS
from .pairwise import ROWS_AT_ONCE, pairwise_sum, short_row_sums, sums_side_by_side
from .quantize import EMPTY_RANGE, combine_ranges, min_max, min_max_bad_serial
from .threads import split, take_block, threads_for

# Statistics are taken over pieces of at most STAT_CHUNK values, each summed about its own first
# value k: sum(x - k) and sum((x - k)**2) in one pass, then var = (sum sq - sum**2 / c) / c. The
# subtraction cancels at most a factor 1 + c ((k - mean)**2 <= c var, as k is one of the c values),
# which float64 sums of float32 data absorb for c up to 4096 (relative error below 2**-30); longer
# rows merge their pieces with Chan et al.'s pairwise update.
STAT_CHUNK = 4096


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def _shifted_sums(x, k):
    """(sum(x - k), sum((x - k)**2)) in float64."""
    s = 0.0
    q = 0.0
    for i in range(x.shape[0]):
        d = np.float64(x[i]) - k
        s += d
        q += d * d
    return s, q


@njit(error_model="numpy", cache=True)
def row_mean_var(x):
    """(mean, variance) of a non-empty row, in float64."""
    n = x.shape[0]
    mean = 0.0
    m2 = 0.0   # sum of squared deviations from `mean` of the values merged so far
    for lo in range(0, n, STAT_CHUNK):
        part = x[lo:min(lo + STAT_CHUNK, n)]
        c = part.shape[0]
        k = np.float64(part[0])
        s, q = _shifted_sums(part, k)
        part_mean = k + s / c
        part_m2 = max(q - s * (s / c), 0.0)
        if lo == 0:
            mean, m2 = part_mean, part_m2
        else:
            delta = part_mean - mean
            mean += delta * (c / (lo + c))
            m2 += part_m2 + delta * delta * (lo * (c / (lo + c)))
    return mean, m2 / n


# The writes compute ((x - mean) * rstd) * w + b in float64 and round once. w and b arrive as
# float64 copies when a call has several rows (two conversions fewer per value); x is read from
# `out` itself in the in-place forms: LLVM's overlap check sends a loop whose input and output
# are the same array to its scalar version.


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write(x, mean, rstd, w, b, out):
    for i in range(x.shape[0]):
        out[i] = np.float32((np.float64(x[i]) - mean) * rstd * np.float64(w[i]) + np.float64(b[i]))


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write_no_bias(x, mean, rstd, w, out):
    for i in range(x.shape[0]):
        out[i] = np.float32((np.float64(x[i]) - mean) * rstd * np.float64(w[i]))


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write_in_place(y, mean, rstd, w, b):
    for i in range(y.shape[0]):
        y[i] = np.float32((np.float64(y[i]) - mean) * rstd * np.float64(w[i]) + np.float64(b[i]))


@njit(error_model="numpy", fastmath={"contract"}, cache=True)
def _row_write_in_place_no_bias(y, mean, rstd, w):
    for i in range(y.shape[0]):
        y[i] = np.float32((np.float64(y[i]) - mean) * rstd * np.float64(w[i]))


@njit(error_model="numpy", cache=True)
def _add(a, b, out):
    for i in range(a.shape[0]):
        out[i] = a[i] + b[i]


@njit(error_model="numpy", cache=True)
def layer_norm_row(x, w, b, epsilon, out, in_place):
    """One row: out = layer_norm(x); in_place: out is x."""
    mean, var = row_mean_var(x)
    rstd = 1.0 / math.sqrt(var + epsilon)
    if in_place:
        if b.shape[0] > 0:
            _row_write_in_place(out, mean, rstd, w, b)
        else:
            _row_write_in_place_no_bias(out, mean, rstd, w)
    elif b.shape[0] > 0:
        _row_write(x, mean, rstd, w, b, out)
    else:
        _row_write_no_bias(x, mean, rstd, w, out)


@njit(error_model="numpy", cache=True, nogil=True)
def layer_norm_rows(x, res, w, b, epsilon, out):
    """x, out: (rows, n), out either x itself or apart from it; res: x's shape (added to x
    first, in float32 as ONNX's Add, into out, where the row is then normalised) or (0, 0); b: n
    values or none."""
    in_place = out_is_x(x, out)
    if res.shape[0] > 0:
        for r in range(x.shape[0]):
            _add(x[r], res[r], out[r])
            layer_norm_row(out[r], w, b, epsilon, out[r], True)
    else:
        for r in range(x.shape[0]):
            layer_norm_row(x[r], w, b, epsilon, out[r], in_place)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def layer_norm_rows_parallel(x, res, w, b, epsilon, out, workers, block):
    """Blocks of `block` rows, taken by `workers` threads as they come free (threads.py)."""
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            layer_norm_rows(x[lo:hi], res[lo:hi] if res.shape[0] > 0 else res, w, b, epsilon,
                            out[lo:hi])
            lo, hi = take_block(counter, block, rows)


# -- float32 steps (onnx's reference, bit for bit) ---------------------------------------------

@njit(error_model="numpy", cache=True, inline="always")
def _center(x, mean, d, sq):
    for i in range(x.shape[0]):
        v = x[i] - mean
        d[i] = v
        sq[i] = v * v


@njit(error_model="numpy", cache=True, inline="always")
def _scale_shift(d, var, w, b, epsilon, out):
    rstd = np.float32(1.0) / np.sqrt(var + epsilon)
    if b.shape[0] > 0:
        for i in range(d.shape[0]):
            out[i] = (d[i] * rstd) * w[i] + b[i]
    else:
        for i in range(d.shape[0]):
            out[i] = (d[i] * rstd) * w[i]


@njit(error_model="numpy", cache=True)
def layer_norm_row_f32(x, w, b, epsilon, out, d, sq, scratch, stack):
    """One row in float32 steps; d, sq: scratch of the row's length (out may be x); scratch and
    stack: pairwise_sum's."""
    nf = np.float32(x.shape[0])
    _center(x, pairwise_sum(x, scratch, stack) / nf, d, sq)
    _scale_shift(d, pairwise_sum(sq, scratch, stack) / nf, w, b, epsilon, out)


@njit(error_model="numpy", cache=True)
def _rows_f32(x, res, w, b, epsilon, out, lo, hi, d, sq, s, scratch, stack, lohi, bads):
    """Rows lo:hi; d, sq, s: scratch of ROWS_AT_ONCE rows; scratch, stack: pairwise_sum's.
    Unless lohi is empty, each output row's (min, max) goes to lohi[r] and its count of NaN and
    inf to bads[r], read while the row is in L1. Rows that short_row_sums takes go ROWS_AT_ONCE
    at a time, their sums side by side (alone, each 128-value block's sum waits on the adder's
    latency); the values are the same."""
    n = x.shape[1]
    nf = np.float32(n)
    sums = np.empty(2 * ROWS_AT_ONCE, np.float32)
    together = ROWS_AT_ONCE if sums_side_by_side(n) else 1
    r = lo
    while r + together <= hi and together > 1:
        if res.shape[0] > 0:
            for i in range(together):
                _add(x[r + i], res[r + i], s[i])
            short_row_sums(s, 0, sums)
            for i in range(together):
                _center(s[i], sums[i] / nf, d[i], sq[i])
        else:
            short_row_sums(x, r, sums)
            for i in range(together):
                _center(x[r + i], sums[i] / nf, d[i], sq[i])
        short_row_sums(sq, 0, sums)
        for i in range(together):
            _scale_shift(d[i], sums[i] / nf, w, b, epsilon, out[r + i])
            if lohi.shape[0] > 0:
                lohi[r + i, 0], lohi[r + i, 1], bads[r + i] = min_max_bad_serial(out[r + i])
        r += together
    for row in range(r, hi):
        if res.shape[0] > 0:
            _add(x[row], res[row], s[0])
            layer_norm_row_f32(s[0], w, b, epsilon, out[row], d[0], sq[0], scratch, stack)
        else:
            layer_norm_row_f32(x[row], w, b, epsilon, out[row], d[0], sq[0], scratch, stack)
        if lohi.shape[0] > 0:
            lohi[row, 0], lohi[row, 1], bads[row] = min_max_bad_serial(out[row])


@njit(error_model="numpy", cache=True)
def _f32_scratch(n):
    return (np.empty((ROWS_AT_ONCE, n), np.float32), np.empty((ROWS_AT_ONCE, n), np.float32),
            np.empty((ROWS_AT_ONCE, n), np.float32), np.empty(64, np.float32),
            np.empty((64, 3), np.int64))


@njit(error_model="numpy", cache=True, nogil=True)
def layer_norm_rows_f32(x, res, w, b, epsilon, out, lohi, bads):
    d, sq, s, scratch, stack = _f32_scratch(x.shape[1])
    _rows_f32(x, res, w, b, epsilon, out, 0, x.shape[0], d, sq, s, scratch, stack, lohi, bads)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def layer_norm_rows_f32_parallel(x, res, w, b, epsilon, out, workers, block, lohi, bads):
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        d, sq, s, scratch, stack = _f32_scratch(x.shape[1])
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            _rows_f32(x, res, w, b, epsilon, out, lo, hi, d, sq, s, scratch, stack, lohi, bads)
            lo, hi = take_block(counter, block, rows)


_NO_BIAS = np.empty(0, np.float32)
_NO_RESIDUAL = np.empty((0, 0), np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias, epsilon: float, axis: int,
               out: np.ndarray, threads, residual=None, float32_steps: bool = False,
               with_range: bool = False):
    """Normalise x (+ residual, of x's shape, or None) over the axes axis..ndim-1 (ONNX
    LayerNormalization); weight (and bias, or None) hold x.shape[axis:] values; out C-contiguous
    float32 of x's shape. with_range: returns (out, (min, max, count of NaN and inf) of out)."""
    if x.size == 0:
        return (out, EMPTY_RANGE) if with_range else out
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
        rows = x2.shape[0] if with_range else 0
        lohi, bads = np.empty((rows, 2), np.float32), np.empty(rows, np.int64)
        if workers == 1:
            layer_norm_rows_f32(x2, res2, w, b, eps32, out2, lohi, bads)
        else:
            layer_norm_rows_f32_parallel(x2, res2, w, b, eps32, out2, workers, block, lohi, bads)
        return (out, combine_ranges(lohi, bads)) if with_range else out
    if x2.shape[0] >= 4:   # float64 copies of w and b (see the writes above)
        w, b = w.astype(np.float64), b.astype(np.float64)
    if workers == 1:
        layer_norm_rows(x2, res2, w, b, float(epsilon), out2)
    else:
        layer_norm_rows_parallel(x2, res2, w, b, float(epsilon), out2, workers, block)
    # (The float64 path has no in-cache range: it is read back, once.)
    return (out, min_max(out, threads)) if with_range else out
