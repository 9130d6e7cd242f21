"""ONNX graph layer (not yet implemented beyond the command-line entry point).

To come (see the graph issue): `graph.Session(model, backend=...)` running quantized ONNX models
on the gemm/ops kernels, with direct access to prepared weights, and `graph.backend` for onnx's
backend test suite. `graph.cli` is the `i8gemm` command, which only routes to each layer.
"""
