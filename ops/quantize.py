"""quantize_linear, dequantize_linear, dynamic_quantize_linear: ONNX's ops, bit for bit as
onnx.reference computes them (front ends: validate, then dispatch).

    quantize_linear    y = saturate(rint(x / scale) + zero_point)     rint: half to even;
                       saturate: clamp to the range of int8 or uint8 (+-inf saturate too)
    dequantize_linear  y = (x - zero_point) * scale                   float32
    dynamic_quantize_linear(x) -> (y uint8, scale, zero_point uint8) with
                       scale = (max(0, max x) - min(0, min x)) / 255  (1/255 if that range is 0,
                       as the reference computes it), zero_point = rint(clamp(-min(0, min x) /
                       scale, 0, 255)), then quantize_linear.
Per-tensor: scale (and zero_point) a scalar or a 1-element array. Per-axis: 1-D arrays of
x.shape[axis] values (ONNX's default axis is 1). NaN in x is a ValueError (the result would be
meaningless); dynamic_quantize_linear also refuses inf (no scale represents it). An empty x gives an
empty y (dynamic: scale 1/255, zero point 0).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .backends import backend_for
from .validate import check_axis, check_float32, check_threads, output

_QUANT_TYPES = (np.dtype(np.uint8), np.dtype(np.int8))


def _as_array(value, number_dtype=None):
    """numpy scalars become 0-d arrays of their dtype; Python numbers 0-d arrays of number_dtype
    (scale: float32, as ONNX stores it; zero_point: none, so a Python int is refused)."""
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and number_dtype:
        return np.asarray(value, number_dtype)
    return value


def _zero_point(value):
    value = _as_array(value)
    if isinstance(value, (int, float)):
        raise TypeError(f"zero_point: expected uint8 or int8 (an array or np.uint8/np.int8 scalar, "
                        f"whose dtype picks the output type), got {value!r}")
    return value


def _params(x, scale, zero_point, axis, default_dtype, argument_dtype):
    """Checked (scale float32 1-D, zero_point 1-D of the quantized dtype, axis or None for
    per-tensor, the quantized dtype)."""
    scale = _as_array(scale, np.float32)
    zero_point = _zero_point(zero_point)
    backend_for(scale=scale, zero_point=zero_point)
    check_float32(scale, "scale")
    if scale.ndim > 1:
        raise ValueError(f"scale: expected a scalar or a 1-D array, got shape {scale.shape}")
    scale32 = np.asarray(scale, np.float32).reshape(-1)
    if not np.all(np.isfinite(scale32)) or np.any(scale32 <= 0):
        raise ValueError("scale: every value must be positive and finite (in float32)")
    per_axis = scale32.size != 1
    if per_axis:
        axis = check_axis(axis, x.ndim)
        if scale32.size != x.shape[axis]:
            raise ValueError(f"scale: expected 1 value or {x.shape[axis]} (x.shape[axis]), got "
                             f"{scale32.size}")
    if zero_point is None:
        dtype = np.dtype(default_dtype)
        zp = np.zeros(scale32.size, dtype)
    else:
        dtype = zero_point.dtype
        if dtype not in _QUANT_TYPES:
            raise TypeError(f"zero_point: expected uint8 or int8, got {dtype}")
        if zero_point.shape != scale.shape and zero_point.size != scale32.size:
            raise ValueError(f"zero_point: expected scale's shape {scale.shape}, got "
                             f"{zero_point.shape}")
        if argument_dtype is not None and dtype != argument_dtype:
            raise TypeError(f"zero_point: dtype {dtype} differs from dtype={argument_dtype}")
        zp = np.ascontiguousarray(zero_point).reshape(-1)
    return scale32, zp, (axis if per_axis else None), dtype


def quantize_linear(x, scale, zero_point=None, axis: int = 1, *, dtype=None, out=None,
                    threads: int | None = None):
    """ONNX QuantizeLinear (float32 -> int8/uint8). The output dtype is zero_point's, else
    `dtype` (np.uint8 or np.int8), else uint8 (ONNX's default)."""
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    if dtype is not None and np.dtype(dtype) not in _QUANT_TYPES:
        raise TypeError(f"dtype: expected np.uint8 or np.int8, got {dtype!r}")
    wanted = None if dtype is None else np.dtype(dtype)
    scale32, zp, axis, qtype = _params(x, scale, zero_point, axis, wanted or np.uint8, wanted)
    result = output(backend, out, x.shape, qtype, (x,))
    nan = backend.quantize_linear(x, scale32, zp, axis, result, threads)
    if nan:
        raise ValueError(f"x: contains {nan} NaN value(s), which have no quantized value")
    return result


def dequantize_linear(x, scale, zero_point=None, axis: int = 1, *, out=None,
                      threads: int | None = None):
    """ONNX DequantizeLinear (int8/uint8 -> float32). zero_point, if given, has x's dtype."""
    backend = backend_for(x=x, out=out)
    if x.dtype not in _QUANT_TYPES:
        raise TypeError(f"x: expected uint8 or int8, got {x.dtype}")
    check_threads(threads)
    if zero_point is not None:
        zero_point = _zero_point(zero_point)
        backend_for(zero_point=zero_point)
        if zero_point.dtype != x.dtype:
            raise TypeError(f"zero_point: expected x's dtype {x.dtype}, got {zero_point.dtype}")
    scale32, zp, axis, _ = _params(x, scale, zero_point, axis, x.dtype, None)
    result = output(backend, out, x.shape, np.float32, ())
    return backend.dequantize_linear(x, scale32, zp, axis, result, threads)


def dynamic_quantize_linear(x, *, out=None, threads: int | None = None):
    """ONNX DynamicQuantizeLinear: (y uint8 of x's shape, scale np.float32, zero_point np.uint8),
    bit-identical to onnx.reference. For a GpuArray x all three are GpuArrays (scale and
    zero_point 0-d), computed on the GPU."""
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    on_device = getattr(backend, "dynamic_quantize_linear", None)
    if on_device is not None:
        # The GPU computes scale and zero point itself (the same float32 steps), so they stay
        # in GPU memory for the next kernel.
        return on_device(x, output(backend, out, x.shape, np.uint8, (x,)))
    scale, zero_point = _dynamic_params(backend, x, threads)
    y = output(backend, out, x.shape, np.uint8, (x,))
    if scale == 0:
        # max - min underflowed (every x within a few subnormals of 0): the reference divides
        # by that 0, so x > 0 becomes +inf (255), x < 0 -inf (0), and x = 0 NaN, which its cast
        # to uint8 makes 0.
        np.copyto(y, np.where(x > 0, np.uint8(255), np.uint8(0)))
        return y, scale, zero_point
    backend.quantize_linear(x, np.array([scale], np.float32), np.array([zero_point], np.uint8),
                            None, y, threads)
    return y, scale, zero_point


class ValueRange(NamedTuple):
    """What DynamicQuantizeLinear needs to know of a float32 array: its smallest and largest
    value and how many of its values are NaN or infinite (min and max then mean nothing). Ops
    that produce an array can report it while writing (gelu, layer_norm: with_range=True)."""
    min: np.float32
    max: np.float32
    non_finite: int


def check_reports_ranges(backend, argument: str) -> None:
    """ValueRanges are a CPU matter: on the GPU, dynamic_quantize_linear finds the range itself
    and keeps it there."""
    if getattr(backend, "min_max", None) is None:
        raise TypeError(f"{argument}: only for numpy arrays (on the GPU, dynamic_quantize_linear "
                        "finds the range itself)")


def value_range(x, *, threads: int | None = None) -> ValueRange:
    """The ValueRange of a float32 numpy array (one pass over it; min > max when x is empty)."""
    backend = backend_for(x=x)
    check_float32(x, "x")
    check_threads(threads)
    check_reports_ranges(backend, "x")
    return ValueRange(*backend.min_max(x, threads))


def dynamic_quantize_params(x=None, *, value_range: ValueRange | None = None,
                            threads: int | None = None):
    """DynamicQuantizeLinear's (scale np.float32, zero_point np.uint8) for float32 x on the CPU,
    without quantizing x: for a consumer that quantizes x itself as it reads it, such as
    gemm_i8(x, b, a_scale=scale, a_zero_point=zero_point). Instead of x, its value_range as an
    op that wrote x reported it: the same result without reading x."""
    if value_range is not None:
        if x is not None:
            raise TypeError("x: pass x or value_range, not both")
        if not isinstance(value_range, ValueRange):
            raise TypeError(f"value_range: expected an ops.ValueRange, got "
                            f"{type(value_range).__name__}")
        return _params_of_range(value_range.min, value_range.max, value_range.non_finite)
    if x is None:
        raise TypeError("x: required (or value_range)")
    backend = backend_for(x=x)
    check_float32(x, "x")
    check_threads(threads)
    if getattr(backend, "dynamic_quantize_linear", None) is not None:
        raise TypeError("x: dynamic_quantize_params takes a numpy array; for a GpuArray use "
                        "dynamic_quantize_linear, whose scale and zero point stay on the GPU")
    return _dynamic_params(backend, x, threads)


def _dynamic_params(backend, x, threads):
    return _params_of_range(*backend.min_max(x, threads))


def _params_of_range(lo, hi, bad):
    if bad:
        raise ValueError(f"x: contains {bad} NaN or infinite value(s); no scale represents them")
    if lo > hi:   # an empty array's range
        return dynamic_scale_and_zero_point(0.0, 0.0)
    return dynamic_scale_and_zero_point(lo, hi)


def dynamic_scale_and_zero_point(lo, hi):
    """DynamicQuantizeLinear's (scale np.float32, zero_point np.uint8) from min(x) and max(x) of
    a float32 x (finite), in the reference evaluator's float32 steps:

        maxx, minx = max(0, hi), min(0, lo)
        scale = (maxx - minx, or 1 where they are equal) / 255
        zero_point = rint(clamp(0 - minx / scale, 0, 255))

    each step rounded to float32 (ops/cpu/quantize.py's scale_and_zero_point runs them). Where
    max - min underflows to a zero scale, the reference's 0 - min / 0 is +inf or NaN, and its
    clamp, Python's min(255, that), gives 255 for both."""
    scale, zero_point = _compiled_steps()(np.float32(lo), np.float32(hi))
    return np.float32(scale), np.uint8(zero_point)


@functools.cache
def _compiled_steps():
    # Imported on first use, as the backends are: importing ops.cpu imports numba, which would
    # triple `import ops`'s time (~110 -> ~330 ms here).
    from .cpu.quantize import scale_and_zero_point

    return scale_and_zero_point
