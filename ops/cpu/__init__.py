"""The CPU backend of ops (numba): the functions the ops front end calls on numpy arrays.

Contract of a backend module (this one; ops/wgsl/ for GPU arrays will offer the same names):
    empty(shape, dtype), check_out(out, shape, dtype, argument, inputs)
    logsoftmax(x, axis, out, threads), softmax(x, axis, out, threads)
    softmax_float32_steps(x, out, threads, divide_by)   (last axis; onnx's reference, bit for bit)
    log_softmax_topk(x, k, out_values, out_indices, threads)
    apply_unary(x, op, out, threads), apply_binary(x, y, op, out, threads)
    optional: apply_unary_ranged(x, op, out, threads) -> (out, (min, max, NaN/inf count)), and
              layer_norm(..., with_range=True) likewise (for DynamicQuantizeLinear next);
              gelu_for_quantizing(x, out, threads, scale_of_range) -> (out, range), Gelu
              exact only where DynamicQuantizeLinear with that range's scale can tell;
              gelu_dynamic_quantize(x, q, threads, params_of_range) -> (q, scale, zero_point)
              or None, DynamicQuantizeLinear(Gelu(x)) without the float Gelu
    bias_add(x, bias, residual, act, axis, out, threads)
    layer_norm(x, weight, bias, epsilon, axis, out, threads, residual=None, float32_steps=False)
    quantize_linear(x, scale, zero_point, axis, out, threads) -> NaN count
    dequantize_linear(q, scale, zero_point, axis, out, threads), min_max(x, threads)
    matmul(a, b, out, threads)   (a, b at least 2-D, out shaped (*batch, m, n))
    optional: attention(q, kt, v, divide_by, with_range, threads) -> (out, range or None)
    transpose(x, perm), concat(arrays, axis), slice_axes(x, index), expand(x, shape)
    scalar(value), INDEX_DTYPE (log_softmax_topk's index dtype)
    optional: dynamic_quantize_linear(x, out) when the backend computes the parameters itself
Arguments arrive validated: dtypes and shapes checked, axis normalised, `out` allocated or
checked. One module per job: probabilities.py (logsoftmax, softmax), topk.py, elementwise.py,
norm.py, quantize.py, layout.py (numpy's matmul and data movement), attention_pass.py,
gelu_quantizing.py; the vectorisable maths they share is in mathfuncs.py, the thread policy in
threads.py. (No module is named like a function exported here, so `ops.cpu.<name>` is never
ambiguous.)
"""

import numpy as np

from .arrays import check_out, empty
from .attention_pass import attention
from .elementwise import UNARY_CODES, apply_binary, apply_unary, apply_unary_ranged, bias_add
from .gelu_quantizing import gelu_dynamic_quantize, gelu_for_quantizing
from .layout import concat, expand, matmul, slice_axes, transpose
from .norm import layer_norm
from .probabilities import logsoftmax, softmax, softmax_float32_steps
from .quantize import dequantize_linear, min_max, quantize_linear
from .topk import log_softmax_topk

NAME = "cpu"
INDEX_DTYPE = np.dtype(np.int64)   # log_softmax_topk's indices


def scalar(value: np.ndarray) -> np.ndarray:
    """A number given to add/mul (a 0-d float32 array) as this backend's array."""
    return value

__all__ = [
    "INDEX_DTYPE", "NAME", "UNARY_CODES", "apply_binary", "apply_unary", "apply_unary_ranged",
    "attention", "bias_add", "check_out", "concat", "dequantize_linear", "empty", "expand",
    "gelu_dynamic_quantize", "gelu_for_quantizing", "layer_norm", "log_softmax_topk", "logsoftmax",
    "matmul", "min_max",
    "quantize_linear", "scalar", "slice_axes", "softmax", "softmax_float32_steps", "transpose",
]
