"""Gelu for a tensor that is only ever quantized next (DynamicQuantizeLinear -> MatMulInteger):
exact where quantization can tell, with a third of the arithmetic of exact everywhere.

ONNX's integer results after a Gelu depend on its float32 output only through
DynamicQuantizeLinear: the scale and zero point from the output's min and max, then
q = saturate(rint(y / scale) + zero_point) per value. Two tensors with the same min and max whose
values all give the same q are interchangeable for every consumer of that kind. So instead of
the correctly rounded float64 erf for every value (elementwise.erf_chunks, ~1.2 ns a value on a
Zen 4 core, compute-bound), this computes Gelu's float32 steps with a float32 erf that is close,
and then makes exact only the values that can matter:

1. The exact min and max of y, from x alone (_range_from_x): for x >= 0, y >= 0 and never falls
   as x grows, and for x < 0, y <= 0, so the max is the y of the max of x; the min, when some x
   lies within 1e-3 of Gelu's minimiser (NEAR_MIN), is the least exact y of the x within 2e-3
   of it (AROUND_MIN, 0.1% of a normally distributed x), a rule checked over every float32. One
   pass that reads x and computes nothing per value but its min, max and window test.
   Where the rule does not apply (every x < 0, or none near the minimiser, or NaN, inf or huge
   values), the general way: each block of values (in cache) gets its close Gelu y~ (written to
   out), its min and max, and every value within twice the error bound of them recomputed
   exactly. The exact minimum's value is among those (it is at most the exact value of y~'s
   minimum, so its own y~ is at most 2 bounds above y~'s minimum), so the range is exact.
2. From that range, the scale as DynamicQuantizeLinear computes it (the caller's function).
3. Each block: y~ (unless the general way wrote it), and every value whose y~ / scale lies
   within the error bound (plus the roundings of the division) of a half-integer, where rint
   could go either way, is recomputed exactly. Everywhere else q(y~) = q(y): q is monotone in y
   and no rounding step lies between.

The values recomputed are gathered and run through the exact kernel (erf_chunks), vectorised:
for a normally distributed x about 0.03% in step 3. The result's floats are within CLOSE_ERROR
of the exact ones, not equal to them: this is for a tensor nothing else reads (graph/session.py
checks that), and ops only offers it together with the range (ops.gelu(quantized_only=True)).
With DynamicQuantizeLinear's integers as the output instead (gelu_dynamic_quantize, behind
ops.gelu_dynamic_quantize_linear, which the graph uses), step 3 writes those, and no float is
written at all.

Time: y~ costs 0.37 ns a value on one Zen 4 core against the exact kernel's 1.2, and the passes
wait on memory. 2048 x 1024 values at 2 threads on a 2-core Zen 4 VM, interleaved medians: the
general way (x in, y~ out, y~ in again) 0.97-1.21 ms, from x alone (x in twice, y~ out)
0.84-1.02 ms; the exact kernel everywhere ~1.8.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dispatch.cpu import prange_only

from .elementwise import erf_chunks, flagged_positions
from .mathfuncs import EXACT_FLAGS, fma
from .quantize import EMPTY_RANGE, combine_ranges, min_max_bad_serial
from .threads import BLOCK_VALUES, split, take_block, threads_for

# erf(t) / t = P(s) / Q(s), s = t*t, for 0 <= t <= 3.93: 8 Sanathanan-Koerner iterations
# (weighted linear least squares, the weights making the residual relative) on 300 Chebyshev
# nodes, in 40-digit arithmetic, coefficients rounded to float32; relative error 2e-8 before the
# float32 rounding. All positive: Horner's rule cannot cancel. Degree (5, 5): (4, 5) and (3, 4)
# have coefficients of mixed sign or 10x the error, and no multiply-add fewer is worth more flagged
# values.
_P0, _P1, _P2, _P3, _P4, _P5 = (np.float32(c) for c in (
    1.1283791487299633, 0.18996334104533763, 0.05269027754170733, 0.003746893586764683,
    0.0002845127827798804, 2.0540166744040735e-06))
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5 = (np.float32(c) for c in (
    1.0, 0.5016834298575743, 0.11392616445110203, 0.014931370631075231, 0.0011581093945390733,
    3.811339588206771e-05))
# Beyond |t| = 3.93 float32(erf(t)) is +-1 (from 3.919206 on, mathfuncs.ERF_X_MAX), and so is the
# close erf: from |x| = 3.93 sqrt 2 = 5.558 on, y~ equals y exactly.
_T_MAX = np.float32(3.93)
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)

# |y~ - y| <= CLOSE_PER_X |x| for every float32 x, y the exact float32 steps (ops.gelu's
# float32_steps). Measured over all 2**32 bit patterns: at most 2.68e-7 |x| (at x = 5.3516), and
# 0 for |x| >= 5.558, where both erfs are +-1; the bound is 1.8x the largest. So
# |y~ - y| <= CLOSE_ERROR everywhere. It holds on every CPU: gelu_close_f32 uses no fast-math flag
# (no contraction, no reassociation) and its multiply-adds are explicit fma.
CLOSE_PER_X = 2.0**-21
CLOSE_ERROR = CLOSE_PER_X * 5.6
# The per-value window of step 1, |x| * _WINDOW + _TINY: the bound, a quarter more for the
# roundings of the window and of y~ -+ window in float32 (at most 2**-24 (|y~| + window) each,
# and |y~| <= |x|), and the smallest normal float32 for subnormal roundings.
_WINDOW = np.float32(CLOSE_PER_X * 1.25)
_TINY = np.float32(2.0**-126)


@njit(error_model="numpy", inline="always", cache=True)
def gelu_close_f32(v):
    """Gelu's float32 steps, (v * (erf(v / sqrt 2) + 1)) * 0.5, with a close float32 erf: within
    CLOSE_ERROR of the exact steps. NaN -> NaN; +-inf -> what the steps give with erf = +-1."""
    t = v * _INV_SQRT2
    t = min(max(t, -_T_MAX), _T_MAX)
    s = t * t
    p = fma(fma(fma(fma(fma(_P5, s, _P4), s, _P3), s, _P2), s, _P1), s, _P0)
    q = fma(fma(fma(fma(fma(_Q5, s, _Q4), s, _Q3), s, _Q2), s, _Q1), s, _Q0)
    e = t * p / q
    e = _ONE if t >= _T_MAX else e
    e = -_ONE if t <= -_T_MAX else e
    return (v * (e + _ONE)) * _HALF


# Values per chunk: a chunk's y~ and flags stay in L1 between the passes over it.
CHUNK = 1024


@njit(error_model="numpy", cache=True)
def _close_chunk(x, out):
    for i in range(x.shape[0]):
        out[i] = gelu_close_f32(x[i])


@njit(error_model="numpy", cache=True)
def _flag_outside(y, x, lo, hi, flags):
    """flags[i] = 1 where y~ = y[i] of input x[i] could be at or below lo, or at or above hi,
    exactly (its window of error rounded outwards), or is NaN; else 0. Returns whether any is 1
    (most chunks have none, and their flags need no scan)."""
    flagged = np.uint8(0)
    for i in range(y.shape[0]):
        v = y[i]
        w = abs(x[i]) * _WINDOW + _TINY
        f = np.uint8(1) - np.uint8((v - w > lo) & (v + w < hi))   # NaN: both compares false
        flags[i] = f
        flagged |= f
    return flagged


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _near_half(r, tol0, tol1):
    """1 if r = y~ * inv_scale lies within tol0 + tol1 |r| of a half-integer (rounding_tolerances),
    else 0."""
    return np.int32(abs(r - np.floor(r) - np.float32(0.5)) <= tol0 + tol1 * abs(r))


@njit(error_model="numpy", inline="always", cache=True)
def _saturate_u8(v):
    """DynamicQuantizeLinear's saturation of rint(y / scale) + zero_point to uint8."""
    return np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _count_near_half(y, inv_scale, tol0, tol1):
    """How many y[i] * inv_scale are within tol0 + tol1 |y[i] * inv_scale| of a half-integer."""
    found = np.int32(0)
    for i in range(y.shape[0]):
        found = np.int32(found + _near_half(y[i] * inv_scale, tol0, tol1))
    return found


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _flag_near_half(y, inv_scale, tol0, tol1, flags):
    for i in range(y.shape[0]):
        flags[i] = np.uint8(_near_half(y[i] * inv_scale, tol0, tol1))


@njit(error_model="numpy", inline="always", cache=True)
def _gather_exact(x, where, count, xs, ys):
    """xs[:count] = x[where[:count]], ys[:count] = their exact Gelu steps (one vectorised call of
    the exact kernel)."""
    for j in range(count):
        xs[j] = x[where[j]]
    erf_chunks(xs[:count], ys[:count], True)


@njit(error_model="numpy", cache=True)
def _make_exact(x, y, where, count, xs, ys):
    """y[i] = the exact Gelu steps of x[i] for i in where[:count], scattered back from
    _gather_exact. Returns (min, max, count of NaN) of those values."""
    _gather_exact(x, where, count, xs, ys)
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    nan = 0
    for j in range(count):
        v = ys[j]
        y[where[j]] = v
        lo = min(lo, v)
        hi = max(hi, v)
        nan += v != v
    return lo, hi, nan


@njit(error_model="numpy", cache=True)
def _bound_up(v):
    """The smallest float32 >= the float64 v."""
    f = np.float32(v)
    return np.nextafter(f, np.float32(np.inf)) if np.float64(f) < v else f


@njit(error_model="numpy", cache=True)
def _bound_down(v):
    f = np.float32(v)
    return np.nextafter(f, np.float32(-np.inf)) if np.float64(f) > v else f


@njit(error_model="numpy", cache=True, nogil=True)
def _range_block(x, y, flags, where, xs, ys):
    """Step 1 on one block: y~, then (min, max, count of NaN and inf) of the exact y (NaN makes
    the caller recompute everything exactly).

    lo is kept at or above the exact value of some y of the block, so at or above their min: a
    value whose y~ minus its error bound is above lo cannot be the min. Chunk by chunk, the
    others are noted in `where` as soon as y~ is computed, and lo lowered to each one's y~ plus
    its bound. Likewise hi for the max. At the end the values noted are made exact: the block's
    min and max are among them. (Gelu is flat near its minimum: about one value in a thousand
    of a normally distributed x is noted.)"""
    n = x.shape[0]
    first = min(CHUNK, n)
    _close_chunk(x[:first], y[:first])
    mn, mx, nan = min_max_bad_serial(y[:first])
    if nan:
        return mn, mx, nan
    # Some y is at most y~'s min plus the bound, and some at least its max minus it.
    lo = _bound_up(np.float64(mn) + CLOSE_ERROR)
    hi = _bound_down(np.float64(mx) - CLOSE_ERROR)
    count = 0
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        xc, yc = x[start:end], y[start:end]
        if start:
            _close_chunk(xc, yc)
        if not _flag_outside(yc, xc, lo, hi, flags):
            continue
        was = count
        count = flagged_positions(flags, end - start, start, count, where)
        for j in range(was, count):
            v, bound = np.float64(y[where[j]]), CLOSE_PER_X * abs(np.float64(x[where[j]]))
            lo = min(lo, _bound_up(v + bound))
            hi = max(hi, _bound_down(v - bound))
    return _make_exact(x, y, where, count, xs, ys)   # never empty: the first chunk's min


# Gelu's float32 steps are lowest, -0.16997123, at x = -0.75168604, and flat around it. Checked
# over every float32 x < 0 (the largest y in NEAR_MIN is -0.16997093, the least outside
# AROUND_MIN -0.16997045; tests/test_ops_gelu_quantizing.py checks 2**-10 <= |x| <= 6 again,
# where it is not evident): every x outside AROUND_MIN has a larger y than every x in NEAR_MIN.
# So when some x lies in NEAR_MIN, the min of y is the min of the exact y of the x in AROUND_MIN
# (0.1% of a normally distributed x), and no other y need be computed to find it. (NEAR_MIN is
# x_min +- 1e-3, AROUND_MIN x_min +- 2e-3: narrower windows fail the check, Gelu being flatter
# there than float32's steps are fine.)
NEAR_MIN = (np.float32(-0.752686), np.float32(-0.75068605))
AROUND_MIN = (np.float32(-0.753686), np.float32(-0.74968606))
# For x >= 0 each step is monotone in x and y >= 0, and for x < 0, y <= 0: the max of y is the y
# of the max of x when that is >= 0, and the min of y the y of the min of x when that is >= 0.
# Beyond 2**126 in magnitude x * (e + 1) can overflow: such x take the general way.
_X_LARGE = np.float32(2.0**126)


@njit(error_model="numpy", cache=True)
def _flag_around_min(x, flags):
    """flags[i] = whether x[i] is in AROUND_MIN. (No "any" kept here: numba widens it to 64
    bits, and the loop then costs twice as much as flagged_positions' scan of the flags.)"""
    for i in range(x.shape[0]):
        v = x[i]
        flags[i] = np.uint8((v >= AROUND_MIN[0]) & (v <= AROUND_MIN[1]))


@njit(error_model="numpy", cache=True, nogil=True)
def _x_range_block(x, flags, where, xs, ys):
    """Step 1 from x alone, on one block (flags: room for its values, rounded up to 8): (min and
    max of x, whether any is NaN, inf or beyond _X_LARGE, whether any is in NEAR_MIN, the min of
    the exact y of those in AROUND_MIN (inf if none)). Two passes over the block, the second in
    cache: per chunk, the calls cost 25% more."""
    n = x.shape[0]
    mn, mx, bad = min_max_bad_serial(x)
    odd = np.uint8((bad != 0) | (mn < -_X_LARGE) | (mx > _X_LARGE))
    _flag_around_min(x, flags)
    count = flagged_positions(flags, n, 0, 0, where)
    _gather_exact(x, where, count, xs, ys)
    near = np.uint8(0)
    lowest = np.float32(np.inf)
    for j in range(count):
        near |= np.uint8((xs[j] >= NEAR_MIN[0]) & (xs[j] <= NEAR_MIN[1]))
        lowest = min(lowest, ys[j])
    return mn, mx, odd, near, lowest


@njit(error_model="numpy", cache=True, nogil=True)
def _rounding_block(x, y, inv_scale, tol0, tol1, close, flags, where, xs, ys):
    """Step 3 on one block; with `close`, y~ is computed here, chunk by chunk, rather than read."""
    n = x.shape[0]
    count = 0
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        if close:
            _close_chunk(x[start:end], y[start:end])
        if _count_near_half(y[start:end], inv_scale, tol0, tol1):
            _flag_near_half(y[start:end], inv_scale, tol0, tol1, flags)
            count = flagged_positions(flags, end - start, start, count, where)
    if count:
        _make_exact(x, y, where, count, xs, ys)


@njit(error_model="numpy", cache=True)
def _scratch(block, flag_values=CHUNK):
    """One thread's working arrays: flags for a chunk (or flag_values, rounded up to 8), and room
    for a block's noted positions and their gathered inputs and exact values."""
    return (np.empty((flag_values + 7) // 8 * 8, np.uint8), np.empty(block, np.int64),
            np.empty(block, np.float32), np.empty(block, np.float32))


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _range_pass(x, y, workers, block, lohi, bads):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        flags, where, xs, ys = _scratch(block)
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            b = lo // block
            lohi[b, 0], lohi[b, 1], bads[b] = _range_block(x[lo:hi], y[lo:hi], flags, where, xs,
                                                           ys)
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _x_range_pass(x, workers, block, xlohi, odd, near, lowest):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        flags, where, xs, ys = _scratch(block, block)
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            b = lo // block
            xlohi[b, 0], xlohi[b, 1], odd[b], near[b], lowest[b] = _x_range_block(
                x[lo:hi], flags, where, xs, ys)
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _rounding_pass(x, y, inv_scale, tol0, tol1, close, workers, block):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        flags, where, xs, ys = _scratch(block)
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            _rounding_block(x[lo:hi], y[lo:hi], inv_scale, tol0, tol1, close, flags, where, xs,
                            ys)
            lo, hi = take_block(counter, block, n)


@njit(error_model="numpy", cache=True)
def _exact_gelu(v):
    one = np.full(1, v, np.float32)
    erf_chunks(one, one, True)
    return one[0]


@njit(error_model="numpy", cache=True)
def _y_range(xlohi, odd, near, lowest):
    """_range_from_x's verdict from the blocks' findings: (whether the rule applies, min of y,
    max of y). One compiled call: as numpy reductions and scalar calls from Python, this took
    ~10 us, most of a batch-1 Gelu's range (4 x 1024 values)."""
    x_min, x_max = xlohi[:, 0].min(), xlohi[:, 1].max()
    nothing = np.float32(0)
    if odd.any() or not x_max >= 0:
        return False, nothing, nothing
    if x_min >= 0:
        y_min = _exact_gelu(x_min)
    elif near.any():
        y_min = lowest.min()
    else:
        return False, nothing, nothing
    return True, y_min, _exact_gelu(x_max)


def _range_from_x(xf, workers, block, blocks):
    """The exact (min, max, 0) of y found from x alone (see NEAR_MIN), or None where that rule
    does not apply: some x odd, every x < 0, or some x < 0 and none in NEAR_MIN."""
    xlohi = np.empty((blocks, 2), np.float32)
    odd = np.empty(blocks, np.uint8)
    near = np.empty(blocks, np.uint8)
    lowest = np.empty(blocks, np.float32)
    _x_range_pass(xf, workers, block, xlohi, odd, near, lowest)
    applies, y_min, y_max = _y_range(xlohi, odd, near, lowest)
    return (np.float32(y_min), np.float32(y_max), 0) if applies else None


@njit(error_model="numpy", fastmath=EXACT_FLAGS, cache=True)
def _quantize_close(y, inv_scale, zero_point, tol0, tol1, q, flags):
    """q[i] = saturate(rint(y[i] * inv_scale) + zero_point), flags[i] = whether y[i] * inv_scale
    lies near a half-integer (_near_half), in one loop."""
    for i in range(y.shape[0]):
        r = y[i] * inv_scale
        q[i] = _saturate_u8(np.rint(r) + zero_point)
        flags[i] = np.uint8(_near_half(r, tol0, tol1))


@njit(error_model="numpy", cache=True, nogil=True)
def _quantizing_block(x, q, scale, inv_scale, zero_point, tol0, tol1, y, flags, where, xs, ys):
    """Step 3 with DynamicQuantizeLinear's integers as the output, on one block: y~ chunk by
    chunk into y (a chunk of scratch), q from it; the values flagged then from the exact y, as
    DynamicQuantizeLinear computes them (a float32 division, not a multiplication)."""
    n = x.shape[0]
    count = 0
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        m = end - start
        _close_chunk(x[start:end], y[:m])
        _quantize_close(y[:m], inv_scale, zero_point, tol0, tol1, q[start:end], flags)
        count = flagged_positions(flags, m, start, count, where)
    _gather_exact(x, where, count, xs, ys)
    for j in range(count):
        q[where[j]] = _saturate_u8(np.rint(ys[j] / scale) + zero_point)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _quantizing_pass(x, q, scale, inv_scale, zero_point, tol0, tol1, workers, block):
    n = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        flags, where, xs, ys = _scratch(block)
        y = np.empty(CHUNK, np.float32)
        lo, hi = take_block(counter, block, n)
        while lo < hi:
            _quantizing_block(x[lo:hi], q[lo:hi], scale, inv_scale, zero_point, tol0, tol1, y,
                              flags, where, xs, ys)
            lo, hi = take_block(counter, block, n)


def _blocks(x: np.ndarray, threads):
    """(x flat, workers, block, number of blocks) for the passes over x."""
    xf = np.ascontiguousarray(x).reshape(-1)
    workers, block = split(xf.size, 1, threads_for(xf.size, xf.size, threads))
    block = min(block, BLOCK_VALUES)
    return xf, workers, block, -(-xf.size // block)


def gelu_dynamic_quantize(x: np.ndarray, q: np.ndarray, threads, params_of_range):
    """q = DynamicQuantizeLinear's uint8 values of Gelu's float32 steps of x; returns (q, scale,
    zero_point), with params_of_range(min, max, count of NaN and inf) -> (scale, zero_point) the
    caller's; or None where the range cannot be found from x alone (see _range_from_x) or its
    scale is 0: then nothing is written, and the caller computes the exact Gelu and quantizes
    it."""
    if x.size == 0:
        return None
    xf, workers, block, blocks = _blocks(x, threads)
    found = _range_from_x(xf, workers, block, blocks)
    if found is None:
        return None
    scale, zero_point = params_of_range(*found)
    if not scale > 0:
        # A range so small that the scale underflows to 0 (every y subnormal or 0): the caller's
        # two ops then divide by it as DynamicQuantizeLinear does.
        return None
    inv_scale, tol0, tol1 = rounding_tolerances(scale)
    _quantizing_pass(xf, q.reshape(-1), np.float32(scale), inv_scale, np.float32(zero_point), tol0, tol1,
                     workers, block)
    return q, scale, zero_point


def rounding_tolerances(scale: float) -> tuple[np.float32, np.float32, np.float32]:
    """(inv_scale, tol0, tol1) of step 3 for a positive finite scale. With r = fl(y~ * inv_scale)
    and y the exact value: |y / scale - y~ / scale| <= CLOSE_ERROR / scale; r is within
    2**-23 |r| of y~ / scale (inv_scale and the product each round once, 2**-24); the quantizer's
    fl(y / scale) within 2**-24 of y / scale; and r - floor(r) - 0.5 rounds by at most 2**-24.
    tol1 = 2**-21 covers the relative parts twice over, tol0 the rest with room to spare. Outside
    tol0 + tol1 |r| of every half-integer, rint(fl(y / scale)) = rint(r) for every y within
    CLOSE_ERROR of y~."""
    inv_scale = np.float32(1.0 / scale)
    tol0 = np.float32(CLOSE_ERROR / scale * (1 + 2.0**-10) + 2.0**-21)
    return inv_scale, tol0, np.float32(2.0**-21)


def gelu_for_quantizing(x: np.ndarray, out: np.ndarray, threads, scale_of_range):
    """out = Gelu's float32 steps of x, exact wherever DynamicQuantizeLinear can tell (see the
    module's docstring); returns (out, (min, max, count of NaN and inf)), the range exact.
    scale_of_range(min, max) -> the scale DynamicQuantizeLinear derives from them. out must not
    be x (the inputs of the values made exact are read after out is written)."""
    if x.size == 0:
        return out, EMPTY_RANGE
    xf, workers, block, blocks = _blocks(x, threads)
    yf = out.reshape(-1)
    found = _range_from_x(xf, workers, block, blocks)
    close_written = found is None
    if close_written:
        lohi = np.empty((blocks, 2), np.float32)
        bads = np.empty(blocks, np.int64)
        _range_pass(xf, yf, workers, block, lohi, bads)
        found = combine_ranges(lohi, bads)
    scale = float(scale_of_range(found[0], found[1])) if not found[2] else math.nan
    if not 0.0 < scale < math.inf:
        # NaN or inf in x, or a zero scale (every y the same): exact everywhere.
        erf_chunks(xf, yf, True)
        return out, min_max_bad_serial(yf)
    inv_scale, tol0, tol1 = rounding_tolerances(scale)
    _rounding_pass(xf, yf, inv_scale, tol0, tol1, not close_written, workers, block)
    return out, found
