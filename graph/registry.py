"""The op table: which ONNX ops (and which of their versions) the graph layer runs, and how.

One explicit list, OPS. An entry names the op type, the range of the op's ONNX versions (the
`since_version` of its schemas) that its function implements, the function, and what the plan
needs to know about it:
  - gpu:   the GPU kernel the op will run on with backend="gpu" (None: it has none, so on the GPU
           path it costs a transfer to the host and back);
  - shape: a shape-only op, computed on the host from known shapes whatever the backend;
  - check: validates attribute values at load (errors name the node).
`lookup(op_type, opset)` finds the entry for a model's opset, or explains why there is none.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import onnx.defs

from . import onnx_ops as o
from .tensors import ONNX_TO_NUMPY, type_name


@dataclasses.dataclass(frozen=True)
class OpEntry:
    op_type: str
    versions: tuple[int, int]    # lowest and highest ONNX op version (schema since_version) implemented
    fn: Callable
    gpu: str | None = None
    shape: bool = False
    check: Callable[[dict], None] | None = None
    pass_output_count: bool = False   # fn takes _outputs=len(node.output) (Split, LayerNormalization)

    @property
    def attributes(self) -> set[str]:
        """Names the function accepts as attributes (a name that is an input in one ONNX version
        and an attribute in another, like Unsqueeze's axes, is both)."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name for p in params if p.kind != p.VAR_POSITIONAL and not p.name.startswith("_")}


def _check_cast(attrs):
    if attrs.get("to") not in ONNX_TO_NUMPY:
        raise ValueError(f"attribute to={type_name(attrs.get('to', 0))} is not a supported type")


def _check_quantize(attrs):
    if attrs.get("block_size", 0):
        raise ValueError("attribute block_size: blocked quantization is not supported")
    for key in ("output_dtype", "precision"):
        if attrs.get(key, 0) and attrs[key] not in ONNX_TO_NUMPY:
            raise ValueError(f"attribute {key}={type_name(attrs[key])} is not supported")


def _check_gelu(attrs):
    if attrs.get("approximate", "none") not in ("none", "tanh"):
        raise ValueError(f"attribute approximate={attrs['approximate']!r}: expected 'none' or 'tanh'")


def _check_layer_norm(attrs):
    if attrs.get("stash_type", 1) != 1:
        raise ValueError("attribute stash_type: only 1 (float32) is supported")


def _check_constant(attrs):
    if len(attrs) != 1:
        raise ValueError("expects exactly one of value, value_float(s), value_int(s)")


E = OpEntry
OPS: tuple[OpEntry, ...] = (
    # integer GEMMs and quantization
    E("MatMulInteger", (10, 10), o.MatMulInteger, gpu="gemm.gemm_i8"),
    E("QLinearMatMul", (10, 21), o.QLinearMatMul, gpu="gemm.gemm_i8"),
    E("DynamicQuantizeLinear", (11, 11), o.DynamicQuantizeLinear, gpu="ops.dynamic_quantize_linear"),
    E("QuantizeLinear", (10, 28), o.QuantizeLinear, gpu="ops.quantize_linear", check=_check_quantize),
    E("DequantizeLinear", (10, 28), o.DequantizeLinear, gpu="ops.dequantize_linear",
      check=_check_quantize),
    # float GEMMs
    E("MatMul", (1, 13), o.MatMul),
    E("Gemm", (7, 13), o.Gemm),
    # elementwise
    E("Add", (7, 14), o.Add, gpu="ops.add"),
    E("Sub", (7, 14), o.Sub),
    E("Mul", (7, 14), o.Mul, gpu="ops.mul"),
    E("Div", (7, 14), o.Div),
    E("Pow", (7, 15), o.Pow),
    E("Sqrt", (6, 13), o.Sqrt),
    E("Erf", (9, 13), o.Erf),
    E("Tanh", (6, 13), o.Tanh, gpu="ops.tanh"),
    E("Relu", (6, 14), o.Relu, gpu="ops.relu"),
    E("Sigmoid", (6, 13), o.Sigmoid, gpu="ops.sigmoid"),
    E("Gelu", (20, 20), o.Gelu, gpu="ops.gelu", check=_check_gelu),
    # normalizations and reductions
    E("Softmax", (13, 13), o.Softmax, gpu="ops.softmax"),
    E("Softmax", (1, 11), o.Softmax_1),
    E("LogSoftmax", (13, 13), o.LogSoftmax, gpu="ops.logsoftmax"),
    E("LogSoftmax", (1, 11), o.LogSoftmax_1),
    E("LayerNormalization", (17, 17), o.LayerNormalization, gpu="ops.layer_norm",
      check=_check_layer_norm, pass_output_count=True),
    E("ReduceMean", (1, 18), o.ReduceMean),
    E("ArgMax", (1, 13), o.ArgMax),
    E("TopK", (1, 24), o.TopK),
    # types, shapes, indexing
    E("Cast", (6, 28), o.Cast, check=_check_cast),
    E("Shape", (1, 25), o.Shape, shape=True),
    E("Reshape", (5, 25), o.Reshape, shape=True),
    E("Unsqueeze", (1, 25), o.Unsqueeze, shape=True),
    E("Squeeze", (1, 25), o.Squeeze, shape=True),
    E("Flatten", (1, 25), o.Flatten, shape=True),
    E("Identity", (1, 25), o.Identity, shape=True),
    E("Transpose", (1, 25), o.Transpose),
    E("Concat", (4, 13), o.Concat),
    E("Split", (2, 18), o.Split, pass_output_count=True),
    E("Slice", (1, 13), o.Slice),
    E("Gather", (1, 13), o.Gather),
    E("Expand", (8, 13), o.Expand),
    E("Where", (9, 16), o.Where),
    E("Equal", (7, 19), o.Equal),
    E("Less", (7, 13), o.Less),
    E("Greater", (7, 13), o.Greater),
    E("GreaterOrEqual", (12, 16), o.GreaterOrEqual),
    E("And", (7, 7), o.And),
    E("Not", (1, 1), o.Not),
    E("Range", (11, 27), o.Range),
    E("ConstantOfShape", (9, 25), o.ConstantOfShape),
    E("Constant", (9, 25), o.Constant, check=_check_constant),
)

_BY_TYPE: dict[str, list[OpEntry]] = {}
for _entry in OPS:
    _BY_TYPE.setdefault(_entry.op_type, []).append(_entry)


def op_version(op_type: str, opset: int, domain: str = "") -> int | None:
    """The since_version of the op's schema in effect at `opset`, or None if ONNX has none."""
    try:
        return onnx.defs.get_schema(op_type, opset, domain).since_version
    except onnx.defs.SchemaError:
        return None


def lookup(op_type: str, opset: int, domain: str = "") -> tuple[OpEntry | None, str]:
    """(entry, "") for a supported op at this opset, else (None, why not)."""
    if domain not in ("", "ai.onnx"):
        return None, f"domain {domain!r} is not supported (only the default ONNX domain)"
    entries = _BY_TYPE.get(op_type)
    if not entries:
        return None, "not in the op table"
    version = op_version(op_type, opset)
    if version is None:
        return None, f"ONNX has no {op_type} at opset {opset}"
    for entry in entries:
        if entry.versions[0] <= version <= entry.versions[1]:
            return entry, ""
    spans = ", ".join(f"{lo}-{hi}" for lo, hi in (e.versions for e in entries))
    return None, f"version {version} (opset {opset}) is not supported (supported versions: {spans})"


def supported_op_types() -> list[str]:
    return sorted(_BY_TYPE)
