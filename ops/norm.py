"""layer_norm: the public front end (validate, then dispatch).

Numerics: mean and variance accumulate in float64 and the output is rounded once from float64,
so |y - y64| <= 2 eps |y64| + 2 eps |bias| (eps = 2**-24; y64 the float64 result on the same float32
input). NaN or inf in a row makes that row NaN (as numpy's expression does).
float32_steps=True: instead, bit for bit the float32 arithmetic of onnx's reference evaluator (see
ops/cpu/norm.py), less accurate but what a graph runner must reproduce exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import backend_for
from .quantize import ValueRange, check_reports_ranges
from .validate import check_axis, check_float32, check_threads, output


def layer_norm(x, weight, bias=None, epsilon: float = 1e-5, axis: int = -1, *, residual=None,
               float32_steps: bool = False, out=None, threads: int | None = None,
               with_range: bool = False):
    """ONNX LayerNormalization: normalise x over the axes axis..ndim-1, then scale and shift.

        mean, var = x.mean(axes), x.var(axes)          (population variance)
        y = (x - mean) / sqrt(var + epsilon) * weight + bias

    weight and bias (optional) are float32 of shape x.shape[axis:] (the default axis=-1: one
    value per feature). epsilon: a number >= 0. residual: optional float32 array of x's shape,
    added to x first (float32), in the same pass: layer_norm(x + residual) without the sum ever
    written. float32_steps: compute as onnx's reference evaluator does, bit for bit (module doc).
    with_range=True returns (y, ops.ValueRange of y) for a consumer that quantizes y dynamically
    next (dynamic_quantize_params(value_range=...)); with float32_steps each row's range is
    taken while the row is in cache, otherwise y is read once more. CPU only.
    """
    backend = backend_for(x=x, weight=weight, bias=bias, residual=residual, out=out)
    check_float32(x, "x")
    check_float32(weight, "weight")
    check_threads(threads)
    if x.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    axis = check_axis(axis, x.ndim)
    normalised = x.shape[axis:]
    if weight.shape != normalised:
        raise ValueError(f"weight: expected shape {normalised} (x.shape[axis:]), got {weight.shape}")
    if bias is not None:
        check_float32(bias, "bias")
        if bias.shape != normalised:
            raise ValueError(f"bias: expected shape {normalised} (x.shape[axis:]), got {bias.shape}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)):
        raise TypeError(f"epsilon: expected a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon: expected a finite number >= 0, got {epsilon!r}")
    if residual is not None:
        check_float32(residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected x's shape {x.shape}, got {residual.shape}")
    inputs = tuple(a for a in (x, weight, bias, residual) if a is not None)
    result = output(backend, out, x.shape, np.float32, inputs)
    if not with_range:
        return backend.layer_norm(x, weight, bias, float(epsilon), axis, result, threads,
                                  residual=residual, float32_steps=bool(float32_steps))
    check_reports_ranges(backend, "with_range")
    y, found = backend.layer_norm(x, weight, bias, float(epsilon), axis, result, threads,
                                  residual=residual, float32_steps=bool(float32_steps),
                                  with_range=True)
    return y, ValueRange(*found)
