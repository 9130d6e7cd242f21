"""Scalar float32 maths that LLVM can vectorise: exp, tanh, sigmoid, gelu, and a NaN-ignoring max.

numba compiles `np.exp`, `np.tanh` and `math.erf` on float32 to calls of the C library, one
element at a time (there is no vector maths library without Intel's SVML). The functions here
are straight-line arithmetic instead -- range reduction, a polynomial, a bit-built power of two,
selects rather than branches -- so a loop calling them compiles to AVX-512/AVX2 code.

Accuracy against float64 (eps = 2**-24; y64 the float64 value; dense sweeps in
tests/test_ops_elementwise.py, and through logsoftmax in tests/test_ops_softmax.py):
  exp_f32           |y - y64| <= 2 eps |y64| (about 1 ulp); 0 for -inf and below -103.97 (the
                    subnormal range is correct to its last bit); inf above 88.72; NaN -> NaN
  exp_sum_term_f32  <= 4 eps |y64| for -20 <= x <= 0, growing to 7 eps at x = -87 (float32 ln 2's
                    error times n): the fast form for sums of e**(x - max), whose least accurate
                    terms are the ones a sum >= 1 cannot see
  sigmoid_f32       <= 6 eps |y64|, subnormal results included
  tanh_f32          <= 6 eps |y64|
  gelu_tanh_f32     <= 4 eps (1 + 2|u|) |y64|: u is rounded to float32 before e**(2u), which
                    matters only on the far negative tail (|gelu(x)| < 1e-3 once |u| > 4)
  gelu_erf_f32      <= 2 eps |y64| (float64 C-library erfc: exact but not vectorised)
When editing this file, delete ops/cpu/__pycache__: numba's on-disk cache checks only the
timestamp of the file a jitted function lives in, not of the functions it calls from here.

Every ops kernel is compiled with error_model="numpy": IEEE division (x/0 is inf or NaN, as in
numpy) instead of Python's ZeroDivisionError checks, which would also block vectorisation.
Each function evaluates its arguments in the order written: callers compile them without the
`reassoc` fast-math flag (which could undo the two-constant ln 2 reduction); `contract` (FMA) only
makes them more accurate.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

F32 = ir.FloatType()
I32 = ir.IntType(32)

# Flags for functions in this module: FMA contraction only (no reassociation, no NaN/inf
# assumptions), so the results are what the comments say on every path.
EXACT_FLAGS = {"contract"}
# Flags for reduction loops (sum/max over a row): reassociation lets LLVM keep one partial sum
# per vector lane. It changes only the order of the additions, never NaN/inf handling.
REDUCE_FLAGS = {"contract", "reassoc"}


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma: vfmadd on x86 with FMA), float32 or float64, whatever the
    fast-math flags (which leave a * b + c written out as a multiplication and an addition)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        kind = F32 if sig.args[0] == types.float32 else ir.DoubleType()
        name = "llvm.fma.f32" if kind == F32 else "llvm.fma.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(kind, [kind] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def pow2_f32(typingctx, n):
    """2.0**n as float32 for an integer -126 <= n <= 127, built from its exponent bits."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        width = v.type.width
        if width > 32:
            v = builder.trunc(v, I32)
        elif width < 32:
            v = builder.sext(v, I32)
        bits = builder.shl(builder.add(v, ir.Constant(I32, 127)), ir.Constant(I32, 23))
        return builder.bitcast(bits, F32)

    return types.float32(n), codegen


@intrinsic
def f64_bits(typingctx, y):
    """The bits of a float64 as an int64 (a bitcast, which vectorises)."""
    if y != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(y), codegen


@intrinsic
def fmax_f32(typingctx, a, b):
    """IEEE maxNum: the larger of a and b, ignoring a NaN operand. Unlike `max()`, a loop of these
    vectorises to vmaxps (LLVM's llvm.maxnum)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(F32, [F32, F32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.maxnum.f32")
        return builder.call(fn, args)

    return types.float32(a, b), codegen


@intrinsic
def fmin_f32(typingctx, a, b):
    """IEEE minNum: the smaller of a and b, ignoring a NaN operand (vminps in a loop)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(F32, [F32, F32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.minnum.f32")
        return builder.call(fn, args)

    return types.float32(a, b), codegen


_LOG2E = np.float32(1.4426950408889634)
# ln 2 split in two (Cody and Waite): n * _LN2_HI is exact for |n| < 2**11, so x - n ln 2 loses
# nothing to cancellation.
_LN2_HI = np.float32(0.693145751953125)
_LN2_LO = np.float32(1.428606765330187e-06)
_EXP_LO = np.float32(-104.0)   # exp(x) < 2**-150 rounds to 0 below this
_EXP_HI = np.float32(89.0)     # exp(x) > float32 max above 88.73


# e**r = 1 + r + r**2 (C2 + r (C3 + ...)) for |r| <= ln2/2: a least-squares fit in relative
# error on Chebyshev nodes; |error| < 2**-27 before float32 rounding of the evaluation.
_C2 = np.float32(0.49999988079071045)
_C3 = np.float32(0.166665181517601)
_C4 = np.float32(0.04166953265666962)
_C5 = np.float32(0.008368915878236294)
_C6 = np.float32(0.0013751407386735082)
_ONE = np.float32(1.0)
_EXP_NORMAL_LO = np.float32(-87.0)   # e**x stays a normal float32 above -87.33


@njit(error_model="numpy", inline="always", fastmath=EXACT_FLAGS, cache=True)
def _exp_reduced(xc):
    """(e**r, n) with xc = n ln 2 + r."""
    n = np.rint(xc * _LOG2E)
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _C6 * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + _ONE
    p = p * r + _ONE
    return p, np.int32(n)


@njit(error_model="numpy", inline="never", fastmath=EXACT_FLAGS, cache=True)
def exp_f32(x):
    """e**x for float32 x, <= 1 ulp in the normal range, correct to the last subnormal, inf above
    88.72, 0 for -inf. 2**n is applied as two factors, so no result needs a special case. The
    clamps are written `lo if x < lo else x`, which keeps NaN (the comparison is false), and a NaN
    then reaches the polynomial and the result."""
    xc = _EXP_LO if x < _EXP_LO else x
    xc = _EXP_HI if xc > _EXP_HI else xc
    p, n = _exp_reduced(xc)
    n1 = n >> 1
    return p * pow2_f32(n1) * pow2_f32(n - n1)


@intrinsic
def pow2_from_rounded_f32(typingctx, t):
    """2.0**n from t = n + _ROUNDED_BIAS (float32, -126 <= n <= 0): t's low mantissa bits hold
    n + 127, which a shift by 23 moves into the exponent field (the bits above drop out)."""
    if t != types.float32:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.shl(builder.bitcast(args[0], I32), ir.Constant(I32, 23))
        return builder.bitcast(bits, F32)

    return types.float32(t), codegen


# 1.5 * 2**23 + 127: adding it to a float32 of magnitude < 2**22 rounds to an integer (the ulp at
# 2**23 is 1), and leaves that integer + 127 -- a biased exponent -- in the low mantissa bits.
_ROUNDED_BIAS = np.float32(12583039.0)
# ln 2 in float32 is within 1.9e-9 of ln 2, so one reduction step suffices for a sum term: the
# error is n * 1.9e-9 relative, largest (4 eps) on the terms near e**-87 that no sum >= 1 can see.
_LN2_F32 = np.float32(0.6931471824645996)
# e**r = 1 + r + r**2 (S2 + r (S3 + r (S4 + r S5))) for |r| <= 0.35: a minimax fit in relative
# error, |error| < 1.2e-7 (2 eps) before float32 rounding of the evaluation.
_S2 = np.float32(0.4999920129776001)
_S3 = np.float32(0.16667133569717407)
_S4 = np.float32(0.04189453274011612)
_S5 = np.float32(0.008312046527862549)


@njit(error_model="numpy", inline="never", fastmath=EXACT_FLAGS, cache=True)
def exp_sum_term_f32(x):
    """e**x for x <= 0 (bound above), as a term of a sum that is >= 1 (softmax's
    denominator): x below -87 is taken as -87, adding at most 2**-125 per term in place of a
    smaller number, which no float32 sum >= 1 can see. Cheaper than exp_f32 where a sum allows:
    n is rounded by adding _ROUNDED_BIAS (no round or float-to-int conversion), ln 2 is one
    constant, the polynomial one degree lower. NaN propagates. The bias is added and taken away
    again: without the `reassoc` flag LLVM may not fold (t + c) - c to t."""
    xc = _EXP_NORMAL_LO if x < _EXP_NORMAL_LO else x
    t = xc * _LOG2E + _ROUNDED_BIAS
    n = t - _ROUNDED_BIAS
    r = xc - n * _LN2_F32
    p = _S5 * r + _S4
    p = p * r + _S3
    p = p * r + _S2
    p = p * r + _ONE
    p = p * r + _ONE
    return p * pow2_from_rounded_f32(t)


@njit(error_model="numpy", inline="never", fastmath=EXACT_FLAGS, cache=True)
def sigmoid_f32(x):
    """1 / (1 + e**-x) for x >= 0, e**x / (1 + e**x) for x < 0: the exponential is never large,
    so neither tail overflows or cancels (down to subnormal results)."""
    e = exp_f32(-abs(x))
    s = np.float32(1.0) / (np.float32(1.0) + e)
    return s if x >= 0 else e * s


@njit(error_model="numpy", inline="never", fastmath=EXACT_FLAGS, cache=True)
def tanh_f32(x):
    """tanh: an odd polynomial for |x| < 0.625 (where 1 - 2/(e**2x + 1) would cancel), otherwise
    1 - 2/(e**2|x| + 1) with the sign restored. Both are computed and one selected, so a loop
    stays branch-free."""
    a = abs(x)
    z = x * x
    small = np.float32(-5.70498872745e-3)
    small = small * z + np.float32(2.06390887954e-2)
    small = small * z + np.float32(-5.37397155531e-2)
    small = small * z + np.float32(1.33314422036e-1)
    small = small * z + np.float32(-3.33332819422e-1)
    small = small * z * x + x
    large = np.float32(1.0) - np.float32(2.0) / (exp_f32(a + a) + np.float32(1.0))
    large = large if x >= 0 else -large
    return small if a < np.float32(0.625) else large   # NaN: `large` is NaN


_SQRT_2_OVER_PI = np.float32(0.7978845608028654)
_GELU_CUBIC = np.float32(0.044715)


@njit(error_model="numpy", inline="never", fastmath=EXACT_FLAGS, cache=True)
def gelu_tanh_f32(x):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x**3), computed as x * sigmoid(2u):
    the same number, but 1 + tanh(u) would cancel for x < -3."""
    u = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
    return x * sigmoid_f32(u + u)


@njit(error_model="numpy", inline="never", cache=True)
def gelu_erf_f32(x):
    """x * Phi(x) = 0.5 x erfc(-x / sqrt 2), in float64 (erfc keeps relative accuracy for x < 0,
    where 1 + erf would cancel)."""
    v = np.float64(x)
    return np.float32(0.5 * v * math.erfc(-v * 0.7071067811865476))


# -- erf, rounded exactly to float32 ------------------------------------------------------------
#
# float32(erf(x)) for float32 x, equal to rounding the exact value (and libm's double erf) to
# float32: what onnx's reference Erf computes. A float64 approximation erf_f64 good to
# ERF_REL_ERROR decides the rounding for all but the values within that error of a float32
# rounding midpoint (about 2 in 10**4); erf_guard flags those, and the caller recomputes them with
# the C library's erf. erf_f64 is one rational function on the whole range, no branch and no
# select between ranges, so a loop of it vectorises. Rational because erf(x) / x is, as a
# function of s = x*x, the integral over 0 <= u <= 1 of (2/sqrt pi) e**(-s u**2): a sum of
# decaying exponentials in s, which rational functions approximate far better than polynomials
# do. Degrees 7 and 8 cover 0 <= x <= 3.93 to 5e-13 in 15 multiply-adds, 2 multiplications and
# a division; polynomials needed degree 8 on [0, 1] plus degree 20 on [1, 4], both evaluated for
# every value (the form used before, at twice the time per value).

# erf(x) / x = P(s) / Q(s), s = x*x, for 0 <= x <= ERF_X_MAX, Q(0) = 1: 12 Sanathanan-Koerner
# iterations -- linear least squares of P(s) - f(s) Q(s) weighted by 1 / (f(s) Q_prev(s)), so that
# the residual is the relative error -- on 300 Chebyshev nodes of s in [0, 3.93**2], solved in
# 40-digit arithmetic (mpmath.qr_solve), coefficients rounded to float64. All are positive, so
# Horner's rule cannot cancel. Largest relative error of erf_f64 against math.erf, measured over
# every float32 x in (0, 3.93]: 5.25e-13 (near x = 0, where P(0) = 2/sqrt(pi) (1 + 5.2e-13)).
_ERF_P = (1.128379167096104, 0.20025004535242544, 0.05943205433657608, 0.00517923072763156,
          0.0005785976567079036, 2.660753278006819e-05, 1.2720903505540536e-06,
          1.269198221198964e-08)
_ERF_Q = (1.0, 0.5108003153797922, 0.12293705825943121, 0.018298486693874294,
          0.001850838517212996, 0.0001305135768993412, 6.202561995295334e-06,
          1.7061831254127938e-07, 3.9812305170850367e-10)
# As separate globals, which numba folds into the code as constants (one Horner step per line).
(_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7) = _ERF_P
(_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8) = _ERF_Q
# Beyond ERF_X_MAX erf_f64 returns erf(+-3.93) = +-(1 - 2.7e-8): float32(erf) is +-1 from
# |x| = 3.919206 on, and 1 - 2.7e-8 is 2.8e-9 above the rounding midpoint 1 - 2**-25, so it
# rounds to +-1 unflagged whatever x is.
ERF_X_MAX = 3.93
# The bound erf_guard assumes on |erf_f64(x) - erf(x)| / |erf(x)|: 9.5x the largest error
# measured. Every float32 input was checked against libm (float32(math.erf(x)) for all 2**32 bit
# patterns: no difference); tests/test_ops_erf.py checks the rounding decisions on dense sweeps.
ERF_REL_ERROR = 5e-12
# erf_guard reads y's bits: float32(y) rounds y's 52-bit fraction at bit 29, so the exact value
# can round differently only if y's low 29 bits are within ERF_REL_ERROR |y| of 2**28 (the
# midpoint). In units of y's last bit (|y| < 2**53 of them) that is ERF_REL_ERROR * 2**53, plus 4
# units for the C library's own error (under one) and rounding of the bound. A binade boundary in
# between changes nothing: it is a float32 value, 2**27 units or more from the nearest midpoints.
_ERF_GUARD_UNITS = int(ERF_REL_ERROR * 2.0**53) + 4
_ERF_GUARD_LO = 2**28 - _ERF_GUARD_UNITS
_ERF_GUARD_WIDTH = 2 * _ERF_GUARD_UNITS
_LOW_29_BITS = 2**29 - 1
# Below 2**-126 float32(erf) is subnormal, rounded at 2**-149 rather than at bit 29 of y; that
# happens only for subnormal x (|erf(x)| > |x| there), which erf_guard flags.
_F32_SUBNORMAL_END = 2.0**-126


# inline="always": a call would block vectorisation of the loop it is in.
@njit(error_model="numpy", inline="always", fastmath=EXACT_FLAGS, cache=True)
def erf_f64(x):
    """erf(x) for x = float64(a float32), relative error below ERF_REL_ERROR up to |x| = 3.93;
    beyond, erf(+-3.93) (see ERF_X_MAX). NaN -> NaN (the comparisons let it through)."""
    xc = ERF_X_MAX if x > ERF_X_MAX else x
    xc = -ERF_X_MAX if xc < -ERF_X_MAX else xc
    s = xc * xc
    p = fma(_P7, s, _P6)
    p = fma(p, s, _P5)
    p = fma(p, s, _P4)
    p = fma(p, s, _P3)
    p = fma(p, s, _P2)
    p = fma(p, s, _P1)
    p = fma(p, s, _P0)
    q = fma(_Q8, s, _Q7)
    q = fma(q, s, _Q6)
    q = fma(q, s, _Q5)
    q = fma(q, s, _Q4)
    q = fma(q, s, _Q3)
    q = fma(q, s, _Q2)
    q = fma(q, s, _Q1)
    q = fma(q, s, _Q0)
    return xc * p / q


@njit(error_model="numpy", inline="always", fastmath=EXACT_FLAGS, cache=True)
def erf_guard(y, x):
    """True where y = erf_f64(x) may round to a different float32 than erf(x) does: y near a
    rounding midpoint, or x a nonzero subnormal. (A NaN y is NaN either way.)"""
    a = abs(x)
    near = ((f64_bits(y) - _ERF_GUARD_LO) & _LOW_29_BITS) <= _ERF_GUARD_WIDTH
    return near | ((a < _F32_SUBNORMAL_END) & (a != 0.0))


class _RunningMinMax:
    """The running state of vector_min_max and rows_min_max, in LLVM IR: two pairs of 16-lane
    vectors of minima and maxima, each updated by select(v < lo, v, lo) -- one vminps (vmaxps)
    per 16 values, the instructions' own semantics -- and an or of unordered compares for NaN;
    reduced to (min, max, 1.0 if any NaN else 0.0) once at the end."""

    def __init__(self, builder):
        self.builder = builder
        self.f32 = ir.FloatType()
        self.lanes = ir.VectorType(self.f32, 16)
        flags = ir.VectorType(ir.IntType(1), 16)
        self.state = [cgutils.alloca_once(builder, self.lanes) for _ in range(4)]
        self.nan = cgutils.alloca_once(builder, flags)
        for i, slot in enumerate(self.state):
            builder.store(ir.Constant(self.lanes, [float("inf") if i < 2 else float("-inf")] * 16),
                          slot)
        builder.store(ir.Constant(flags, [0] * 16), self.nan)

    def update(self, data, groups):
        """Take in the 32 * groups float32 values from the pointer `data` (groups: i64)."""
        builder = self.builder
        i64 = ir.IntType(64)
        first = builder.bitcast(data, self.lanes.as_pointer())
        with cgutils.for_range(builder, groups) as loop:
            seen = builder.load(self.nan)
            for half in range(2):
                at = builder.add(builder.mul(loop.index, ir.Constant(i64, 2)),
                                 ir.Constant(i64, half))
                v = builder.load(builder.gep(first, [at]), align=4)
                lo, hi = self.state[half], self.state[2 + half]
                old = builder.load(lo)
                builder.store(builder.select(builder.fcmp_ordered("<", v, old), v, old), lo)
                old = builder.load(hi)
                builder.store(builder.select(builder.fcmp_ordered(">", v, old), v, old), hi)
                seen = builder.or_(seen, builder.fcmp_unordered("uno", v, v))
            builder.store(seen, self.nan)

    def result(self, context, return_type):
        builder = self.builder

        def reduce(a, b, op):
            u, w = builder.load(a), builder.load(b)
            m = builder.select(builder.fcmp_ordered(op, u, w), u, w)
            best = builder.extract_element(m, ir.Constant(ir.IntType(32), 0))
            for i in range(1, 16):
                e = builder.extract_element(m, ir.Constant(ir.IntType(32), i))
                best = builder.select(builder.fcmp_ordered(op, e, best), e, best)
            return best

        any_nan = builder.icmp_unsigned("!=", builder.bitcast(builder.load(self.nan),
                                                              ir.IntType(16)),
                                        ir.Constant(ir.IntType(16), 0))
        flag = builder.select(any_nan, ir.Constant(self.f32, 1.0), ir.Constant(self.f32, 0.0))
        return context.make_tuple(builder, return_type,
                                  [reduce(self.state[0], self.state[1], "<"),
                                   reduce(self.state[2], self.state[3], ">"), flag])


@intrinsic
def vector_min_max(typingctx, x, groups):
    """(min, max, 1.0 if any NaN else 0.0) of x[:32 * groups] (groups >= 1), NaN left out of
    min and max (_RunningMinMax). (As a loop of minnum/maxnum with a second loop for finiteness,
    LLVM emitted a compare and a blend per minimum too: 0.14 ns per value.)"""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and x.dtype == types.float32 and isinstance(groups, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        running = _RunningMinMax(builder)
        running.update(context.make_array(sig.args[0])(context, builder, args[0]).data,
                       context.cast(builder, args[1], sig.args[1], types.int64))
        return running.result(context, sig.return_type)

    return types.UniTuple(types.float32, 3)(x, groups), codegen


@intrinsic
def rows_min_max(typingctx, x, groups):
    """vector_min_max over every row of a 2-D array whose rows are contiguous (any row stride):
    (min, max, 1.0 if any NaN else 0.0) of x[:, :32 * groups], the running vectors carried from
    row to row and reduced once at the end (reduced per row, short rows cost as much again)."""
    if not (isinstance(x, types.Array) and x.ndim == 2 and x.dtype == types.float32
            and isinstance(groups, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        rows, _ = cgutils.unpack_tuple(builder, arr.shape, 2)
        row_stride, _ = cgutils.unpack_tuple(builder, arr.strides, 2)
        base = builder.ptrtoint(arr.data, i64)
        count = context.cast(builder, args[1], sig.args[1], types.int64)
        running = _RunningMinMax(builder)
        with cgutils.for_range(builder, rows) as row_loop:
            address = builder.add(base, builder.mul(row_loop.index, row_stride))
            running.update(builder.inttoptr(address, ir.FloatType().as_pointer()), count)
        return running.result(context, sig.return_type)

    return types.UniTuple(types.float32, 3)(x, groups), codegen
