"""Elementwise ops: relu, gelu, tanh, sigmoid, exp, erf, add, mul and the fused bias_add (front ends).

Numerics (float32; y64 the float64 value of the same formula on the same float32 input;
eps = 2**-24; the bounds hold for normal results, |y64| >= 2**-126; smaller results are within
2**-126 absolute):
  add, mul, relu        exact (correctly rounded, as numpy)
  exp                   |y - y64| <= 2 eps |y64|      (0 below -103.97, inf above 88.72)
  sigmoid, tanh         |y - y64| <= 6 eps |y64|
  gelu, tanh form       |y - y64| <= 4 eps (1 + 2|u|) |y64|, u = sqrt(2/pi) (x + 0.044715 x**3);
                        computed as x * sigmoid(2u), y64 = 0.5 x (1 + tanh u); the |u| term is
                        e**(2u)'s float32 conditioning, visible only where |gelu(x)| < 1e-3
  gelu, erf form        |y - y64| <= 2 eps |y64|      y64 = 0.5 x (1 + erf(x / sqrt 2))
  erf                   correctly rounded: float32(erf(x)) of the exact value, which is also
                        float32(math.erf(float64(x))), what onnx's reference Erf computes
  gelu, float32_steps   bit for bit the float32 steps of Gelu as torch exports it to ONNX
                        (Div by sqrt 2, Erf, Add 1, Mul by x, Mul by 0.5), see gelu()
NaN propagates as in numpy; +-inf give what the formula gives (gelu(-inf) is NaN, like
0.5 * -inf * (1 + erf(-inf)) in numpy).

Broadcasting (add, mul): one operand may have fewer (leading) dimensions than the other, or
leading dimensions of 1, i.e. its shape, leading 1s dropped, ends the other's shape: a scalar, a
bias (d,), a (seq, d) array against (batch, seq, d). The result has the larger shape. Other numpy
broadcasts (e.g. (n, 1) against (n, d)) are a ValueError naming the operand.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import backend_for
from .quantize import (
    ValueRange,
    check_reports_ranges,
    dynamic_quantize_linear,
    dynamic_quantize_params,
    dynamic_scale_and_zero_point,
)
from .validate import check_axis, check_float32, check_threads, output

_ADD, _MUL = 0, 1


def _unary(name: str, x, out, threads, with_range: bool = False):
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    result = output(backend, out, x.shape, np.float32, (x,))
    if with_range:
        check_reports_ranges(backend, "with_range")
        y, found = backend.apply_unary_ranged(x, backend.UNARY_CODES[name], result, threads)
        return y, ValueRange(*found)
    return backend.apply_unary(x, backend.UNARY_CODES[name], result, threads)


def relu(x, *, out=None, threads: int | None = None):
    """max(x, 0) (NaN stays NaN)."""
    return _unary("relu", x, out, threads)


def exp(x, *, out=None, threads: int | None = None):
    """e**x."""
    return _unary("exp", x, out, threads)


def tanh(x, *, out=None, threads: int | None = None):
    return _unary("tanh", x, out, threads)


def sigmoid(x, *, out=None, threads: int | None = None):
    """1 / (1 + e**-x)."""
    return _unary("sigmoid", x, out, threads)


_GELU_FORMS = {"none": "gelu", "tanh": "gelu_tanh"}


def gelu(x, approximate: str = "none", *, float32_steps: bool = False, out=None,
         threads: int | None = None, with_range: bool = False, quantized_only: bool = False):
    """GELU: approximate="none" x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (ONNX Gelu's default),
    approximate="tanh" 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))).

    float32_steps=True (erf form only): the float32 arithmetic of the five ONNX nodes torch
    exports for it, each step rounded to float32 --
        t = x / float32(sqrt 2);  e = erf(t) correctly rounded;  y = (x * (e + 1)) * 0.5
    -- bit for bit what an ONNX runtime evaluating those nodes one by one (onnx's reference
    evaluator) returns. Less accurate than the default where 1 + erf(t) cancels (x < -2), but a
    graph runner fusing those nodes must reproduce them exactly: its result is quantized again
    next, and one ulp can move a value to the next integer step.

    with_range=True returns (y, ops.ValueRange of y): y's min and max, found block by block
    while each block is still in cache, for a consumer that quantizes y dynamically next
    (dynamic_quantize_params(value_range=...)) without reading y again.

    quantized_only=True (with float32_steps and with_range; numpy only): for a y that is only
    ever quantized with the scale and zero point of its range, as DynamicQuantizeLinear does. The
    range is exact, and every value rounds to the same integer there as the exact float32 steps'
    value; the floats themselves may differ from those by up to 2.7e-6 (2**-21 |x|, and none
    for |x| >= 5.56). A close float32 erf, and the exact one only where rounding could tell
    (ops/cpu/gelu_quantizing.py): a third of the arithmetic, 10-15% less time where memory
    traffic sets the pace. out must not be x."""
    if approximate not in _GELU_FORMS:
        raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
    if quantized_only:
        return _gelu_quantized_only(x, out, threads, float32_steps, with_range)
    if float32_steps:
        if approximate != "none":
            raise ValueError("float32_steps: only for approximate='none' (the erf form)")
        return _unary("gelu_float32_steps", x, out, threads, with_range)
    return _unary(_GELU_FORMS[approximate], x, out, threads, with_range)


def _gelu_quantized_only(x, out, threads, float32_steps, with_range):
    if not (float32_steps and with_range):
        raise ValueError("quantized_only: needs float32_steps=True and with_range=True (it is "
                         "exact only under the scale that range gives)")
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    check_reports_ranges(backend, "quantized_only")
    if out is not None and np.shares_memory(out, x):
        raise ValueError("out: must not overlap x with quantized_only=True (the values made exact "
                         "are recomputed from x after out is written)")
    result = output(backend, out, x.shape, np.float32, (x,))
    y, found = backend.gelu_for_quantizing(
        x, result, threads, lambda lo, hi: dynamic_scale_and_zero_point(lo, hi)[0])
    return y, ValueRange(*found)


def gelu_dynamic_quantize_linear(x, *, out=None, threads: int | None = None):
    """DynamicQuantizeLinear(Gelu(x)), Gelu in its float32 steps (gelu(float32_steps=True)):
    (y uint8 of x's shape, scale np.float32, zero_point np.uint8), bit for bit what the two ONNX
    ops give one after the other, as dynamic_quantize_linear(gelu(x, float32_steps=True)) does.

    On the CPU the float32 Gelu is never written: the exact range comes from x alone, and the
    integers from a close erf, made exact where rounding could tell (ops/cpu/gelu_quantizing.py;
    x is read twice, y written as 1 byte a value instead of 4 written and read again). Where that
    rule does not apply (no x < 0 within 1e-3 of Gelu's minimiser while some x < 0, or NaN,
    inf, |x| > 2**126), and on the GPU, the two ops run one after the other. NaN or inf in
    Gelu's result raise ValueError, as dynamic_quantize_linear does."""
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    q = output(backend, out, x.shape, np.uint8, (x,))
    fused = getattr(backend, "gelu_dynamic_quantize", None)
    if fused is not None:
        done = fused(x, q, threads, lambda lo, hi, bad: dynamic_quantize_params(
            value_range=ValueRange(lo, hi, bad)))
        if done is not None:
            return done
    y = gelu(x, float32_steps=True, threads=threads)
    return dynamic_quantize_linear(y, out=q, threads=threads)


def erf(x, *, out=None, threads: int | None = None):
    """The error function, correctly rounded to float32 (as onnx's reference Erf: every value
    equals np.float32(math.erf(float(x))))."""
    return _unary("erf", x, out, threads)


_NUMBERS = (int, float, np.float32)


def _operand(value, argument: str):
    """Python numbers become 0-d float32 arrays; arrays pass through (checked later)."""
    if type(value) is np.ndarray:
        return value
    if isinstance(value, bool):
        raise TypeError(f"{argument}: expected a float32 array or a number, got {value!r}")
    if isinstance(value, _NUMBERS):
        converted = np.asarray(value, np.float32)
        if np.isfinite(value) and not np.isfinite(converted):
            raise ValueError(f"{argument}: {value!r} overflows float32")
        return converted
    return value


def _strip_ones(shape):
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return shape[i:]


def _binary(op: int, a, b, out, threads):
    a_number, b_number = isinstance(a, _NUMBERS), isinstance(b, _NUMBERS)
    a, b = _operand(a, "a"), _operand(b, "b")
    # A number joins the arrays' backend (on the GPU: a constant buffer).
    backend = backend_for(a=None if a_number else a, b=None if b_number else b, out=out)
    a = backend.scalar(a) if a_number else a
    b = backend.scalar(b) if b_number else b
    check_float32(a, "a")
    check_float32(b, "b")
    check_threads(threads)
    try:
        # Most calls add or multiply arrays of one shape: numpy's broadcast takes ~1.5 us.
        shape = a.shape if a.shape == b.shape else np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"b: shape {b.shape} does not broadcast against a's {a.shape}") from None
    # `big` holds as many values as the result (its shape may lack leading 1s): its flat order is
    # the result's. Both ops commute exactly, so which operand it is does not matter.
    size = math.prod(shape)
    big, small, small_name = (a, b, "b") if a.size == size else (b, a, "a")
    if big.size != size:
        raise ValueError(f"a, b: broadcasting that expands both operands ({a.shape} and {b.shape})"
                         " is not supported")
    tail = _strip_ones(small.shape)
    if tail != shape[len(shape) - len(tail):]:
        raise ValueError(f"{small_name}: shape {small.shape} must match the trailing axes of "
                         f"{shape} (a scalar, a bias, or a same-shaped array); broadcasting along "
                         "an inner axis is not supported")
    result = output(backend, out, shape, np.float32, (a, b))
    return backend.apply_binary(big, small, op, result, threads)


def add(a, b, *, out=None, threads: int | None = None):
    """a + b (float32; see the module docstring for the broadcasting supported)."""
    return _binary(_ADD, a, b, out, threads)


def mul(a, b, *, out=None, threads: int | None = None):
    """a * b (float32; see the module docstring for the broadcasting supported)."""
    return _binary(_MUL, a, b, out, threads)


_ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh", "tanh", "sigmoid")


def bias_add(x, bias, *, residual=None, activation: str | None = None, axis: int = -1, out=None,
             threads: int | None = None):
    """activation(x + bias (+ residual)) in one pass over memory: a GEMM epilogue done separately.

    bias: 1-D float32 of length x.shape[axis], added along `axis`. residual: optional float32
    array of x's shape (a skip connection). activation: None, "relu", "gelu" (erf form),
    "gelu_tanh", "tanh" or "sigmoid". Bitwise the same as add(add(x, bias), residual) followed by
    the activation (each row is finished while it is in cache).
    """
    backend = backend_for(x=x, bias=bias, residual=residual, out=out)
    check_float32(x, "x")
    check_float32(bias, "bias")
    check_threads(threads)
    if x.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    axis = check_axis(axis, x.ndim)
    if bias.shape != (x.shape[axis],):
        raise ValueError(f"bias: expected shape ({x.shape[axis]},) (x.shape[axis]), got "
                         f"{bias.shape}")
    if residual is not None:
        check_float32(residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected x's shape {x.shape}, got {residual.shape}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {_ACTIVATIONS}, got {activation!r}")
    act = backend.UNARY_CODES[activation]
    inputs = (x, bias) if residual is None else (x, bias, residual)
    result = output(backend, out, x.shape, np.float32, inputs)
    return backend.bias_add(x, bias, residual, act, axis, result, threads)
