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
# rounding midpoint (a few in 10**4); erf_guard flags those, and the caller recomputes them with
# the C library's erf. erf_f64 is two polynomials and a select, so a loop of it vectorises.

# erf(a) / a = P(a**2) on 0 <= a <= 1, and erfc(a) = Q(u), u = (2a - 5) / 3, on 1 <= a <= 4:
# least-squares fits (numpy.polynomial, degrees 8 and 20) on 400 and 800 Chebyshev nodes of
# math.erf(a) / a and math.erfc(a); largest relative error of erf measured 1.1e-12 (a dense sweep
# of [0, 4] against math.erf).
_ERF_P = (1.1283791670946948, -0.3761263888986946, 0.11283791313504879, -0.0268661336260409,
          0.005223785009624658, -0.0008542670629221494, 0.00011956947632951097,
          -1.3911706608678204e-05, 1.059529065761841e-06)
_ERFC_Q = (0.00040695201757854835, -0.0032674263687654317, 0.01225284876368302,
           -0.028181550501077537, 0.043650775102953135, -0.04645365101646464, 0.03187653243699526,
           -0.009267199405938446, -0.006680538266027929, 0.009619654928006269,
           -0.004544778265798894, -0.0004370145280208271, 0.0018287805850170503,
           -0.0009287602690843519, -5.6374141805389235e-05, 0.0003028593746399871,
           -0.00011404505944055804, -3.7460497544484905e-05, 3.297265470897848e-05,
           9.524667753479768e-07, -3.5145942352459285e-06)
# As separate globals, which numba folds into the code as constants (one Horner step per line).
(_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8) = _ERF_P
(_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9, _Q10,
 _Q11, _Q12, _Q13, _Q14, _Q15, _Q16, _Q17, _Q18, _Q19, _Q20) = _ERFC_Q
# The bound erf_guard assumes on |erf_f64(x) - erf(x)| / |erf(x)|: 9x the largest error measured.
# tests/test_ops_erf.py checks the rounding decisions on dense sweeps; every float32 input was
# checked once against libm (float32(math.erf(x)) for all 2**32 bit patterns: no difference).
ERF_REL_ERROR = 1e-11


# inline="always": LLVM would not inline a function this long, and a call blocks vectorisation.
@njit(error_model="numpy", inline="always", fastmath=EXACT_FLAGS, cache=True)
def erf_f64(x):
    """erf(x) for x = float64(a float32), relative error below ERF_REL_ERROR; NaN -> NaN. Both
    polynomials are evaluated and one selected (no branch in a loop of it). Beyond |x| = 4, where
    float32(erf) is +-1, x is taken as +-4 (float32(erf(4)) is 1 too)."""
    a = abs(x)
    s = a * a
    p = _P8
    p = p * s + _P7
    p = p * s + _P6
    p = p * s + _P5
    p = p * s + _P4
    p = p * s + _P3
    p = p * s + _P2
    p = p * s + _P1
    p = p * s + _P0
    small = a * p
    ac = 4.0 if a > 4.0 else a
    u = ac * (2.0 / 3.0) - 5.0 / 3.0
    q = _Q20
    q = q * u + _Q19
    q = q * u + _Q18
    q = q * u + _Q17
    q = q * u + _Q16
    q = q * u + _Q15
    q = q * u + _Q14
    q = q * u + _Q13
    q = q * u + _Q12
    q = q * u + _Q11
    q = q * u + _Q10
    q = q * u + _Q9
    q = q * u + _Q8
    q = q * u + _Q7
    q = q * u + _Q6
    q = q * u + _Q5
    q = q * u + _Q4
    q = q * u + _Q3
    q = q * u + _Q2
    q = q * u + _Q1
    q = q * u + _Q0
    large = 1.0 - q
    y = small if a < 1.0 else large
    return -y if x < 0 else y


@njit(error_model="numpy", inline="always", fastmath=EXACT_FLAGS, cache=True)
def erf_guard(y):
    """(float32(y), flag): flag is True where the float64 approximation y of erf may round to a
    different float32 than the exact value (or is NaN)."""
    d = abs(y) * ERF_REL_ERROR
    return np.float32(y), np.float32(y - d) != np.float32(y + d)
