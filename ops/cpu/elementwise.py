"""Elementwise kernels on the CPU (numba): activations, add/mul with broadcasting, fused bias add.

Every kernel loops over flat C-contiguous float32 arrays with a loop-invariant op code tested
outside the loop, so each op's loop vectorises (the activations are mathfuncs' branch-free
forms). Large arrays are cut into blocks that numba's threads share; small ones run on the
calling thread.

Broadcasting (add, mul, bias_add): the second operand `y` holds `period` values and repeats along
the flat array: out[i] = x[i] op y[i % period]. That covers equal shapes (period = size), a
scalar (period = 1) and a trailing-axes operand such as a bias or a (seq, d) residual added to a
(batch, seq, d) array.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from dispatch.cpu import prange_only

from .mathfuncs import (
    EXACT_FLAGS,
    erf_f64,
    erf_guard,
    exp_f32,
    gelu_erf_f32,
    gelu_tanh_f32,
    sigmoid_f32,
    tanh_f32,
)
from .quantize import EMPTY_RANGE, combine_ranges, min_max_bad_serial
from .threads import BLOCK_VALUES, split, take_block, threads_for

# Unary op codes (also bias_add's activation).
NONE, RELU, EXP, TANH, SIGMOID, GELU_TANH, GELU_ERF, ERF, GELU_ERF_STEPS = range(9)
UNARY_CODES = {None: NONE, "relu": RELU, "exp": EXP, "tanh": TANH, "sigmoid": SIGMOID,
               "gelu_tanh": GELU_TANH, "gelu": GELU_ERF, "erf": ERF,
               "gelu_float32_steps": GELU_ERF_STEPS}
# Binary op codes.
ADD, MUL = 0, 1

# Values per erf chunk: its scratch (a copy of the inputs and the flags, 5 KiB) stays in L1.
ERF_CHUNK = 1024
_SQRT2_F32 = np.float32(math.sqrt(2.0))
_ONE_F32 = np.float32(1.0)
_HALF_F32 = np.float32(0.5)


@njit(error_model="numpy", inline="always", cache=True)
def _gelu_steps(v, e):
    """Gelu's float32 steps after the erf e of v / sqrt 2: (v * (e + 1)) * 0.5."""
    return (v * (e + _ONE_F32)) * _HALF_F32


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _erf_block(x, out, flags, gelu):
    """out = float32(erf(x)), or with `gelu` the Gelu steps, where the fast float64 erf decides
    the rounding; flags marks the others (and NaN). Returns whether any is flagged. out must not
    be x: LLVM's overlap check would then run the loop's scalar version (4x slower)."""
    bad = False
    if gelu:
        for i in range(x.shape[0]):
            v = x[i]
            t = np.float64(v / _SQRT2_F32)
            y = erf_f64(t)
            out[i] = _gelu_steps(v, np.float32(y))
            f = erf_guard(y, t)
            flags[i] = f
            bad |= f
    else:
        for i in range(x.shape[0]):
            t = np.float64(x[i])
            y = erf_f64(t)
            out[i] = np.float32(y)
            f = erf_guard(y, t)
            flags[i] = f
            bad |= f
    return bad


@njit(error_model="numpy", inline="always", cache=True)
def _set_bytes(bits, first, at, where):
    """Appends first + j for each byte j of the uint64 `bits` that is 1 (bytes 0 or 1)."""
    while bits:
        where[at] = first + (np.int64(trailing_zeros(bits)) >> 3)
        at += 1
        bits &= bits - np.uint64(1)
    return at


@njit(error_model="numpy", cache=True)
def flagged_positions(flags, m, base, at, where):
    """Appends base + i for each i < m whose flags[i] is set to where[at:]; returns the new
    length. flags: bytes that are 0 or 1, a multiple of 8 long (bytes past m are ignored). Few
    are set, so they are read eight at a time, and each set byte of a word is found from its bit
    (a loop over the word's eight bytes mispredicted a branch per set flag: ~50 ns each); four
    words at a time, as the most are 0."""
    words = flags.view(np.uint64)
    full = m // 8
    quads = full // 4 * 4
    for q in range(0, quads, 4):
        if words[q] | words[q + 1] | words[q + 2] | words[q + 3]:
            for w in range(q, q + 4):
                at = _set_bytes(words[w], base + 8 * w, at, where)
    for w in range(quads, full):
        at = _set_bytes(words[w], base + 8 * w, at, where)
    for i in range(8 * full, m):
        if flags[i]:
            where[at] = base + i
            at += 1
    return at


@njit(error_model="numpy", cache=True)
def _erf_fix(x, out, flags, m, gelu, where):
    """The flagged values of out[:m] from the C library's erf (float64, rounded once); where:
    room for ERF_CHUNK positions."""
    for j in range(flagged_positions(flags, m, 0, 0, where)):
        i = where[j]
        if gelu:
            v = x[i]
            out[i] = _gelu_steps(v, np.float32(math.erf(np.float64(v / _SQRT2_F32))))
        else:
            out[i] = np.float32(math.erf(np.float64(x[i])))


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _copy(x, out):
    # (A loop of its own: numba's slice assignment, xs[:m] = src, made in-place Gelu 15% slower.)
    for i in range(x.shape[0]):
        out[i] = x[i]


@njit(error_model="numpy", cache=True)
def erf_chunks(x, out, gelu):
    """out = float32(erf(x)), or with `gelu` the float32 steps of Gelu as torch exports it,
    (x * (erf(x / sqrt 2) + 1)) * 0.5, each rounded to float32. out may be x."""
    n = x.shape[0]
    xs = np.empty(ERF_CHUNK, np.float32)
    flags = np.empty(ERF_CHUNK, np.bool_)
    where = np.empty(ERF_CHUNK, np.int64)
    # In place, each chunk is copied first: _erf_block must not write over its input, and the
    # fix-up needs the inputs of the flagged values.
    in_place = x.ctypes.data == out.ctypes.data
    for lo in range(0, n, ERF_CHUNK):
        hi = min(lo + ERF_CHUNK, n)
        m = hi - lo
        src = x[lo:hi]
        if in_place:
            _copy(src, xs[:m])
            src = xs[:m]
        if _erf_block(src, out[lo:hi], flags[:m], gelu):
            _erf_fix(src, out[lo:hi], flags, m, gelu, where)


# nogil on the serial entry points: a caller may run blocks of one array on its own threads.
@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True, nogil=True)
def unary(x, out, op):
    """out = op(x) over 1-D arrays (out may be x)."""
    n = x.shape[0]
    zero = np.float32(0.0)
    if op == RELU:
        for i in range(n):
            v = x[i]
            out[i] = zero if v < zero else v   # keeps NaN, as np.maximum(x, 0) does
    elif op == EXP:
        for i in range(n):
            out[i] = exp_f32(x[i])
    elif op == TANH:
        for i in range(n):
            out[i] = tanh_f32(x[i])
    elif op == SIGMOID:
        for i in range(n):
            out[i] = sigmoid_f32(x[i])
    elif op == GELU_TANH:
        for i in range(n):
            out[i] = gelu_tanh_f32(x[i])
    elif op == GELU_ERF:
        for i in range(n):
            out[i] = gelu_erf_f32(x[i])
    elif op == ERF:
        erf_chunks(x, out, False)
    elif op == GELU_ERF_STEPS:
        erf_chunks(x, out, True)
    elif op == NONE:
        for i in range(n):
            out[i] = x[i]


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _binary_same(x, y, out, op):
    if op == ADD:
        for i in range(x.shape[0]):
            out[i] = x[i] + y[i]
    else:
        for i in range(x.shape[0]):
            out[i] = x[i] * y[i]


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _binary_scalar(x, c, out, op):
    if op == ADD:
        for i in range(x.shape[0]):
            out[i] = x[i] + c
    else:
        for i in range(x.shape[0]):
            out[i] = x[i] * c


@njit(error_model="numpy", cache=True)
def binary(x, y, out, op, period):
    """out = x op y[i % period]; x.shape[0] is a multiple of period (or period == len(y) ==
    len(x))."""
    n = x.shape[0]
    if period == n:
        _binary_same(x, y, out, op)
    elif period == 1:
        _binary_scalar(x, y[0], out, op)
    else:
        for lo in range(0, n, period):
            _binary_same(x[lo:lo + period], y, out[lo:lo + period], op)


@njit(error_model="numpy", cache=True)
def bias_add_rows(x, bias, residual, out, act):
    """out[r] = act(x[r] + bias (+ residual[r])) for each row r of the 2-D arrays; residual is
    either of x's shape or empty. The activation runs on the row while it is in cache."""
    has_residual = residual.shape[0] > 0
    for r in range(x.shape[0]):
        o = out[r]
        _binary_same(x[r], bias, o, ADD)
        if has_residual:
            _binary_same(o, residual[r], o, ADD)
        if act != NONE:
            unary(o, o, act)


# -- threads: blocks of the flat array (unary, binary) or of rows (bias_add), taken by the threads
# as they come free (threads.py) ----------------------------------------------------------------


@njit(error_model="numpy", cache=True, parallel=prange_only())
def unary_parallel(x, out, op, workers, block):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            unary(x[lo:hi], out[lo:hi], op)
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True, nogil=True)
def _unary_block_ranged(x, out, op, lo, hi, block, lohi, bads):
    """unary() over lo:hi, then the range of what it wrote, read back while it is in cache."""
    unary(x[lo:hi], out[lo:hi], op)
    b = lo // block
    lohi[b, 0], lohi[b, 1], bads[b] = min_max_bad_serial(out[lo:hi])


@njit(error_model="numpy", cache=True, nogil=True)
def unary_ranged(x, out, op, block, lohi, bads):
    """unary() in blocks of `block` values; block b's output (min, max) goes to lohi[b] and its
    count of NaN and inf to bads[b]."""
    n = x.shape[0]
    for lo in range(0, n, block):
        _unary_block_ranged(x, out, op, lo, min(lo + block, n), block, lohi, bads)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def unary_ranged_parallel(x, out, op, workers, block, lohi, bads):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            _unary_block_ranged(x, out, op, lo, hi, block, lohi, bads)
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def binary_parallel(x, y, out, op, period, workers, block):
    """As binary(); blocks of `block` whole periods (of values, when y has x's length)."""
    n = x.shape[0]
    unit = period if period != n else 1
    units = n // unit
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, units)
        while lo < hi:
            a, e = lo * unit, hi * unit
            if period == n:
                binary(x[a:e], y[a:e], out[a:e], op, e - a)
            else:
                binary(x[a:e], y, out[a:e], op, period)
            lo, hi = take_block(counter, block, units)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def bias_add_rows_parallel(x, bias, residual, out, act, workers, block):
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            res = residual[lo:hi] if residual.shape[0] > 0 else residual
            bias_add_rows(x[lo:hi], bias, res, out[lo:hi], act)
            lo, hi = take_block(counter, block, rows)


# -- host side: the front end passes validated arrays -------------------------------------------


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def apply_unary(x: np.ndarray, op: int, out: np.ndarray, threads) -> np.ndarray:
    """out (C-contiguous, x's shape) = op(x)."""
    if x.size == 0:
        return out
    xf, of = _flat(x), out.reshape(-1)
    workers, block = split(x.size, 1, threads_for(x.size, x.size, threads))
    if workers == 1:
        unary(xf, of, op)
    else:
        unary_parallel(xf, of, op, workers, block)
    return out


def apply_unary_ranged(x: np.ndarray, op: int, out: np.ndarray, threads):
    """As apply_unary, and also (min, max, count of NaN and inf) of out, each block's taken while
    the block is still in cache: a second pass over out later reads it from memory (a 2-million
    value Gelu output: 0.43 ms)."""
    if x.size == 0:
        return out, EMPTY_RANGE
    xf, of = _flat(x), out.reshape(-1)
    workers, block = split(x.size, 1, threads_for(x.size, x.size, threads))
    block = min(block, BLOCK_VALUES)   # one block at a time must fit in L2
    blocks = -(-x.size // block)
    lohi = np.empty((blocks, 2), np.float32)
    bads = np.empty(blocks, np.int64)
    if workers == 1:
        unary_ranged(xf, of, op, block, lohi, bads)
    else:
        unary_ranged_parallel(xf, of, op, workers, block, lohi, bads)
    return out, combine_ranges(lohi, bads)


def apply_binary(x: np.ndarray, y: np.ndarray, op: int, out: np.ndarray, threads) -> np.ndarray:
    """out (C-contiguous, as many values as x) = x op y, y repeating along x's flat order."""
    if x.size == 0:
        return out
    xf, yf, of = _flat(x), _flat(y), out.reshape(-1)
    period = max(yf.shape[0], 1)
    unit = period if period != x.size else 1
    units = x.size // unit
    workers, block = split(units, unit, threads_for(x.size, units, threads))
    if workers == 1:
        binary(xf, yf, of, op, period)
    else:
        binary_parallel(xf, yf, of, op, period, workers, block)
    return out


_NO_RESIDUAL = np.empty((0, 0), np.float32)


def bias_add(x: np.ndarray, bias: np.ndarray, residual, act: int, axis: int, out: np.ndarray,
             threads) -> np.ndarray:
    """out = act(x + bias along `axis` (+ residual of x's shape))."""
    if x.size == 0:
        return out
    x = np.ascontiguousarray(x)
    inner = 1
    for d in x.shape[axis + 1:]:
        inner *= d
    # Along an inner axis each bias value repeats over the trailing axes: expand it once so the
    # rows below are plain (row, bias) pairs.
    row_bias = np.ascontiguousarray(bias) if inner == 1 else np.repeat(bias, inner)
    width = row_bias.shape[0]
    x2, out2 = x.reshape(-1, width), out.reshape(-1, width)
    res2 = _NO_RESIDUAL if residual is None else np.ascontiguousarray(residual).reshape(-1, width)
    workers, block = split(x2.shape[0], width, threads_for(x.size, x2.shape[0], threads))
    if workers == 1:
        bias_add_rows(x2, row_bias, res2, out2, act)
    else:
        bias_add_rows_parallel(x2, row_bias, res2, out2, act, workers, block)
    return out
