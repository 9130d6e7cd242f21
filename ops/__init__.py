"""Neural-inference kernels beyond GEMM: what a translation decoder needs around gemm_i8.

    import ops
    y = ops.logsoftmax(logits)                      # axis=-1, out=, threads= like numpy/gemm
    values, ids = ops.log_softmax_topk(logits, k=8) # fused: one pass per row (beam search)
    h = ops.bias_add(x, b, activation="relu")       # act(x + b (+ residual)) in one pass
    e = ops.erf(x)                                  # correctly rounded float32 erf
    h = ops.layer_norm(h, gamma, beta, 1e-5)
    q, s, z = ops.dynamic_quantize_linear(h)        # ONNX DynamicQuantizeLinear, bit for bit
    c = ops.matmul(a, b)                            # float32, batched: np.matmul's semantics
    o = ops.attention(q, kt, v, divide_by=8.0)      # softmax(q @ kt / 8) @ v, one pass per head
    t = ops.transpose(x, (0, 2, 1, 3))              # also concat, slice_axes, expand (32-bit types)

Each front end checks its arguments (errors name the argument), then calls the backend that
the input's array type selects (ops.backends): numpy arrays -> ops.cpu (numba), GPU arrays
(dispatch.gpu_array.GpuArray, e.g. gemm_i8's GPU output) -> ops.wgsl, whose results stay on the
GPU. Accuracy bounds and special values are stated in each module's docstring
(probabilities.py, elementwise.py, norm.py, quantize.py, linalg.py, layout.py; ops/wgsl/ for
the GPU's).
"""

from .backends import register_array_type
from .elementwise import (
    add,
    bias_add,
    erf,
    exp,
    gelu,
    gelu_dynamic_quantize_linear,
    mul,
    relu,
    sigmoid,
    tanh,
)
from .layout import concat, expand, slice_axes, transpose
from .linalg import attention, matmul
from .norm import layer_norm
from .probabilities import log_softmax_topk, logsoftmax, replicates_numpy_exp, softmax
from .quantize import (
    ValueRange,
    dequantize_linear,
    dynamic_quantize_linear,
    dynamic_quantize_params,
    quantize_linear,
    value_range,
)

__all__ = [
    "add", "attention", "bias_add", "concat", "dequantize_linear", "dynamic_quantize_linear",
    "dynamic_quantize_params", "erf", "exp",
    "expand", "gelu", "gelu_dynamic_quantize_linear", "layer_norm", "log_softmax_topk",
    "logsoftmax", "matmul", "mul",
    "quantize_linear", "register_array_type", "relu", "replicates_numpy_exp", "sigmoid",
    "slice_axes", "softmax", "tanh", "transpose", "value_range", "ValueRange",
]
