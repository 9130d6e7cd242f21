"""The GEMM shapes of an ONNX model: what `i8gemm tune --model m.onnx --batch 1,8,64` tunes.

Every MatMul, MatMulInteger, QLinearMatMul or Gemm node whose B is a 2-D initializer (a weight:
the case gemm_i8 runs with a PreparedB) gives K and N from B. M comes from A's shape after onnx
shape inference: the product of A's known leading dimensions (all but the last), times the
batch if any of them is symbolic or unknown (all symbolic dimensions together are the batch:
[batch, seq, K] gives M = batch). An A of unknown shape is taken as batch x K.
"""

from __future__ import annotations

import math
from pathlib import Path

# op type -> (index of A, index of B) among the node's inputs
_GEMM_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3),
                "Gemm": (0, 1)}


def model_shapes(path: str | Path, batches: list[int]) -> list[tuple[int, int, int]]:
    """Unique (M, K, N) of the model's weight GEMMs for each batch size, in first-seen order."""
    import onnx

    try:
        model = onnx.load(str(path))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise ValueError(f"--model: cannot load {path} ({exc})") from None
    except Exception as exc:  # a protobuf decode error: not an ONNX file
        raise ValueError(f"--model: {path} is not an ONNX model ({exc})") from None
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:
        pass  # shapes stay unknown: A is then taken as batch x K
    graph = model.graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    shapes_of = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes_of[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in vi.type.tensor_type.shape.dim]

    found: list[tuple[int, int, int]] = []
    for node in graph.node:
        if node.op_type not in _GEMM_INPUTS:
            continue
        ia, ib = _GEMM_INPUTS[node.op_type]
        if len(node.input) <= ib or len(weights.get(node.input[ib], ())) != 2:
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        k, n = weights[node.input[ib]]
        if attrs.get("transB", 0):
            k, n = n, k
        a_dims = shapes_of.get(node.input[ia])
        for batch in batches:
            if a_dims is None or len(a_dims) < 2:
                m = batch
            elif node.op_type == "Gemm" and attrs.get("transA", 0):
                m = a_dims[1] or batch
            else:
                leading = a_dims[:-1]
                m = math.prod(d for d in leading if d)
                if any(not d for d in leading):
                    m *= batch
            shape = (int(m), int(k), int(n))
            if shape not in found:
                found.append(shape)
    if not found:
        raise ValueError(f"--model: {path} has no MatMul/MatMulInteger/QLinearMatMul/Gemm node "
                         "with a 2-D weight initializer as B")
    return found
