"""The GPU backend of ops (WGSL through wgpu-py): the functions the ops front ends call when the
inputs are GpuArrays. ops.backends routes dispatch.gpu_array.GpuArray here, so

    y = ops.logsoftmax(gpu_logits)          # GpuArray in, GpuArray out, no host transfer

The contract is ops.cpu's (see ops/cpu/__init__.py), with these differences: `threads` is
ignored; top-k indices are int32 (INDEX_DTYPE; GPU arrays have no int64) and k <= 128;
dynamic_quantize_linear returns its scale and zero point as 0-d GpuArrays, computed on the GPU;
NaN is not reported by the quantize ops (see quantize.py). Numerics: each module's docstring and
ops/wgsl/common.wgsl; the bounds are in the README and tests/test_ops_gpu.py.
One module per job: probabilities.py (logsoftmax, softmax, top-k), elementwise.py, norm.py,
quantize.py, matmul.py (float32 batched matmul), layout.py (transpose, concat, slice, expand);
programs.py holds what every kernel call shares.
"""

from .elementwise import UNARY_CODES, apply_binary, apply_unary, bias_add
from .layout import concat, expand, slice_axes, transpose
from .matmul import matmul
from .norm import layer_norm
from .probabilities import (
    INDEX_DTYPE,
    TOPK_MAX,
    log_softmax_topk,
    logsoftmax,
    softmax,
    softmax_float32_steps,
)
from .programs import check_out, empty
from .quantize import dequantize_linear, dynamic_quantize_linear, quantize_linear

NAME = "wgsl"

__all__ = [
    "INDEX_DTYPE", "NAME", "TOPK_MAX", "UNARY_CODES", "apply_binary", "apply_unary", "bias_add",
    "check_out", "concat", "dequantize_linear", "dynamic_quantize_linear", "empty", "expand",
    "layer_norm", "log_softmax_topk", "logsoftmax", "matmul", "quantize_linear", "scalar",
    "slice_axes", "softmax", "softmax_float32_steps", "transpose",
]


def scalar(value):
    """A 0-d float32 numpy array (a number given to add/mul) as a GpuArray on a constant
    buffer."""
    import numpy as np

    from dispatch.gpu_array import GpuArray

    from .programs import constant_array
    return GpuArray((), np.float32, buffer=constant_array(np.asarray(value, np.float32).reshape(1)))
