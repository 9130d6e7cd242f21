"""Neural-inference kernels beyond GEMM (not yet implemented).

To come (see the ops issue): logsoftmax, softmax, log_softmax_topk, bias_add, relu, gelu, tanh,
sigmoid, exp, layer_norm, quantize_linear / dequantize_linear / dynamic_quantize_linear, each with
a numba CPU path and a WGSL GPU path, registered with `dispatch` like the GEMM kernels.
"""
