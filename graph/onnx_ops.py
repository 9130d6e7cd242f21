"""ONNX operators, one function per op, named exactly like the op.

Contract of every function here:
  - the node's inputs arrive positionally, in the node's order (a missing optional input is None);
  - the node's attributes arrive as keyword arguments whose defaults are ONNX's defaults;
  - it returns one numpy array, or a tuple of them for ops with several outputs;
  - it never writes into its inputs (they may be the session's weights or the caller's feeds),
    and it may return a view of an input (the session copies what it hands back to the caller);
  - a `_threads` keyword, where present, is the session's thread count for the kernels it calls.

The integer GEMMs run on `gemm.gemm_i8`; DynamicQuantizeLinear, Erf and LayerNormalization on
float32 run on the `ops` kernels that reproduce onnx's reference evaluator bit for bit; the rest
is numpy, computed in the input's dtype the way the reference computes it. Which ONNX versions
each function implements is stated once, in graph/registry.py. Ops whose behaviour changed between
versions in a way one signature cannot cover have one function per behaviour (Softmax and
Softmax_1).
"""

from __future__ import annotations

import math

import numpy as np

import gemm
import ops
from ops.quantize import dynamic_scale_and_zero_point

from . import parallel
from .tensors import MAX_ELEMENTS, ONNX_TO_NUMPY

# ---------------------------------------------------------------------------------------------
# Integer matrix products and quantization.


def MatMulInteger(A, B, a_zero_point=None, b_zero_point=None):
    za = _zero_point(a_zero_point)
    zb = _zero_point(b_zero_point)
    if B.ndim == 2 and A.ndim >= 2 and np.ndim(za) == 0 and np.ndim(zb) <= 1:
        # The common case: one weight matrix; the exact int8 kernels do it in one pass.
        b_s8, zb = int8_weights(B, zb)
        out = gemm.gemm_i8(A.reshape(-1, A.shape[-1]), b_s8, a_zero_point=int(za),
                           b_zero_point=zb if np.ndim(zb) else int(zb))
        return out.reshape(*A.shape[:-1], B.shape[1])
    # Per-row zero points of A or batched B: plain integer arithmetic (exact in int32, like
    # the kernels; int64 here would differ from them only where they wrap, past K = 131072).
    a = A.astype(np.int32) - np.asarray(za, np.int32).reshape(-1, 1) if np.ndim(za) else \
        A.astype(np.int32) - np.int32(za)
    b = B.astype(np.int32) - np.asarray(zb, np.int32)
    return np.matmul(a, b).astype(np.int32)


def int8_weights(b: np.ndarray, zb):
    """An int8 B and its zero point(s) with (B - zb) unchanged: uint8 B is shifted by 128,
    which is exact (B - zb = (B - 128) - (zb - 128))."""
    if b.dtype == np.int8:
        return b, zb
    shifted = (b.astype(np.int16) - 128).astype(np.int8)
    return shifted, (np.asarray(zb, np.int16) - 128).astype(np.int32)


def _zero_point(z):
    if z is None:
        return 0
    z = np.asarray(z)
    return z.reshape(()) if z.size == 1 else z.reshape(-1)


def DynamicQuantizeLinear(x, *, _threads=None):
    if x.dtype == np.float32 and x.size:
        # ops' kernels: min/max and quantization in blocks the threads take from a shared counter
        # (at 2 threads 3-5x faster than chunks handed out from Python, measured on (2048, 256)
        # and (2048, 1024)); bit-identical to the steps below. NaN/inf raise ValueError.
        y, scale, zero_point = ops.dynamic_quantize_linear(x, threads=parallel.resolve(_threads))
        return y, np.array(scale, np.float32), np.array(zero_point, np.uint8)
    # ONNX's definition, step by step in float32 (bit-identical to the reference evaluator).
    scale, zero_point = dynamic_scale_and_zero_point(float(x.min()), float(x.max())) if x.size \
        else dynamic_scale_and_zero_point(0.0, 0.0)
    y = np.divide(x, scale)
    np.rint(y, out=y)
    y += zero_point
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8), np.array(scale, np.float32), np.array(zero_point, np.uint8)


def QuantizeLinear(x, y_scale, y_zero_point=None, axis=1, saturate=1, block_size=0,
                   output_dtype=0, precision=0):
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    else:
        dtype = ONNX_TO_NUMPY[output_dtype] if output_dtype else np.dtype(np.uint8)
    scale = _per_axis(y_scale, x.ndim, axis)
    y = np.rint(x / scale)
    if y_zero_point is not None:
        y = y + _per_axis(y_zero_point, x.ndim, axis).astype(y.dtype)
    info = np.iinfo(dtype)
    return np.clip(y, info.min, info.max).astype(dtype)


def DequantizeLinear(x, x_scale, x_zero_point=None, axis=1, block_size=0, output_dtype=0):
    scale = _per_axis(x_scale, x.ndim, axis)
    v = x.astype(np.int32)
    if x_zero_point is not None:
        v = v - _per_axis(x_zero_point, x.ndim, axis).astype(np.int32)
    out_dtype = ONNX_TO_NUMPY[output_dtype] if output_dtype else scale.dtype
    return (v.astype(scale.dtype) * scale).astype(out_dtype)


def _per_axis(v, rank: int, axis: int):
    """A scalar (or 1-element) scale/zero point as is; a 1-D one shaped to broadcast on `axis`."""
    if v.ndim == 0 or v.size == 1 and v.ndim <= 1 and rank == 0:
        return v.reshape(())
    if v.ndim == 1:
        shape = [1] * rank
        shape[axis % rank] = v.shape[0]
        return v.reshape(shape)
    return v


def QLinearMatMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = MatMulInteger(a, b, a_zero_point, b_zero_point)
    return requantize(acc, a_scale, b_scale, y_scale, y_zero_point)


def requantize(acc, a_scale, b_scale, y_scale, y_zero_point):
    """QLinearMatMul's output step, as the reference evaluator does it: the float32 multiplier
    a_scale * b_scale / y_scale applied in float64, rounded half to even, plus the zero point,
    saturated. b_scale may be per column (the last axis)."""
    mult = (a_scale * b_scale / y_scale).astype(np.float32)
    d = acc * mult.astype(np.float64)
    d = np.rint(d + y_zero_point.astype(np.float64))
    info = np.iinfo(y_zero_point.dtype)
    return np.clip(d, info.min, info.max).astype(y_zero_point.dtype)


# ---------------------------------------------------------------------------------------------
# Float matrix products.


def MatMul(A, B):
    return np.matmul(A, B)


def Gemm(A, B, C=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = A.T if transA else A
    b = B.T if transB else B
    y = np.matmul(a, b)
    if alpha != 1.0:
        y = y * A.dtype.type(alpha)
    if C is not None:
        y = y + (C * C.dtype.type(beta) if beta != 1.0 else C)
    return y.astype(A.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Elementwise arithmetic (numpy broadcasting is ONNX's multidirectional broadcasting).


def Add(A, B):
    return _same_type(np.add(A, B), A)


def Sub(A, B):
    return _same_type(np.subtract(A, B), A)


def Mul(A, B):
    return _same_type(np.multiply(A, B), A)


def Div(A, B):
    if np.issubdtype(A.dtype, np.integer):
        # C-style division: truncate toward zero.
        q = np.floor_divide(A, B)
        return _same_type(q + ((np.remainder(A, B) != 0) & ((A < 0) ^ (B < 0))), A)
    return _same_type(np.divide(A, B), A)


def Pow(X, Y):
    if np.issubdtype(X.dtype, np.integer) and np.issubdtype(Y.dtype, np.integer):
        return np.power(X.astype(np.int64), Y.astype(np.int64)).astype(X.dtype)
    return _same_type(np.power(X, Y.astype(X.dtype) if X.dtype.kind == "f" else Y), X)


def _same_type(y, like):
    y = np.asarray(y)
    return y if y.dtype == like.dtype else y.astype(like.dtype)


def Sqrt(X):
    return np.sqrt(X)


def Tanh(input):  # noqa: A002  (ONNX's input name)
    return np.tanh(input)


def Relu(X):
    return np.maximum(X, X.dtype.type(0))


def Sigmoid(X):
    # exp of a non-positive number only: no overflow for either sign.
    e = np.exp(-np.abs(X))
    return np.where(X >= 0, 1 / (1 + e), e / (1 + e)).astype(X.dtype)


def Erf(input, *, _threads=None):  # noqa: A002
    if input.dtype == np.float32:
        return ops.erf(input, threads=_threads)
    return np.vectorize(math.erf, otypes=[np.float64])(input).astype(input.dtype)


def Gelu(X, approximate="none"):
    x = X.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    else:
        y = 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2)))
    return y.astype(X.dtype)


# ---------------------------------------------------------------------------------------------
# Normalizations and reductions.


def Softmax(input, axis=-1):  # noqa: A002
    e = np.exp(input - input.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def LogSoftmax(input, axis=-1):  # noqa: A002
    shifted = input - input.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def Softmax_1(input, axis=1):  # noqa: A002
    """Softmax before opset 13: over all axes from `axis` on, as one flattened axis."""
    flat = input.reshape(_coerce_2d(input.shape, axis))
    return Softmax(flat, axis=1).reshape(input.shape)


def LogSoftmax_1(input, axis=1):  # noqa: A002
    flat = input.reshape(_coerce_2d(input.shape, axis))
    return LogSoftmax(flat, axis=1).reshape(input.shape)


def _coerce_2d(shape, axis):
    axis = axis % len(shape) if shape else 0
    return (math.prod(shape[:axis]), math.prod(shape[axis:]))


def LayerNormalization(X, Scale, B=None, axis=-1, epsilon=1e-5, stash_type=1, *, _outputs=3,
                       _threads=None):
    axis = axis % X.ndim
    if _outputs == 1 and layer_norm_kernel_fits(X, Scale, B, axis):
        return ops.layer_norm(X, Scale, B, epsilon, axis, float32_steps=True, threads=_threads)
    axes = tuple(range(axis, X.ndim))
    mean = X.mean(axis=axes, keepdims=True, dtype=np.float32)
    diff = X - mean
    var = np.mean(diff * diff, axis=axes, keepdims=True, dtype=np.float32)
    inv_std = (1 / np.sqrt(var + np.float32(epsilon))).astype(np.float32)
    y = diff * inv_std * Scale
    if B is not None:
        y = y + B
    return y.astype(X.dtype, copy=False), mean.astype(X.dtype), inv_std.astype(X.dtype)


def layer_norm_kernel_fits(X, Scale, B, axis) -> bool:
    """Whether ops.layer_norm (float32 steps) computes this LayerNormalization: float32, and
    scale and bias of exactly the normalised shape (not merely broadcastable to it)."""
    normalised = X.shape[axis:]
    return (X.dtype == Scale.dtype == np.float32 and Scale.shape == normalised
            and (B is None or B.dtype == np.float32 and B.shape == normalised))


def ReduceMean(data, axes=None, keepdims=1, noop_with_empty_axes=0):
    if axes is not None and len(axes) == 0:
        axes = None
    if axes is None and noop_with_empty_axes:
        return data
    axes = None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))
    return np.mean(data, axis=axes, keepdims=bool(keepdims), dtype=data.dtype).astype(data.dtype)


def ArgMax(data, axis=0, keepdims=1, select_last_index=0):
    if select_last_index:
        flipped = np.flip(data, axis)
        idx = data.shape[axis] - 1 - np.argmax(flipped, axis=axis)
    else:
        idx = np.argmax(data, axis=axis)
    idx = idx.astype(np.int64)
    return np.expand_dims(idx, axis) if keepdims else idx


def TopK(X, K, axis=-1, largest=1, sorted=1):  # noqa: A002
    k = int(np.asarray(K).reshape(-1)[0])
    if not 0 <= k <= X.shape[axis]:
        raise ValueError(f"K: {k} is outside [0, {X.shape[axis]}] for axis {axis}")
    # A stable sort keeps equal values in index order, as ONNX requires.
    keys = X.astype(np.float64) if X.dtype.kind in "iub" else X
    order = np.argsort(-keys if largest else keys, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(X, idx, axis=axis), idx.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Types, shapes and indexing.


def Cast(input, to, saturate=1, round_mode="up"):  # noqa: A002
    # saturate and round_mode concern float8 targets only, which the op table rejects.
    return input.astype(ONNX_TO_NUMPY[to])


def Shape(data, start=0, end=None):
    return np.array(data.shape[start:end], np.int64)


def Reshape(data, shape, allowzero=0):
    # tolist: one call for the whole shape tensor (int() per element took ~2 us of a ~3 us step)
    target = shape.tolist() if isinstance(shape, np.ndarray) else [int(s) for s in shape]
    if not allowzero and 0 in target:
        target = [data.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return data.reshape(target)


def Transpose(data, perm=None):
    return np.transpose(data, perm)


def Unsqueeze(data, axes):
    rank = data.ndim + len(axes)
    out = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
    return np.expand_dims(data, tuple(out))


def Squeeze(data, axes=None):
    if axes is None:
        return np.squeeze(data)
    return np.squeeze(data, tuple(int(a) for a in np.asarray(axes).reshape(-1)))


def Flatten(input, axis=1):  # noqa: A002
    return input.reshape(_coerce_2d(input.shape, axis) if input.ndim else (1, 1))


def Identity(input):  # noqa: A002
    return input


def Concat(*inputs, axis):
    return np.concatenate(inputs, axis=axis)


def Split(input, split=None, axis=0, num_outputs=None, _outputs=1):  # noqa: A002
    size = input.shape[axis]
    if split is None:
        parts = num_outputs if num_outputs is not None else _outputs
        step = -(-size // parts)
        sizes = [min(step, size - i * step) for i in range(parts)]
    else:
        sizes = [int(s) for s in np.asarray(split).reshape(-1)]
        if sum(sizes) != size:
            raise ValueError(f"split: sizes {sizes} do not add up to axis {axis}'s length {size}")
    bounds = np.cumsum([0, *sizes])
    return tuple(np.take(input, np.arange(bounds[i], bounds[i + 1]), axis=axis)
                 for i in range(len(sizes)))


def Slice(data, starts, ends, axes=None, steps=None):
    starts = [int(s) for s in np.asarray(starts).reshape(-1)]
    ends = [int(e) for e in np.asarray(ends).reshape(-1)]
    axes = range(len(starts)) if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise ValueError("steps: a step of 0 is not allowed")
        # Python's slice clamps out-of-range bounds exactly as ONNX specifies.
        index[axis % data.ndim] = slice(start, end, step)
    return data[tuple(index)]


def Gather(data, indices, axis=0):
    axis = axis % data.ndim
    n = data.shape[axis]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise ValueError(f"indices: values must lie in [-{n}, {n - 1}] for axis {axis}")
    return np.take(data, indices.astype(np.int64), axis=axis)


def Expand(input, shape):  # noqa: A002
    target = np.broadcast_shapes(input.shape, tuple(int(s) for s in shape))
    _check_size(math.prod(target), "shape")
    return np.broadcast_to(input, target)


def _check_size(count: int, argument: str) -> None:
    """Ops whose output size comes from data: refuse absurd sizes before allocating."""
    if count > MAX_ELEMENTS:
        raise ValueError(f"{argument}: asks for {count} elements, more than the {MAX_ELEMENTS} "
                         "allowed")


def Where(condition, X, Y):
    return np.where(condition, X, Y)


def Equal(A, B):
    return np.equal(A, B)


def Less(A, B):
    return np.less(A, B)


def Greater(A, B):
    return np.greater(A, B)


def GreaterOrEqual(A, B):
    return np.greater_equal(A, B)


def And(A, B):
    return np.logical_and(A, B)


def Not(X):
    return np.logical_not(X)


def Range(start, limit, delta, stash_type=1):
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise ValueError("delta: must not be 0")
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    _check_size(count, "limit")
    return (start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype)


def ConstantOfShape(input, value=None):  # noqa: A002
    fill = np.zeros(1, np.float32) if value is None else value.reshape(-1)
    if (np.asarray(input) < 0).any():
        raise ValueError("input: negative dimension")
    _check_size(math.prod(int(s) for s in input), "input")
    return np.full(tuple(int(s) for s in input), fill[0], dtype=fill.dtype)


def Constant(value=None, value_float=None, value_floats=None, value_int=None, value_ints=None):
    if value is not None:
        return value
    if value_float is not None:
        return np.array(value_float, np.float32)
    if value_floats is not None:
        return np.array(value_floats, np.float32)
    if value_int is not None:
        return np.array(value_int, np.int64)
    if value_ints is not None:
        return np.array(value_ints, np.int64)
    raise ValueError("Constant: needs one of value, value_float(s), value_int(s)")
