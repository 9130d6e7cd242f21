"""logsoftmax and softmax on the CPU (numba): one pass over memory per row, vectorised.

Last axis (the decoder's case), per row:
  1. Online max and sum, chunk by chunk (CHUNK values, 8 KiB, stay in L1 between the two loops):
     chunk max (vmaxps); if it exceeds the running max m, rescale the running sum by e**(m_old - m);
     add the chunk's sum of e**(x - m) (a vectorised exp, float32 lanes, chunk total in float64).
     softmax stores each e**(x - m_chunk) in `out` as it goes, so exp runs once per element.
  2. Write: logsoftmax y = (x - m) - ln s; softmax y = e * (e**(m_chunk - m) / s), one scale per
     chunk. The row is still in L2, so DRAM sees each input read once and each output written once.
Another axis: the array is viewed as (outer, n, inner) and the loops run across `inner`
(contiguous), with one running max and float64 sum per inner position (three sweeps of the slab).

softmax float32_steps (last axis only): onnx's reference evaluator's steps bit for bit --
t = x - max(x) (float32), e = numpy's own float32 exp of t (numpy's SIMD exp, replicated step for
step in numpy_exp.py), e / sum(e) with the sum in numpy's pairwise order (pairwise.py) and a
float32 division: one pass per row. Where numpy's exp is another routine (numpy_exp.matches_numpy
is False), three passes instead, with np.exp itself in the middle.

Special values follow numpy's `x - max - log(sum(exp(x - max)))` (and onnx's reference LogSoftmax)
exactly, with no extra pass to find them:
  - -inf entries (masked logits) give -inf (logsoftmax) or 0 (softmax);
  - a row that is all -inf, or holds +inf or NaN, gives NaN everywhere: e**(x - m) is NaN for some
    entry (-inf - -inf, inf - inf, NaN), so s is NaN, and an all -inf row forces s = NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dispatch.cpu import prange_only

from .arrays import out_is_x
from .mathfuncs import (
    EXACT_FLAGS,
    REDUCE_FLAGS,
    exp_f32,
    exp_sum_term_f32,
    f64_bits,
    fmax_f32,
    vector_min_max,
)
from .numpy_exp import matches_numpy, numpy_exp_f32
from .pairwise import ROWS_AT_ONCE, pairwise_sum, short_row_sums, sums_side_by_side
from .threads import split, take_block, threads_for

CHUNK = 2048
_NEG_INF = np.float32(-np.inf)


# The chunk functions take the chunk as its own array view: loops over range(len) vectorise, while
# loops over range(lo, hi) do not (numba's negative-index wrap-around cannot be proven dead).


@njit(error_model="numpy", cache=True, nogil=True)
def chunk_max(x):
    """max(x) ignoring NaN (-inf when empty or all NaN). (A loop of fmax_f32 stayed a scalar
    chain: 1.2 ns per value, more than the exp after it; vector_min_max runs 32 values a step.)"""
    n = x.shape[0]
    groups = n // 32
    m = _NEG_INF
    if groups:
        m = vector_min_max(x, groups)[1]
    for i in range(32 * groups, n):
        v = x[i]
        m = v if v > m else m
    return m


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def chunk_sum_exp(x, m):
    """sum(e**(x - m)) for m >= max(x) (or m = 0 when x holds only -inf and NaN), float32 lanes."""
    s = np.float32(0.0)
    for i in range(x.shape[0]):
        s += exp_sum_term_f32(x[i] - m)
    return s


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def chunk_store_exp(x, m, out):
    """out = e**(x - m); returns their float32-lane sum."""
    s = np.float32(0.0)
    for i in range(x.shape[0]):
        e = exp_f32(x[i] - m)
        out[i] = e
        s += e
    return s


# The in-place forms of the writing loops: LLVM's overlap check sends a loop whose input and
# output are the same array to its scalar version (softmax in place ran 6x slower).


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def chunk_store_exp_in_place(y, m):
    """y = e**(y - m); returns their float32-lane sum."""
    s = np.float32(0.0)
    for i in range(y.shape[0]):
        e = exp_f32(y[i] - m)
        y[i] = e
        s += e
    return s


@njit(error_model="numpy", cache=True)
def _rescale(s, m_old, m_new):
    # e**(-inf) = 0 also when m_old = -inf; a NaN s stays NaN.
    return s * math.exp(np.float64(m_old) - np.float64(m_new)) if m_old != m_new else s


@njit(error_model="numpy", cache=True)
def row_max_log_sum(x):
    """(m, L) for one row: m = max(x) ignoring NaN, L = ln(sum(e**(x - m))) as float32, NaN when
    logsoftmax of the row is NaN everywhere (see the module docstring)."""
    n = x.shape[0]
    m = _NEG_INF
    s = 0.0
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        m_new = fmax_f32(m, chunk_max(x[lo:hi]))
        s = _rescale(s, m, m_new)
        m = m_new
        # While m is -inf the chunk holds only -inf and NaN: referring it to 0 adds 0 or NaN.
        s += chunk_sum_exp(x[lo:hi], m if m != _NEG_INF else np.float32(0.0))
    if m == _NEG_INF:
        s = np.nan
    return m, np.float32(math.log(s))


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _log_write(x, m, log_s, out):
    for i in range(x.shape[0]):
        out[i] = (x[i] - m) - log_s


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _log_write_in_place(y, m, log_s):
    for i in range(y.shape[0]):
        y[i] = (y[i] - m) - log_s


@njit(error_model="numpy", cache=True)
def logsoftmax_row(x, out, in_place):
    """in_place: out is x."""
    m, log_s = row_max_log_sum(x)
    if in_place:
        _log_write_in_place(out, m, log_s)
    else:
        _log_write(x, m, log_s, out)


@njit(error_model="numpy", cache=True)
def _scale_chunk(out, f):
    for i in range(out.shape[0]):
        out[i] = out[i] * f


@njit(error_model="numpy", cache=True)
def softmax_row(x, out, chunk_m, in_place):
    """chunk_m: scratch of at least ceil(n / CHUNK) float32 (the running max each chunk used);
    in_place: out is x."""
    n = x.shape[0]
    m = _NEG_INF
    s = 0.0
    for c, lo in enumerate(range(0, n, CHUNK)):
        hi = min(lo + CHUNK, n)
        m_new = fmax_f32(m, chunk_max(x[lo:hi]))
        s = _rescale(s, m, m_new)
        m = m_new
        # As in row_max_log_sum; the chunk's scale below is then e**(-inf - m) = 0.
        chunk_m[c] = m
        ref = m if m != _NEG_INF else np.float32(0.0)
        if in_place:
            s += chunk_store_exp_in_place(out[lo:hi], ref)
        else:
            s += chunk_store_exp(x[lo:hi], ref, out[lo:hi])
    if m == _NEG_INF:
        s = np.nan
    inv_s = 1.0 / s
    for c, lo in enumerate(range(0, n, CHUNK)):
        f = np.float32(math.exp(np.float64(chunk_m[c]) - np.float64(m)) * inv_s)
        _scale_chunk(out[lo:min(lo + CHUNK, n)], f)


@njit(error_model="numpy", cache=True)
def logsoftmax_rows(x, out):
    """out: x itself or apart from it (partial overlaps are refused earlier)."""
    in_place = out_is_x(x, out)
    for r in range(x.shape[0]):
        logsoftmax_row(x[r], out[r], in_place)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def logsoftmax_rows_parallel(x, out, workers, block):
    """Blocks of `block` rows, taken by `workers` threads as they come free (threads.py)."""
    in_place = out_is_x(x, out)
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            for r in range(lo, hi):
                logsoftmax_row(x[r], out[r], in_place)
            lo, hi = take_block(counter, block, rows)


@njit(error_model="numpy", cache=True)
def softmax_rows(x, out):
    in_place = out_is_x(x, out)
    chunk_m = np.empty(x.shape[1] // CHUNK + 1, np.float32)
    for r in range(x.shape[0]):
        softmax_row(x[r], out[r], chunk_m, in_place)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def softmax_rows_parallel(x, out, workers, block):
    in_place = out_is_x(x, out)
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        chunk_m = np.empty(x.shape[1] // CHUNK + 1, np.float32)
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            for r in range(lo, hi):
                softmax_row(x[r], out[r], chunk_m, in_place)
            lo, hi = take_block(counter, block, rows)


@njit(error_model="numpy", fastmath=REDUCE_FLAGS, cache=True)
def _slab_max_sum(x, m, s):
    """Column-wise over a (n, inner) slab: m = max ignoring NaN, s = float64 sum of e**(x - m);
    s is NaN where m is -inf (as in the row kernel)."""
    n, inner = x.shape
    for j in range(inner):
        m[j] = _NEG_INF
        s[j] = 0.0
    for i in range(n):
        for j in range(inner):
            m[j] = fmax_f32(m[j], x[i, j])
    for i in range(n):
        for j in range(inner):
            ref = m[j] if m[j] != _NEG_INF else np.float32(0.0)
            s[j] += np.float64(exp_f32(x[i, j] - ref))
    for j in range(inner):
        if m[j] == _NEG_INF:
            s[j] = np.nan


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _logsoftmax_slab(x, out, m, s, log_s):
    n, inner = x.shape
    _slab_max_sum(x, m, s)
    for j in range(inner):
        log_s[j] = np.float32(math.log(s[j]))
    for i in range(n):
        for j in range(inner):
            out[i, j] = (x[i, j] - m[j]) - log_s[j]


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _softmax_slab(x, out, m, s, inv_s):
    n, inner = x.shape
    _slab_max_sum(x, m, s)
    for j in range(inner):
        inv_s[j] = np.float32(1.0 / s[j])
    for i in range(n):
        for j in range(inner):
            out[i, j] = exp_f32(x[i, j] - m[j]) * inv_s[j]


@njit(error_model="numpy", cache=True, parallel=prange_only())
def logsoftmax_strided(x, out, workers, block):
    """x, out: (outer, n, inner); normalise over n. Blocks of `block` slabs x[o]."""
    outer, inner = x.shape[0], x.shape[2]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        m = np.empty(inner, np.float32)
        s = np.empty(inner, np.float64)
        log_s = np.empty(inner, np.float32)
        lo, hi = take_block(counter, block, outer)
        while lo < hi:
            for o in range(lo, hi):
                _logsoftmax_slab(x[o], out[o], m, s, log_s)
            lo, hi = take_block(counter, block, outer)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def softmax_strided(x, out, workers, block):
    outer, inner = x.shape[0], x.shape[2]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        m = np.empty(inner, np.float32)
        s = np.empty(inner, np.float64)
        inv_s = np.empty(inner, np.float32)
        lo, hi = take_block(counter, block, outer)
        while lo < hi:
            for o in range(lo, hi):
                _softmax_slab(x[o], out[o], m, s, inv_s)
            lo, hi = take_block(counter, block, outer)


# -- float32 steps (onnx's reference, bit for bit) ---------------------------------------------


@njit(error_model="numpy", cache=True, nogil=True)
def _subtract_row_max(x, out, lo, hi):
    """out[r] = x[r] - max(x[r]) for rows lo:hi. (max ignores NaN here and numpy's propagates
    it; a row holding NaN ends as all NaN either way, once its NaN reaches the sum.)"""
    for r in range(lo, hi):
        m = chunk_max(x[r])
        o = out[r]
        xr = x[r]
        for i in range(xr.shape[0]):
            o[i] = xr[i] - m


@njit(error_model="numpy", cache=True, nogil=True)
def _divide_by_row_sum(e, lo, hi):
    scratch = np.empty(64, np.float32)
    stack = np.empty((64, 3), np.int64)
    for r in range(lo, hi):
        row = e[r]
        s = pairwise_sum(row, scratch, stack)
        for i in range(row.shape[0]):
            row[i] = row[i] / s


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _subtract_row_max_parallel(x, out, workers, block):
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            _subtract_row_max(x, out, lo, hi)
            lo, hi = take_block(counter, block, rows)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _divide_by_row_sum_parallel(e, workers, block):
    rows = e.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            _divide_by_row_sum(e, lo, hi)
            lo, hi = take_block(counter, block, rows)


_ONE = np.float32(1.0)
_F64_FRACTION = (1 << 52) - 1


@njit(error_model="numpy", inline="always", cache=True)
def power_of_two_reciprocal(d):
    """Whether x / d == x * (1 / d) for every float32 x: d = +-2**e with 1 / d a normal float32
    too, so that 1 / d is exact and both sides round the same real number once. (Attention
    divides its scores by sqrt(64) = 8: a multiplication instead of a division per score.)"""
    a = abs(np.float64(d))
    return ((f64_bits(a) & _F64_FRACTION) == 0) & (a >= 2.0**-126) & (a <= 2.0**126)


@njit(error_model="numpy", cache=True, nogil=True)
def softmax_steps_rows(x, out, lo, hi, divisor, divide):
    """Rows lo:hi (out C-contiguous), a few at a time while they sit in L1: [t = x / divisor,]
    m = max, e = exp(t - m) with numpy_exp_f32 (numpy's exp, bit for bit), s = pairwise_sum(e),
    e / s. Compiled without
    fast-math flags: each float32 operation rounds as numpy's does. (Each loop reads one array and
    writes another, or works in place on one: a loop reading `t` and writing `o` that may be the
    same row fails LLVM's overlap check at run time and falls back to scalar code, 10x slower:
    so the row loops ask whether x is out, once a call.)"""
    in_place = out_is_x(x, out)   # out: x itself or apart from it
    scratch = np.empty(64, np.float32)
    stack = np.empty((64, 3), np.int64)
    sums = np.empty(2 * ROWS_AT_ONCE, np.float32)
    n = x.shape[1]
    by_power_of_two = divide and power_of_two_reciprocal(divisor)
    reciprocal = _ONE / divisor
    # Rows of up to 256 values are summed ROWS_AT_ONCE at a time (short_row_sums): alone, a
    # 128-value row's sum waits on the adder's latency (3.3 -> 1.0 us per 128 rows on Zen 4).
    together = ROWS_AT_ONCE if sums_side_by_side(n) else 1
    for first in range(lo, hi, together):
        last = min(first + together, hi)
        for r in range(first, last):
            _exp_steps(x[r], out[r], divisor, reciprocal, divide, by_power_of_two, in_place)
        if last - first == ROWS_AT_ONCE:
            short_row_sums(out, first, sums)
        else:
            for r in range(first, last):
                sums[r - first] = pairwise_sum(out[r], scratch, stack)
        for r in range(first, last):
            o = out[r]
            s = sums[r - first]
            for i in range(n):
                o[i] = o[i] / s


@njit(error_model="numpy", cache=True, nogil=True, inline="always")
def _exp_steps(xr, o, divisor, reciprocal, divide, by_power_of_two, in_place):
    """One row of softmax_steps_rows up to the sum: o = exp([xr / divisor] - max)."""
    n = xr.shape[0]
    # Multiplying by a positive power of two rounds monotonically, so the max of the products
    # is the product of the max: the scaling goes into the exp loop, one pass fewer over the
    # row. (A negative one would turn the max into the min.)
    if by_power_of_two and reciprocal > 0 and in_place:
        m = chunk_max(o) * reciprocal
        for i in range(n):
            o[i] = numpy_exp_f32(o[i] * reciprocal - m)
    elif by_power_of_two and reciprocal > 0:
        m = chunk_max(xr) * reciprocal
        for i in range(n):
            o[i] = numpy_exp_f32(xr[i] * reciprocal - m)
    elif divide or in_place:
        if by_power_of_two and in_place:
            for i in range(n):
                o[i] = o[i] * reciprocal
        elif by_power_of_two:
            for i in range(n):
                o[i] = xr[i] * reciprocal
        elif divide and in_place:
            for i in range(n):
                o[i] = o[i] / divisor
        elif divide:
            for i in range(n):
                o[i] = xr[i] / divisor
        m = chunk_max(o)
        for i in range(n):
            o[i] = numpy_exp_f32(o[i] - m)
    else:
        m = chunk_max(xr)
        for i in range(n):
            o[i] = numpy_exp_f32(xr[i] - m)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def softmax_steps_rows_parallel(x, out, divisor, divide, workers, block):
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            softmax_steps_rows(x, out, lo, hi, divisor, divide)
            lo, hi = take_block(counter, block, rows)


def softmax_float32_steps(x: np.ndarray, out: np.ndarray, threads, divide_by=None) -> np.ndarray:
    """Softmax over the last axis, as onnx's reference computes it (module docstring), of
    x / divide_by if that is given (a float32 division, as an ONNX Div node computes it)."""
    if x.size == 0:
        return out
    n = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, n)
    out2 = out.reshape(-1, n)
    workers, block = split(x2.shape[0], n, threads_for(x.size, x2.shape[0], threads))
    divisor = np.float32(1.0 if divide_by is None else divide_by)
    divide = divide_by is not None
    if matches_numpy():
        if workers == 1:
            softmax_steps_rows(x2, out2, 0, x2.shape[0], divisor, divide)
        else:
            softmax_steps_rows_parallel(x2, out2, divisor, divide, workers, block)
        return out
    # numpy computes exp another way here: three passes, numpy's exp in the middle.
    if divide:
        x2 = np.divide(x2, divisor, out=out2)
    if workers == 1:
        _subtract_row_max(x2, out2, 0, x2.shape[0])
    else:
        _subtract_row_max_parallel(x2, out2, workers, block)
    np.exp(out2, out=out2)
    if workers == 1:
        _divide_by_row_sum(out2, 0, out2.shape[0])
    else:
        _divide_by_row_sum_parallel(out2, workers, block)
    return out


def _as_3d(x: np.ndarray, axis: int) -> tuple[int, int, int]:
    shape = x.shape
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def logsoftmax(x: np.ndarray, axis: int, out: np.ndarray, threads) -> np.ndarray:
    """x: float32 (any layout); axis: normalised; out: C-contiguous float32 of x's shape."""
    _run(x, axis, out, threads, logsoftmax_rows, logsoftmax_rows_parallel, logsoftmax_strided)
    return out


def softmax(x: np.ndarray, axis: int, out: np.ndarray, threads) -> np.ndarray:
    _run(x, axis, out, threads, softmax_rows, softmax_rows_parallel, softmax_strided)
    return out


def _run(x, axis, out, threads, rows_serial, rows_parallel, strided) -> None:
    if x.size == 0:
        return
    x = np.ascontiguousarray(x)
    outer, n, inner = _as_3d(x, axis)
    workers, block = split(outer, n * inner, threads_for(x.size, outer, threads))
    if inner == 1:
        x2, out2 = x.reshape(outer, n), out.reshape(outer, n)
        if workers == 1:
            rows_serial(x2, out2)
        else:
            rows_parallel(x2, out2, workers, block)
        return
    # One worker: prange runs the slabs in turn on the calling thread.
    strided(x.reshape(outer, n, inner), out.reshape(outer, n, inner), workers, block)
