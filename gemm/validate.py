"""Argument checks shared by the gemm API: each error names the argument and what was expected."""

from __future__ import annotations

import functools
import math

import numpy as np

# np.float32(v) of a float v is positive and finite exactly when these bounds hold strictly:
# below 2**-150 (half the smallest subnormal; the tie rounds to even, 0) it is 0, and from the
# midpoint between float32's largest value and 2**128 (the tie rounds to even, infinity) it is inf.
_F32_ROUNDS_TO_ZERO = 2.0 ** -150
_F32_ROUNDS_TO_INF = 2.0 ** 128 - 2.0 ** 103


def check_quant_mult(quant_mult, argument: str, n: int | None = None):
    """A positive finite scalar (returned as float), or, when n is given, also a 1-D array of n
    positive finite values (returned as float32 array)."""
    # (The common case, a Python or numpy number, is told apart without np.ndim: 0.3 us a call.)
    if isinstance(quant_mult, (float, int, np.floating, np.integer)) or np.ndim(quant_mult) == 0:
        try:
            value = float(quant_mult)
        except (TypeError, ValueError):
            raise TypeError(f"{argument}: expected a positive number, got {quant_mult!r}") from None
        # It is used as float32: it must stay positive and finite there too. One comparison with
        # plain floats (numpy scalars cost ~1 us here, on every float call) that also rejects NaN.
        if not _F32_ROUNDS_TO_ZERO < value < _F32_ROUNDS_TO_INF:
            raise ValueError(f"{argument}: expected a positive number within float32's range, "
                             f"got {value!r}")
        return value
    if n is None:
        raise ValueError(f"{argument}: expected a scalar, got an array of shape {np.shape(quant_mult)}")
    arr = np.asarray(quant_mult)
    if arr.shape != (n,):
        raise ValueError(f"{argument}: expected a scalar or {n} per-column values, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{argument}: expected numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{argument}: every value must be positive and finite")
    return arr


def check_int(value, argument: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument}: expected an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{argument}: expected a value in [{lo}, {hi}], got {value}")
    return int(value)


EMPTY_I32 = np.zeros(0, np.int32)


def b_zero_points(b_zero_point, n: int) -> np.ndarray:
    """An int32 vector of N zero points, or an empty vector when they are all zero."""
    if type(b_zero_point) is int and b_zero_point == 0:
        return EMPTY_I32
    if np.ndim(b_zero_point) == 0:
        zb = check_int(b_zero_point, "b_zero_point", -128, 127)
        return EMPTY_I32 if zb == 0 else np.full(n, zb, np.int32)
    arr = np.asarray(b_zero_point)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"b_zero_point: expected an integer scalar or {n} integers, got "
                         f"shape {arr.shape} dtype {arr.dtype}")
    if arr.min() < -128 or arr.max() > 127:
        raise ValueError("b_zero_point: values must lie in [-128, 127]")
    return EMPTY_I32 if not arr.any() else arr.astype(np.int32)


def out_scale_vector(out_scale, n: int) -> np.ndarray:
    """N float32 output scales from a scalar or N values; each must be finite."""
    arr = np.asarray(out_scale)
    if arr.ndim == 0:
        arr = np.full(n, arr, np.float32) if arr.dtype.kind in "fiu" else arr
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"out_scale: expected a number or {n} numbers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"out_scale: expected a scalar or {n} per-column values, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("out_scale: every value must be finite")
    return arr


def out_scale_factors(out_scale, n: int) -> tuple[np.float32, np.ndarray]:
    """(inv_qa, inv_qb) for the CPU epilogue's float32(t) * (inv_qa * inv_qb_j) from `out_scale`.
    A scalar s is (s, ones): s * 1 is s exactly, as 1 * s was, so the bits are those of the
    vector of N copies of s that it replaces, and a call no longer builds and checks that vector
    (2-3 us at N = 1024: a dynamically quantized GEMM's scale is a new scalar every call)."""
    arr = np.asarray(out_scale)
    if arr.ndim == 0 and arr.dtype.kind in "fiu":
        scale = arr.astype(np.float32)[()]
        if not math.isfinite(scale):
            raise ValueError("out_scale: every value must be finite")
        return scale, _ones_f32(n)
    return _ONE_F32, out_scale_vector(out_scale, n)


_ONE_F32 = np.float32(1.0)


@functools.lru_cache(maxsize=64)
def _ones_f32(n: int) -> np.ndarray:
    ones = np.ones(n, np.float32)
    ones.flags.writeable = False
    return ones


A_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float32))


def check_a_matrix(a) -> tuple[int, int]:
    """(M, K) of A (a numpy array or a GpuArray, the caller checks which): 2-D, int8, uint8 or
    float32, both dimensions >= 1."""
    if a.ndim != 2:
        raise ValueError(f"A: expected a 2-D array (M x K), got shape {a.shape}")
    if a.dtype not in A_DTYPES:
        raise TypeError(f"A: expected dtype int8, uint8 or float32, got {a.dtype}")
    m, k = a.shape
    if m == 0 or k == 0:
        raise ValueError(f"A: expected M >= 1 and K >= 1, got shape {a.shape}")
    return m, k


def output_kind(a_dtype, a_quant_mult, out_scale, bias, relu, b_quant_mult):
    """Which output a gemm_i8 call makes, with the options checked against each other (the CPU
    and GPU paths alike): (np.float32, qa) with a_quant_mult, (np.float32, None) with out_scale,
    (np.int32, None) otherwise. qa is a_quant_mult as float32; b_quant_mult is B's (None: B was
    prepared without one)."""
    if a_dtype == np.float32 and a_quant_mult is None:
        raise ValueError("a_quant_mult: required when A is float32 (it quantizes A)")
    if out_scale is not None:
        if a_quant_mult is not None:
            raise ValueError("out_scale: give either out_scale or a_quant_mult, not both")
        return np.dtype(np.float32), None
    if a_quant_mult is not None:
        qa = np.float32(check_quant_mult(a_quant_mult, "a_quant_mult"))
        if b_quant_mult is None:
            raise ValueError("B: has no quant_mult, which float output needs; prepare it with "
                             "prepare_b/prepare_b_transposed or pass quant_mult when preparing")
        return np.dtype(np.float32), qa
    if bias is not None:
        raise ValueError("bias: only allowed with float output (pass a_quant_mult or out_scale)")
    if relu:
        raise ValueError("relu: only allowed with float output (pass a_quant_mult or out_scale)")
    return np.dtype(np.int32), None
