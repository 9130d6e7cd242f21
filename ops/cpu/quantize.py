"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear on the CPU (numba), bit for bit as
onnx's reference implementation computes them.

quantize:   q = clamp(rint(x / scale) + zero_point, qmin, qmax)   x / scale a float32 division
            (not a multiplication by 1/scale, which rounds differently), rint half to even.
            The clamp happens before the conversion to integer, so values beyond int32 and +-inf
            saturate (the reference's float -> int32 cast is undefined there). NaN is counted and
            reported to the caller, which raises.
dequantize: y = (float32(q) - float32(zero_point)) * scale  (the difference is exact).
dynamic:    min and max of x in one pass (which also counts NaN and inf), then quantize.

Per-axis parameters: x is viewed as (outer, n, inner) with one scale and zero point per n.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from dispatch.cpu import prange_only

from .mathfuncs import vector_min_max
from .threads import split, take_block, threads_for


@njit(error_model="numpy", cache=True)
def _quantize_run(x, scale, zp, lo, hi, out):
    """out = clamp(rint(x / scale), lo, hi) + zp over 1-D arrays; returns the NaN count."""
    nan = 0
    for i in range(x.shape[0]):
        v = np.rint(x[i] / scale)
        nan += v != v
        v = lo if v < lo else v
        v = hi if v > hi else v
        out[i] = np.int32(v) + zp
    return nan


@njit(error_model="numpy", cache=True)
def _quantize_row_per_channel(x, scale, zp, qmin, qmax, out):
    """x, out: one row of n values, each with its own scale and zero point."""
    nan = 0
    for j in range(x.shape[0]):
        v = np.rint(x[j] / scale[j])
        nan += v != v
        z = np.int32(zp[j])
        lo = np.float32(qmin - z)
        hi = np.float32(qmax - z)
        v = lo if v < lo else v
        v = hi if v > hi else v
        out[j] = np.int32(v) + z
    return nan


@njit(error_model="numpy", cache=True)
def _quantize_slab(x, scale, zp, qmin, qmax, out):
    """x, out: (n, inner); scale, zp: n values. Returns the NaN count."""
    n, inner = x.shape
    if inner == 1:
        return _quantize_row_per_channel(x[:, 0], scale, zp, qmin, qmax, out[:, 0])
    nan = 0
    for j in range(n):
        z = np.int32(zp[j])
        nan += _quantize_run(x[j], scale[j], z, np.float32(qmin - z), np.float32(qmax - z),
                             out[j])
    return nan


@njit(error_model="numpy", cache=True, parallel=prange_only())
def quantize_3d(x, scale, zp, qmin, qmax, out, workers, block):
    """x, out: (outer, n, inner); scale, zp: n values; blocks of `block` slabs x[o], taken by
    `workers` threads as they come free (threads.py). Returns the NaN count."""
    outer = x.shape[0]
    counter = np.zeros(1, np.int64)
    nan = 0
    for _ in prange(workers):
        mine = 0
        lo, hi = take_block(counter, block, outer)
        while lo < hi:
            for o in range(lo, hi):
                mine += _quantize_slab(x[o], scale, zp, qmin, qmax, out[o])
            lo, hi = take_block(counter, block, outer)
        nan += mine
    return nan


@njit(error_model="numpy", cache=True, parallel=prange_only())
def quantize_flat(x, scale, zp, qmin, qmax, out, workers, block):
    """Per-tensor: one scale and zero point for the flat arrays x, out."""
    n = x.shape[0]
    z = np.int32(zp)
    lo_q = np.float32(qmin - z)
    hi_q = np.float32(qmax - z)
    counter = np.zeros(1, np.int64)
    nan = 0
    for _ in prange(workers):
        mine = 0
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            mine += _quantize_run(x[lo:hi], scale, z, lo_q, hi_q, out[lo:hi])
            lo, hi = take_block(counter, block, n)
        nan += mine
    return nan


@njit(error_model="numpy", cache=True)
def quantize_flat_serial(x, scale, zp, qmin, qmax, out, workers, block):
    """quantize_flat on the calling thread (`workers`, `block` are ignored): no parallel region
    to enter."""
    z = np.int32(zp)
    return _quantize_run(x, scale, z, np.float32(qmin - z), np.float32(qmax - z), out)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def dequantize_3d(q, scale, zp, out, workers, block):
    outer, n = q.shape[0], q.shape[1]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, outer)
        while lo < hi:
            for o in range(lo, hi):
                for j in range(n):
                    _dequantize_run(q[o, j], scale[j], np.float32(zp[j]), out[o, j])
            lo, hi = take_block(counter, block, outer)


@njit(error_model="numpy", cache=True)
def _dequantize_run(q, scale, z, out):
    for i in range(q.shape[0]):
        out[i] = (np.float32(q[i]) - z) * scale


@njit(error_model="numpy", cache=True, parallel=prange_only())
def dequantize_flat(q, scale, zp, out, workers, block):
    n = q.shape[0]
    z = np.float32(zp)
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            _dequantize_run(q[lo:hi], scale, z, out[lo:hi])
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True)
def _dequantize_row_per_channel(q, scale, zp, out):
    for j in range(q.shape[0]):
        out[j] = (np.float32(q[j]) - np.float32(zp[j])) * scale[j]


@njit(error_model="numpy", cache=True, parallel=prange_only())
def dequantize_last_axis(q, scale, zp, out, workers, block):
    """q, out: (rows, n); scale, zp: n values."""
    rows = q.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            for r in range(lo, hi):
                _dequantize_row_per_channel(q[r], scale, zp, out[r])
            lo, hi = take_block(counter, block, rows)


@njit(error_model="numpy", cache=True)
def count_bad(x):
    """How many of x's values are NaN or infinite."""
    bad = 0
    for i in range(x.shape[0]):
        bad += not abs(x[i]) < np.float32(np.inf)
    return bad


@njit(error_model="numpy", cache=True, nogil=True)
def _min_max_bad(x):
    """(min, max, count of NaN and inf) of a 1-D array (min and max leave NaN out)."""
    n = x.shape[0]
    groups = n // 32
    hi = np.float32(-np.inf)
    lo = np.float32(np.inf)
    nan = False
    if groups:
        lo, hi, flag = vector_min_max(x, groups)
        nan = flag != np.float32(0.0)
    for i in range(32 * groups, n):
        v = x[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
        nan |= v != v
    if nan or lo == -np.inf or hi == np.inf:
        return lo, hi, count_bad(x)
    return lo, hi, 0


@njit(error_model="numpy", cache=True, parallel=prange_only())
def min_max_bad(x, workers, block):
    """Each block's result is kept by block number and combined at the end, so the result does
    not depend on which thread took which block."""
    n = x.shape[0]
    blocks = (n + block - 1) // block
    los = np.empty(blocks, np.float32)
    his = np.empty(blocks, np.float32)
    bads = np.empty(blocks, np.int64)
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            b = lo // block
            los[b], his[b], bads[b] = _min_max_bad(x[lo:hi])
            lo, hi = take_block(counter, block, n)
    return los.min(), his.max(), bads.sum()


@njit(error_model="numpy", cache=True)
def min_max_bad_serial(x):
    return _min_max_bad(x)


# -- host side --------------------------------------------------------------------------------


# min_max's result for an empty array: no value, none of them NaN or inf.
EMPTY_RANGE = (np.float32(np.inf), np.float32(-np.inf), 0)


@njit(error_model="numpy", cache=True, nogil=True)
def scale_and_zero_point(lo, hi):
    """ops.quantize.dynamic_scale_and_zero_point's float32 steps, compiled: (scale, zero point)
    of float32 lo = min(x) and hi = max(x), both finite. (As numpy scalars the steps took ~4 us,
    a third of a small DynamicQuantizeLinear.) Each step rounds to float32, as the reference's
    numpy float32 scalars do; the clamps keep Python's min/max choices (the first of equals)."""
    zero, top = np.float32(0.0), np.float32(255.0)
    maxx = hi if hi > zero else zero
    minx = lo if lo < zero else zero
    spread = np.float32(1.0) if maxx == minx else np.float32(maxx - minx)
    scale = np.float32(spread / top)
    if scale == zero:
        return zero, 255
    initial = np.float32(zero - np.float32(minx / scale))
    clamped = initial if initial < top else top
    clamped = clamped if clamped > zero else zero
    return scale, int(np.rint(clamped))


def combine_ranges(lohi: np.ndarray, bads: np.ndarray) -> tuple[np.float32, np.float32, int]:
    """(min, max, count of NaN and inf) of a whole array from its parts' (lohi[i] = their min
    and max, bads[i] = their counts), as min_max would have found them in one pass."""
    if not bads.size:
        return EMPTY_RANGE
    lo, hi, bad = _combined(lohi, bads)
    return np.float32(lo), np.float32(hi), int(bad)


@njit(cache=True, nogil=True)
def _combined(lohi, bads):
    # One compiled call instead of three numpy reductions: ~1 us against ~5 (a batch-1 model
    # run combines a range after every layer norm). Like numpy's, the float min and max
    # propagate NaN.
    return lohi[:, 0].min(), lohi[:, 1].max(), bads.sum()


def _as_3d(shape, axis):
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def quantize_linear(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis, out,
                    threads) -> int:
    """scale: float32 (1 or n values), zero_point: out's dtype (same count), axis: normalised or
    None for per-tensor. Writes out; returns the number of NaN met."""
    if x.size == 0:
        return 0
    low, high = _limits(out.dtype)
    x = np.ascontiguousarray(x)
    if axis is None:
        workers, block = split(x.size, 1, threads_for(x.size, x.size, threads))
        kernel = quantize_flat_serial if workers == 1 else quantize_flat
        return int(kernel(x.reshape(-1), scale[0], int(zero_point[0]), low, high,
                          out.reshape(-1), workers, block))
    shape3 = _as_3d(x.shape, axis)
    workers, block = split(shape3[0], shape3[1] * shape3[2],
                           threads_for(x.size, shape3[0], threads))
    return int(quantize_3d(x.reshape(shape3), scale, zero_point.astype(np.int32), low, high,
                           out.reshape(shape3), workers, block))


@functools.cache
def _limits(dtype: np.dtype) -> tuple[int, int]:
    """(min, max) of an integer dtype (np.iinfo takes ~0.8 us a call)."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def dequantize_linear(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis, out,
                      threads) -> np.ndarray:
    if q.size == 0:
        return out
    q = np.ascontiguousarray(q)
    if axis is None:
        workers, block = split(q.size, 1, threads_for(q.size, q.size, threads))
        dequantize_flat(q.reshape(-1), scale[0], int(zero_point[0]), out.reshape(-1), workers,
                        block)
        return out
    shape3 = _as_3d(q.shape, axis)
    workers, block = split(shape3[0], shape3[1] * shape3[2],
                           threads_for(q.size, shape3[0], threads))
    if shape3[2] == 1:
        dequantize_last_axis(q.reshape(shape3[:2]), scale, zero_point, out.reshape(shape3[:2]),
                             workers, block)
    else:
        dequantize_3d(q.reshape(shape3), scale, zero_point, out.reshape(shape3), workers, block)
    return out


# min/max reads ~6 values per ns on one thread, so below this many values (~150 us) a second
# thread saves less than waking it costs. (2048 x 256, Zen 4 guest, medians: 92 us on one thread,
# 115 us on two back to back, 266 and 462 us after a 2 ms pause; 2048 x 1024: 301 us on one,
# 216 us on two.)
MIN_MAX_PARALLEL_ELEMENTS = 1 << 20


def min_max(x: np.ndarray, threads) -> tuple[float, float, int]:
    """(min, max, count of NaN and inf) of x; EMPTY_RANGE (min > max) for an empty x."""
    xf = np.ascontiguousarray(x).reshape(-1)
    threads = 1 if xf.size < MIN_MAX_PARALLEL_ELEMENTS else threads
    workers, block = split(xf.size, 1, threads_for(xf.size, xf.size, threads))
    lo, hi, bad = min_max_bad_serial(xf) if workers == 1 else min_max_bad(xf, workers, block)
    return np.float32(lo), np.float32(hi), int(bad)
