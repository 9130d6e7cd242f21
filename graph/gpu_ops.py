"""The ONNX ops and fused steps that have a GPU form: the same contract as graph/onnx_ops.py,
with the data inputs and outputs as GpuArrays (dispatch.gpu_array) and parameters that must be
read on the host (Reshape's shape, Slice's bounds, ...) as numpy arrays.

`gpu_form(step, dtype_of, constant)` returns the GPU callable for a planned step, or None when
the step has no GPU form for its element types (it then runs on the host: graph/gpu_plan.py
moves its inputs there and back, visibly). A callable with a `load()` method holds constants of
its own (a fused GEMM's weight, scales, bias): the Session calls load() once, at construction,
to put them in GPU memory.

Numerics: the integer GEMM parts are exact (gemm_i8 on the GPU is bit-identical to the CPU);
the float ops follow the ops.wgsl accuracy bounds (README "ops on the GPU"), not the CPU plan's
bit-for-bit float32_steps, so a GPU run differs from the CPU run by float rounding -- and where
a rounding difference moves a value across a DynamicQuantizeLinear step, by one quantization
step of that activation. Div by a constant c runs as a multiplication by float32(1 / c), exact
when c is a power of two (attention's sqrt(head_dim) for head_dim 4, 16, 64, 256) and within one
rounding otherwise.
"""

from __future__ import annotations

import math

import numpy as np

import gemm
import ops
from dispatch.gpu_array import GpuArray

from . import fusion, onnx_ops

FLOAT32 = np.dtype(np.float32)
# Element types the data-movement kernels (ops.transpose, ...) take.
WORD_TYPES = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.uint32))

# Inputs read on the host whatever the backend (shapes, axes, bounds), by op type.
HOST_INPUTS = {"Reshape": {1}, "Unsqueeze": {1}, "Squeeze": {1}, "Slice": {1, 2, 3, 4},
               "Expand": {1}, "MatMulInteger": {2}, "LayerNormalization": {1, 2}}


# -- views and shape-only ops -------------------------------------------------------------------


def _as_view(cpu_fn):
    """A shape-only op on a GpuArray: the CPU op run on a stand-in of the same shape (no data)
    gives the output shape; the result is a view of the same buffer."""
    def run(data, *params, **attrs):
        stand_in = np.broadcast_to(np.zeros((), np.uint8), data.shape)
        return data.reshape(cpu_fn(stand_in, *params, **attrs).shape)
    run.__name__ = cpu_fn.__name__
    return run


def Identity(input):  # noqa: A002
    return input


# -- elementwise ----------------------------------------------------------------------------------


def _broadcast(a, b):
    """a and b as ops.add/ops.mul take them: one holds the result's values, the other ends its
    shape (a scalar, a bias, a same-shaped array); any other numpy broadcast is first expanded
    on the GPU."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    size = math.prod(shape)

    def ends(small):
        tail = tuple(small.shape)
        while tail and tail[0] == 1:
            tail = tail[1:]
        return tail == shape[len(shape) - len(tail):]

    if (a.size == size and a.shape == shape and ends(b)) or \
            (b.size == size and b.shape == shape and ends(a)):
        return a, b
    a = a if a.shape == shape else ops.expand(a, shape)
    b = b if b.shape == shape else ops.expand(b, shape)
    return a, b


def Add(A, B):
    return ops.add(*_broadcast(A, B))


def Mul(A, B):
    return ops.mul(*_broadcast(A, B))


def Sub(A, B):
    # a - b = a + (-b) exactly (negation is exact in IEEE arithmetic).
    return ops.add(*_broadcast(A, ops.mul(B, -1.0)))


class DivByConstant:
    """Div(x, c) for a constant float32 scalar c: x * float32(1 / c) (see the module doc)."""

    def __init__(self, c):
        self.inverse = float(np.float32(1) / np.float32(c))

    def __call__(self, A, B=None):
        return ops.mul(A, self.inverse)


def Relu(X):
    return ops.relu(X)


def Tanh(input):  # noqa: A002
    return ops.tanh(input)


def Sigmoid(X):
    return ops.sigmoid(X)


def Gelu(X, approximate="none"):
    return ops.gelu(X, approximate)


def Cast(input, to, saturate=1, round_mode="up"):  # noqa: A002
    return input   # only float32 -> float32 has a GPU form


# -- normalisations ------------------------------------------------------------------------------


def Softmax(input, axis=-1):  # noqa: A002
    return ops.softmax(input, axis)


def LogSoftmax(input, axis=-1):  # noqa: A002
    return ops.logsoftmax(input, axis)


class LayerNorm:
    """LayerNormalization (one output) with constant scale and bias of the normalised shape;
    with `residual`, the fused Add(a, b) -> LayerNormalization."""

    def __init__(self, scale, bias, axis, epsilon, residual: bool):
        self.host = (scale, bias)
        self.axis, self.epsilon, self.residual = axis, float(epsilon), residual
        self.scale = self.bias = None

    def load(self):
        scale, bias = self.host
        self.scale = GpuArray.from_numpy(np.ascontiguousarray(scale, np.float32))
        self.bias = None if bias is None else GpuArray.from_numpy(np.ascontiguousarray(bias, np.float32))

    def __call__(self, X, *rest, **_):
        residual = None
        if self.residual:
            residual = rest[0]
            if residual.shape != X.shape:
                X, residual = ops.add(*_broadcast(X, residual)), None
        return ops.layer_norm(X, self.scale, self.bias, self.epsilon, self.axis, residual=residual)


def fits_layer_norm(scale, bias, axis: int, shape) -> bool:
    """ops.layer_norm's form: scale (and bias) of exactly the normalised dims, known at load."""
    if shape is None or not isinstance(axis, int):
        return False
    axis = axis % len(shape) if shape else 0
    normalised = tuple(shape[axis:])
    return (all(isinstance(d, int) for d in normalised) and scale.dtype == FLOAT32
            and scale.shape == normalised
            and (bias is None or bias.dtype == FLOAT32 and bias.shape == normalised))


class ScaledSoftmax:
    """Softmax(Div(x, c)), c a constant scalar: ops.softmax(x * float32(1 / c))."""

    def __init__(self, divisor, axis):
        self.inverse = float(np.float32(1) / np.float32(divisor))
        self.axis = axis

    def __call__(self, x):
        return ops.softmax(ops.mul(x, self.inverse), self.axis)


def GeluErf(x):
    """torch's exported Gelu chain (Div, Erf, Add, Mul, Mul) as one ops.gelu (erf form)."""
    return ops.gelu(x)


# -- matrix products and quantization -------------------------------------------------------------


def MatMul(A, B):
    return ops.matmul(A, B)


def DynamicQuantizeLinear(x, **_):
    return ops.dynamic_quantize_linear(x)


def _gpu_zero_points(zb):
    if isinstance(zb, (int, np.integer)):
        if zb == 0:
            return 0
        return int(zb)
    return GpuArray.from_numpy(np.ascontiguousarray(zb, np.int32))


class DynamicQuantMatMul:
    """The fused quantize_dynamic GEMM on the GPU (see graph/fusion.py for the chain): the
    model's Mul(x_scale, W_scale) with ops.mul, then one gemm_i8 over the uint8 activations
    with DynamicQuantizeLinear's zero point as it lies in GPU memory, out_scale and bias in the
    epilogue: float32(exact int32 product) * scale_j + bias_j, as on the CPU."""

    def __init__(self, cpu: fusion.DynamicQuantMatMul):
        self.cpu = cpu
        self.k, self.n = cpu.k, cpu.n

    def load(self):
        cpu = self.cpu
        self.weight = cpu.prepared.to_gpu()
        self.w_scale = GpuArray.from_numpy(np.ascontiguousarray(cpu.w_scale, np.float32))
        self.b_zero_point = _gpu_zero_points(cpu.b_zero_point)
        self.bias = None if cpu.bias is None else GpuArray.from_numpy(
            np.ascontiguousarray(cpu.bias, np.float32))

    def __call__(self, xq, x_scale, x_zero_point):
        scale = ops.mul(x_scale, self.w_scale)
        out = gemm.gemm_i8(xq.reshape(-1, self.k), self.weight, a_zero_point=x_zero_point,
                           b_zero_point=self.b_zero_point, out_scale=scale, bias=self.bias)
        return out.reshape(*xq.shape[:-1], self.n)


class MatMulInteger:
    """MatMulInteger with its weight prepared at load: one exact int32 gemm_i8; A's zero point
    from the GPU (DynamicQuantizeLinear's) or a host constant."""

    def __init__(self, prepared, b_zero_point, k, n):
        self.host = (prepared, b_zero_point)
        self.k, self.n = k, n

    def load(self):
        prepared, zb = self.host
        self.weight = prepared.to_gpu()
        self.b_zero_point = _gpu_zero_points(zb)

    def __call__(self, A, B=None, a_zero_point=None, b_zero_point=None):
        za = a_zero_point
        if isinstance(za, np.ndarray):
            za = int(za.reshape(-1)[0])
        out = gemm.gemm_i8(A.reshape(-1, self.k), self.weight, a_zero_point=0 if za is None else za,
                           b_zero_point=self.b_zero_point)
        return out.reshape(*A.shape[:-1], self.n)


# -- data movement --------------------------------------------------------------------------------


def Transpose(data, perm=None):
    return ops.transpose(data, perm)


def Concat(*inputs, axis):
    return ops.concat(inputs, axis)


def Slice(data, starts, ends, axes=None, steps=None):
    def ints(v):
        return None if v is None else [int(s) for s in np.asarray(v).reshape(-1)]
    return ops.slice_axes(data, ints(starts), ints(ends), ints(axes), ints(steps))


def Expand(input, shape):  # noqa: A002
    return ops.expand(input, [int(s) for s in np.asarray(shape).reshape(-1)])


# -- which steps have a GPU form ------------------------------------------------------------------

_FLOAT_OPS = {"Add": Add, "Mul": Mul, "Sub": Sub, "Relu": Relu, "Tanh": Tanh,
              "Sigmoid": Sigmoid, "Gelu": Gelu, "MatMul": MatMul}
_MOVE_OPS = {"Transpose": Transpose, "Concat": Concat, "Slice": Slice, "Expand": Expand}
_VIEW_OPS = {"Reshape": onnx_ops.Reshape, "Unsqueeze": onnx_ops.Unsqueeze,
             "Squeeze": onnx_ops.Squeeze, "Flatten": onnx_ops.Flatten}


def gpu_form(step, dtype_of, constant, shape_of):
    """(callable, kernel description) for running `step` on GPU arrays, or None.

    dtype_of(name): the tensor's numpy dtype (None if unknown); constant(name): its value if it
    is a constant, else None; shape_of(name): its inferred shape (ints, names or None)."""
    data = [n for j, n in enumerate(step.inputs) if n and j not in HOST_INPUTS.get(step.op_type, ())]
    types = {dtype_of(n) for n in data}
    all_float = types == {FLOAT32}
    kind = step.op_type
    if kind == "DynamicQuantMatMul":
        return DynamicQuantMatMul(step.fn), "ops.mul (scales) + gemm.gemm_i8 gpu:wgsl, out_scale, bias"
    if kind == "Gelu(Erf)" and all_float:
        return GeluErf, "ops.gelu (erf form), one pass"
    if kind == "Div+Softmax" and all_float:
        return ScaledSoftmax(step.fn.divisor, step.fn.axis), "ops.mul by 1/c + ops.softmax"
    if kind == "Add+LayerNormalization" and all_float:
        f = step.fn
        if fits_layer_norm(f.scale, f.bias, f.axis, shape_of(step.outputs[0])):
            return (LayerNorm(f.scale, f.bias, f.axis, f.epsilon, residual=True),
                    "ops.layer_norm(residual=), one pass")
        return None
    if kind == "LayerNormalization" and all_float and len(step.outputs) == 1:
        scale = constant(step.inputs[1])
        bias = constant(step.inputs[2]) if len(step.inputs) > 2 and step.inputs[2] else None
        axis, eps = step.attrs.get("axis", -1), step.attrs.get("epsilon", 1e-5)
        if scale is not None and (bias is not None or len(step.inputs) < 3 or not step.inputs[2]) \
                and fits_layer_norm(scale, bias, axis, shape_of(step.inputs[0])):
            return LayerNorm(scale, bias, axis, eps, residual=False), "ops.layer_norm"
        return None
    if kind == "DynamicQuantizeLinear" and all_float:
        return DynamicQuantizeLinear, "ops.dynamic_quantize_linear (scale, zero point on the GPU)"
    if kind == "MatMulInteger" and hasattr(step.fn, "prepared") and \
            dtype_of(step.inputs[0]) in (np.dtype(np.uint8), np.dtype(np.int8)):
        f = step.fn
        return MatMulInteger(f.prepared, f.b_zero_point, f.k, f.n), "gemm.gemm_i8 gpu:wgsl, int32"
    if kind == "Softmax" and all_float and step.gpu:   # opset 13 on (Softmax_1 has no gpu entry)
        return Softmax, "ops.softmax"
    if kind == "LogSoftmax" and all_float and step.gpu:
        return LogSoftmax, "ops.logsoftmax"
    if kind == "Div" and all_float:
        c = constant(step.inputs[1])
        if c is not None and c.size == 1 and c.ndim <= 1 and c.dtype == FLOAT32 and \
                constant(step.inputs[0]) is None:
            return DivByConstant(c.reshape(())), "ops.mul by float32(1/c)"
        return None
    if kind == "Cast" and all_float and step.attrs.get("to") == 1:
        return Cast, "none (float32 to float32)"
    if kind in _FLOAT_OPS and all_float:
        return _FLOAT_OPS[kind], f"ops.{_FLOAT_OPS[kind].__name__.lower()}"
    if kind in _MOVE_OPS and len(types) == 1 and types <= set(WORD_TYPES):
        return _MOVE_OPS[kind], f"ops.{'slice_axes' if kind == 'Slice' else kind.lower()} (strided copy)"
    return None


def view_form(step):
    """The GPU form of a shape-only step: a view (Reshape, Unsqueeze, Squeeze, Flatten) or the
    array itself (Identity); Shape reads only the shape."""
    if step.op_type == "Identity":
        return Identity
    if step.op_type in _VIEW_OPS:
        return _as_view(_VIEW_OPS[step.op_type])
    return step.fn   # Shape: the CPU function reads .shape, which a GpuArray has
