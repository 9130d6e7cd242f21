"""numpy's own float32 exp, step for step, so a numba kernel can compute it inside a loop.

onnx's reference evaluator computes Softmax with np.exp, and the graph runner must match it bit
for bit (graph/float_softmax.py). numpy's float32 exp on an x86 CPU with AVX2 + FMA or AVX-512F is
its own SIMD routine, not the C library's: Cody-Waite range reduction with two constants, a
rational (degree 5 over degree 2) approximation of e**r, a scaling by 2**k that rounds once
(also into the subnormals), and masks for NaN and the ends of the range. Both of its vector
widths run the same float32 operations -- the same fused multiply-adds, one division -- so they
return the same bits; so does numpy_exp_f32 below, which performs those operations in the same
order: explicit fused multiply-adds where numpy has them, and no others (its callers compile
without the `contract` fast-math flag, which would fuse more).

Other numpy builds (no AVX2, another architecture, a future change of algorithm) compute exp
another way. `matches_numpy()` therefore compares numpy_exp_f32 with np.exp on a probe of values
spread over the whole float32 range once per process; callers use it only where it agrees, and
call np.exp otherwise. When editing this file, delete ops/cpu/__pycache__ (see mathfuncs.py).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .mathfuncs import fma, pow2_f32

# The constants of numpy's routine, as float32 bit patterns: the values are numpy's (its
# npy_simd_data / npy_math constants and the two range limits written in the routine).
_LOG2E = np.uint32(0x3FB8AA3B).view(np.float32)        # log2(e)
_LN2_HI = np.uint32(0xBF317200).view(np.float32)       # -ln 2, high part (exact products)
_LN2_LO = np.uint32(0xB5BFBE8E).view(np.float32)       # -ln 2, low part
_RINT_MAGIC = np.uint32(0x4B400000).view(np.float32)   # 1.5 * 2**23: (t + it) - it rounds t
# e**r ~ P(r) / Q(r), numpy's coefficients (one global each: numba folds them into the code).
_P0, _P1, _P2, _P3, _P4, _P5 = (np.uint32(b).view(np.float32) for b in (
    0x3F800000, 0x3F39CBD5, 0x3E7D4C58, 0x3D517D8C, 0x3BDD7159, 0x3A053DD8))
_Q0, _Q1, _Q2 = (np.uint32(b).view(np.float32) for b in (0x3F800000, 0xBE8C6857, 0x3CB0E832))
_X_MAX = np.uint32(0x42B17218).view(np.float32)        # 88.72283935546875: inf from here up
_X_MIN = np.uint32(0xC2CFF1B5).view(np.float32)        # -103.97208404541015625: 0 from here down
_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)
_NAN = np.float32(np.nan)


@njit(error_model="numpy", inline="always", cache=True)
def _scale_by_pow2(p, k):
    """p * 2**k for float32 p in [0.7, 1.5) and an integral float32 k in [-150, 128], rounded once
    (as AVX-512's vscalefps, and numpy's AVX2 division by a power of two): first by 2**a, a = k
    clamped to [-125, 127] -- exact, the product is a normal number -- then by the rest, 2**(k - a)
    with k - a in [-25, 1]: one rounding, which is the subnormal one where there is any."""
    n = np.int32(k)
    a = min(max(n, np.int32(-125)), np.int32(127))
    return (p * pow2_f32(a)) * pow2_f32(n - a)


@njit(error_model="numpy", inline="always", cache=True)
def numpy_exp_f32(x):
    """np.exp(x) for float32 x, as numpy's AVX2/AVX-512 routine computes it (module docstring):
    NaN -> NaN, x >= 88.7228 -> inf, x <= -103.972 -> 0, else e**r * 2**k from k = rint(x log2 e),
    r = x - k ln 2 (two fused steps) and e**r = P(r) / Q(r) (fused Horner steps)."""
    nan = x != x
    big = x >= _X_MAX
    small = x <= _X_MIN
    xs = _ZERO if (nan or big or small) else x
    k = xs * _LOG2E
    k = k + _RINT_MAGIC
    k = k - _RINT_MAGIC
    r = fma(k, _LN2_HI, xs)
    r = fma(k, _LN2_LO, r)
    num = fma(_P5, r, _P4)
    num = fma(num, r, _P3)
    num = fma(num, r, _P2)
    num = fma(num, r, _P1)
    num = fma(num, r, _P0)
    den = fma(_Q2, r, _Q1)
    den = fma(den, r, _Q0)
    y = _scale_by_pow2(num / den, k)
    y = _NAN if nan else y
    y = _INF if big else y
    return _ZERO if small else y


@njit(error_model="numpy", cache=True, nogil=True)
def numpy_exp_into(x, out):
    for i in range(x.shape[0]):
        out[i] = numpy_exp_f32(x[i])


def probe_values() -> np.ndarray:
    """float32 values on which numpy_exp_f32 must equal np.exp: every 4099th bit pattern (all
    signs, exponents and mantissa patterns, subnormals, infinities and NaNs among them), the
    range ends and their neighbours, and a dense run over softmax's inputs [-20, 0]."""
    patterns = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ends = np.array([_X_MAX, _X_MIN, 0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
    neighbours = np.concatenate([np.nextafter(ends[:2], np.float32(np.inf)),
                                 np.nextafter(ends[:2], np.float32(-np.inf))])
    dense = np.linspace(-20, 0, 1 << 16, dtype=np.float32)
    return np.concatenate([patterns, ends, neighbours, dense])


@functools.cache
def matches_numpy() -> bool:
    """True if numpy_exp_f32 returns np.exp's bits on every probe value (module docstring)."""
    x = probe_values()
    out = np.empty_like(x)
    numpy_exp_into(x, out)
    with np.errstate(all="ignore"):
        expected = np.exp(x)
    return bool(np.array_equal(out.view(np.uint32), expected.view(np.uint32)))
