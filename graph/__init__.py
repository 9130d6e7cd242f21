"""ONNX graph layer: run whole (quantized) ONNX models on the gemm/ops kernels.

    import graph
    sess = graph.Session("model.onnx")                 # backend="cpu"
    outputs = sess.run(None, {"input": x})             # onnxruntime-style
    pb = sess.prepared_weight("output_projection")     # direct kernel access (gemm.PreparedB)

Modules: session (load, plan, run loop), registry (the op table), onnx_ops (one function per
ONNX op), fusion (the quantized GEMM chains onnxruntime emits, fused into single gemm_i8 calls),
tensors (checked reading of initializers and external data), backend (onnx.backend API),
run (the `i8gemm run` command). `graph.cli` is the `i8gemm` command, which only routes.
"""

from .session import NodeArg, NodeError, Session

__all__ = ["NodeArg", "NodeError", "Session"]
