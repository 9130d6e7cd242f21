"""Finding the quantized GEMM patterns onnxruntime's quantizers emit, and the fused kernels
that replace them.

quantize_dynamic (per tensor or per channel) emits, for each MatMul x @ W + b:

    xq, xs, xz = DynamicQuantizeLinear(x)           (shared by every MatMul reading x)
    s = Mul(xs, W_scale)                            (W_scale: a scalar or N per-column values)
    y = Mul(Cast(MatMulInteger(xq, Wq, xz, W_zero_point), to=FLOAT), s)
    z = Add(y, b)

(older versions: Mul(Mul(Cast(...), xs), W_scale)). `find_dynamic_groups` matches that chain
from MatMulInteger to the last Mul/Add, and `DynamicQuantMatMul` runs it as one gemm_i8 call
over the uint8 xq with its zero point, the scale product as the per-column output scale and the
bias in the same pass: float32(int32 acc) * s + b, as the unfused chain computes it. The
DynamicQuantizeLinear stays a node of its own, since several GEMMs share it; on the CPU, when
only such GEMMs read xq, it computes just the scale and zero point (DynamicQuantizeParams) and
each GEMM quantizes x into the same uint8 values as it packs it (Session._quantize_inside_gemms).

quantize_static in the QOperator format emits QuantizeLinear -> QLinearMatMul -> DequantizeLinear;
`find_qlinear_groups` matches QLinearMatMul with its DequantizeLinear, which `QLinearMatMulDequant`
runs as one exact int32 gemm_i8 call, then ONNX's requantization and dequantization.

A chain is fused only if every tensor inside it has exactly one reader and is not a graph output
(so nothing else could observe the tensors fusion removes), and the weights, scales, zero points
and bias are constants of the shapes the kernels accept.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from onnx import TensorProto

import gemm
import ops

from . import parallel
from .float_softmax import FloatSoftmax
from .onnx_ops import Add, LayerNormalization, int8_weights, layer_norm_kernel_fits, requantize


@dataclasses.dataclass
class Group:
    """A chain of nodes replaced by one kernel call."""
    kind: str                      # "DynamicQuantMatMul", "QLinearMatMulDequant", "Gelu(Erf)", ...
    nodes: list                    # the NodeProtos it replaces, in graph order
    inputs: list[str]              # runtime inputs of the fused call
    output: str                    # the tensor it produces (the chain's last output)
    weight: str                    # the initializer name of the quantized weight
    fn: object = None              # the fused callable (set by build)

    @property
    def anchor(self) -> str:
        """The name the fused step goes by: its GEMM node's, else its first node's."""
        gemm_node = next((n for n in self.nodes if n.op_type in ("MatMulInteger", "QLinearMatMul")),
                         self.nodes[0])
        return gemm_node.name or self.output


class GraphIndex:
    """Who produces and who reads each tensor."""

    def __init__(self, nodes, constants: dict, graph_outputs: set[str]):
        self.constants = constants
        self.graph_outputs = graph_outputs
        self.producer = {}
        self.readers: dict[str, list] = {}
        for node in nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)

    def sole_reader(self, tensor: str, op_type: str):
        """The one node reading `tensor`, if it has that op type and the tensor is internal."""
        readers = self.readers.get(tensor, [])
        if len(readers) != 1 or tensor in self.graph_outputs or readers[0].op_type != op_type:
            return None
        return readers[0]

    def const(self, name: str):
        return self.constants.get(name) if name else None


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a
    return default


def _scale_ok(v, n: int) -> bool:
    return v is not None and v.dtype == np.float32 and (v.size == 1 and v.ndim <= 1 or v.shape == (n,))


def _zero_point_ok(v, n: int) -> bool:
    return v is None or v.dtype.kind in "iu" and (v.size == 1 and v.ndim <= 1 or v.shape == (n,))


def find_dynamic_groups(nodes, index: GraphIndex) -> list[Group]:
    groups = []
    for m in nodes:
        if m.op_type != "MatMulInteger":
            continue
        w = index.const(_input(m, 1))
        if w is None or w.ndim != 2 or w.dtype not in (np.int8, np.uint8):
            continue
        n = w.shape[1]
        if not _zero_point_ok(index.const(_input(m, 3)), n) or \
                (_input(m, 3) and index.const(_input(m, 3)) is None):
            continue
        dql = index.producer.get(_input(m, 0))
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or dql.output[0] != m.input[0]:
            continue
        if _input(m, 2) not in ("", dql.output[2]):
            continue
        cast = index.sole_reader(m.output[0], "Cast")
        if cast is None or _attr(cast, "to") != TensorProto.FLOAT:
            continue
        mul = index.sole_reader(cast.output[0], "Mul")
        if mul is None:
            continue
        other = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        chain = [m, cast, mul]
        scale_node = index.producer.get(other)
        if other == dql.output[1]:
            # Older form: the activation scale first, then the weight scale.
            mul2 = index.sole_reader(mul.output[0], "Mul")
            w_scale_name = mul2 and next((i for i in mul2.input if i != mul.output[0]), "")
            if mul2 is None or not _scale_ok(index.const(w_scale_name), n):
                continue
            chain.append(mul2)
        elif scale_node is not None and scale_node.op_type == "Mul" and \
                dql.output[1] in scale_node.input:
            w_scale_name = next((i for i in scale_node.input if i != dql.output[1]), "")
            if not _scale_ok(index.const(w_scale_name), n):
                continue
            if index.sole_reader(other, "Mul") is mul:
                chain.insert(0, scale_node)   # its product is computed inside the fused call
        else:
            continue
        last = chain[-1].output[0]
        add = index.sole_reader(last, "Add")
        bias_name = ""
        if add is not None:
            bias_name = next((i for i in add.input if i != last), "")
            bias = index.const(bias_name)
            if bias is not None and bias.dtype == np.float32 and bias.shape == (n,):
                chain.append(add)
            else:
                bias_name = ""
        group = Group("DynamicQuantMatMul", chain, [dql.output[0], dql.output[1], dql.output[2]],
                      chain[-1].output[0], m.input[1])
        group.fn = DynamicQuantMatMul(w, index.const(_input(m, 3)), index.const(w_scale_name),
                                      index.const(bias_name) if bias_name else None)
        groups.append(group)
    return groups


class DynamicQuantizeParams:
    """DynamicQuantizeLinear's scale and zero point alone, for GEMMs that quantize x themselves;
    from x, or (with `of_range`) from the ops.ValueRange that the step writing x reported."""

    def __init__(self, of_range: bool = False):
        self.threads = None
        self.of_range = of_range

    def __call__(self, x):
        if self.of_range:
            scale, zero_point = ops.dynamic_quantize_params(value_range=x)
        else:
            scale, zero_point = ops.dynamic_quantize_params(
                x, threads=parallel.resolve(self.threads))
        return np.array(scale, np.float32), np.array(zero_point, np.uint8)


def find_qlinear_groups(nodes, index: GraphIndex) -> list[Group]:
    groups = []
    for q in nodes:
        if q.op_type != "QLinearMatMul":
            continue
        w = index.const(q.input[3])
        if w is None or w.ndim != 2 or w.dtype not in (np.int8, np.uint8):
            continue
        n = w.shape[1]
        consts = [index.const(q.input[i]) for i in (4, 5, 6, 7)]
        if any(c is None for c in consts) or not _scale_ok(consts[0], n) or \
                not _zero_point_ok(consts[1], n) or consts[2].size != 1 or consts[3].size != 1:
            continue
        dq = index.sole_reader(q.output[0], "DequantizeLinear")
        if dq is None or len(dq.input) < 3 or dq.input[1] != q.input[6] or dq.input[2] != q.input[7]:
            continue
        group = Group("QLinearMatMulDequant", [q, dq], [q.input[0], q.input[1], q.input[2]],
                      dq.output[0], q.input[3])
        group.fn = QLinearMatMulDequant(w, consts[0], consts[1], consts[2], consts[3])
        groups.append(group)
    return groups


def _scalar(index: GraphIndex, name: str):
    v = index.const(name)
    return float(v.reshape(())) if v is not None and v.size == 1 and v.dtype == np.float32 else None


_SQRT2_F32 = float(np.float32(math.sqrt(2.0)))


def find_gelu_groups(nodes, index: GraphIndex, float32_tensors: set[str]) -> list[Group]:
    """Gelu as torch exports it before opset 20: Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5),
    with exactly those constants (as float32), which ops.gelu(float32_steps=True) computes bit
    for bit. Any other constants (or Mul(x, 1/sqrt 2) for the Div) stay separate nodes."""
    groups = []
    for d in nodes:
        if d.op_type != "Div" or len(d.input) != 2:
            continue
        x, c = d.input
        if _scalar(index, c) != _SQRT2_F32 or x not in float32_tensors or \
                index.const(x) is not None:
            continue
        erf = index.sole_reader(d.output[0], "Erf")
        add = erf and index.sole_reader(erf.output[0], "Add")
        if add is None:
            continue
        one = _scalar(index, next((i for i in add.input if i != erf.output[0]), ""))
        mul = index.sole_reader(add.output[0], "Mul")
        if one != 1.0 or mul is None or set(mul.input) != {x, add.output[0]}:
            continue
        half_mul = index.sole_reader(mul.output[0], "Mul")
        half = half_mul and _scalar(index, next((i for i in half_mul.input if i != mul.output[0]), ""))
        if half != 0.5:
            continue
        group = Group("Gelu(Erf)", [d, erf, add, mul, half_mul], [x], half_mul.output[0], "")
        group.fn = GeluSteps()
        groups.append(group)
    return groups


class GeluSteps:
    """The five Gelu nodes in one pass: ops.gelu(x, float32_steps=True) on the session's threads
    (ops' own blocks taken from a shared counter: for (2048, 1024) at 2 threads 1.53 ms, median,
    against 1.77 for chunks handed out from Python)."""

    def __init__(self):
        self.threads = None

    def __call__(self, x, with_range=False):
        """with_range: also the output's ops.ValueRange, for a DynamicQuantizeLinear next. (A
        Gelu that only GEMMs quantize runs as GeluDynamicQuantize instead.)"""
        src = np.ascontiguousarray(x, np.float32)
        return ops.gelu(src, float32_steps=True, threads=parallel.resolve(self.threads),
                        with_range=with_range)


class GeluDynamicQuantize:
    """A fused Gelu and the DynamicQuantizeLinear that alone reads it (for GEMMs) as one step:
    (the uint8 values, scale, zero point, the float32 Gelu). With quantized_only (the plan's
    setting) ops.gelu_dynamic_quantize_linear, which never writes the float32 Gelu (its output
    is None); without (run_until's last step) the exact Gelu, then DynamicQuantizeLinear."""

    def __init__(self):
        self.threads = None

    def __call__(self, x, quantized_only=False):
        threads = parallel.resolve(self.threads)
        src = np.ascontiguousarray(x, np.float32)
        y = None
        if quantized_only:
            q, scale, zero_point = ops.gelu_dynamic_quantize_linear(src, threads=threads)
        else:
            y = ops.gelu(src, float32_steps=True, threads=threads)
            q, scale, zero_point = ops.dynamic_quantize_linear(y, threads=threads)
        return q, np.array(scale, np.float32), np.array(zero_point, np.uint8), y


def find_residual_layer_norm_groups(nodes, index: GraphIndex,
                                    float32_tensors: set[str]) -> list[Group]:
    """Add(a, b) read only by a LayerNormalization (one output, constant float32 scale and bias):
    one ops.layer_norm(a, residual=b, float32_steps=True) pass, the sum never written."""
    groups = []
    for add in nodes:
        if add.op_type != "Add" or len(add.input) != 2 or \
                not all(x in float32_tensors for x in add.input):
            continue
        ln = index.sole_reader(add.output[0], "LayerNormalization")
        if ln is None or ln.input[0] != add.output[0] or len(ln.output) != 1:
            continue
        scale = index.const(_input(ln, 1))
        bias = index.const(_input(ln, 2)) if _input(ln, 2) else None
        if scale is None or scale.dtype != np.float32 or (_input(ln, 2) and (
                bias is None or bias.dtype != np.float32)):
            continue
        attrs = {a.name: a for a in ln.attribute}
        if "stash_type" in attrs and attrs["stash_type"].i != 1:
            continue
        axis = attrs["axis"].i if "axis" in attrs else -1
        epsilon = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
        group = Group("Add+LayerNormalization", [add, ln], list(add.input), ln.output[0], "")
        group.fn = ResidualLayerNorm(scale, bias, axis, epsilon)
        groups.append(group)
    return groups


class ResidualLayerNorm:
    """LayerNormalization(Add(a, b)) in one pass when a and b have the normalised row layout;
    otherwise (broadcasting Add, other shapes) the two ops one after the other."""

    def __init__(self, scale, bias, axis, epsilon):
        self.scale, self.bias, self.axis, self.epsilon = scale, bias, axis, epsilon
        self.threads = None

    def __call__(self, a, b, with_range=False):
        """with_range: also the output's ops.ValueRange, for a DynamicQuantizeLinear next."""
        threads = parallel.resolve(self.threads)
        if a.shape == b.shape and a.ndim and \
                layer_norm_kernel_fits(a, self.scale, self.bias, self.axis % a.ndim):
            # Whole rows (the normalised axes, flattened).
            axis = self.axis % a.ndim
            width = math.prod(a.shape[axis:])
            a2 = np.ascontiguousarray(a).reshape(-1, width)
            b2 = np.ascontiguousarray(b).reshape(-1, width)
            scale, bias = self.scale.reshape(-1), None if self.bias is None else self.bias.reshape(-1)
            # ops' own threads (blocks of rows taken from a shared counter): at 2 threads 1.6x
            # faster than chunks handed out from Python for (2048, 256).
            out = ops.layer_norm(a2, scale, bias, self.epsilon, residual=b2, float32_steps=True,
                                 threads=threads, with_range=with_range)
            if with_range:
                return out[0].reshape(a.shape), out[1]
            return out.reshape(a.shape)
        out = LayerNormalization(Add(a, b), self.scale, self.bias, self.axis, self.epsilon,
                                 _outputs=1, _threads=self.threads)
        return (out, ops.value_range(out, threads=threads)) if with_range else out


def find_scaled_softmax_groups(nodes, index: GraphIndex, float32_tensors: set[str],
                               is_softmax_13) -> list[Group]:
    """Div(x, c) read only by a Softmax of opset 13 on (is_softmax_13(node)), c a float32 scalar
    constant: attention's scaled scores, one blocked pass (graph/float_softmax.py)."""
    groups = []
    for d in nodes:
        if d.op_type != "Div" or len(d.input) != 2 or d.input[0] not in float32_tensors or \
                index.const(d.input[0]) is not None:
            continue
        c = index.const(d.input[1])
        if c is None or c.size != 1 or c.dtype != np.float32 or c.ndim > 1:
            continue
        sm = index.sole_reader(d.output[0], "Softmax")
        if sm is None or not is_softmax_13(sm):
            continue
        axis = _attr(sm, "axis", -1)
        group = Group("Div+Softmax", [d, sm], [d.input[0]], sm.output[0], "")
        group.fn = FloatSoftmax(None, c.reshape(()).copy()[()], axis)
        groups.append(group)
    return groups


def prepare_weight(w: np.ndarray, w_zero_point, w_scale=None):
    """(PreparedB, b_zero_point for gemm_i8). With a positive weight scale the PreparedB also
    carries quant_mult = 1 / scale, so a caller may multiply float activations by it directly
    (gemm_i8(A, pb, a_quant_mult=...)) -- that is symmetric int8 quantization, exact only when
    the weight's zero point is 0."""
    wq, zb = int8_weights(w, 0 if w_zero_point is None else w_zero_point.reshape(-1))
    zb = np.asarray(zb).reshape(-1)
    zb = int(zb[0]) if zb.size == 1 else zb.astype(np.int32)
    quant_mult = None
    if w_scale is not None and np.all(w_scale > 0) and np.all(np.isfinite(1 / w_scale)):
        quant_mult = (np.float32(1) / w_scale.reshape(-1)).astype(np.float32)
        if quant_mult.size == 1:
            quant_mult = float(quant_mult[0])
    return gemm.prepare_b_quantized(np.ascontiguousarray(wq), quant_mult), zb


class DynamicQuantMatMul:
    """Cast(MatMulInteger(xq, W, xz, wz)) * (xs * W_scale) [+ bias] as one gemm_i8 call."""

    def __init__(self, w, w_zero_point, w_scale, bias):
        self.prepared, self.b_zero_point = prepare_weight(w, w_zero_point, w_scale)
        self.w_scale = w_scale.reshape(-1) if w_scale.size > 1 else w_scale.reshape(())
        self.bias = bias
        self.k, self.n = w.shape
        self.threads = None

    def __call__(self, xq, x_scale, x_zero_point, quantize_a=False):
        """quantize_a: xq is DynamicQuantizeLinear's float input x instead of its output, and is
        quantized (to the same uint8 values) as the GEMM packs it."""
        out = _dynamic_gemm(self, xq, x_scale * self.w_scale,  # the model's own Mul, float32
                            x_scale, x_zero_point, quantize_a)
        return out.reshape(*xq.shape[:-1], self.n)


def _dynamic_gemm(fused, xq, out_scale, x_scale, x_zero_point, quantize_a):
    """The gemm_i8 call of a DynamicQuantMatMul or SiblingDynamicQuantMatMuls (`fused`: its
    prepared weight, k, n, zero points, bias and threads): a (rows, n) float32 result.
    One call on the session's threads: the driver deals its blocks out to whichever thread is
    free. (Row chunks handed out from Python, one single-threaded call each, ran 5-25% slower
    on the encoder's shapes at 2 threads: ~10 us of Python per chunk, under the GIL.)"""
    if quantize_a and x_scale.reshape(-1)[0] == 0:
        # x's range underflowed (a few subnormals around 0): a zero scale, which the GEMM cannot
        # divide by while packing; DynamicQuantizeLinear's own zero-scale rule quantizes x.
        xq, _, _ = ops.dynamic_quantize_linear(xq)
        quantize_a = False
    # gemm_i8's own result: aligned, so that a large one is streamed (gemm/cpu/driver.py).
    return gemm.gemm_i8(xq.reshape(-1, fused.k), fused.prepared,
                        a_zero_point=int(x_zero_point.reshape(-1)[0]),
                        b_zero_point=fused.b_zero_point, out_scale=out_scale, bias=fused.bias,
                        a_scale=x_scale.reshape(-1)[0] if quantize_a else None,
                        threads=parallel.resolve(fused.threads))


class SiblingDynamicQuantMatMuls:
    """DynamicQuantMatMuls that read one quantized A (attention's query, key and value
    projections) as one gemm_i8 over their weights side by side: A is quantized and packed once
    instead of once per GEMM, and the wider product keeps the kernel busier. Each result is a
    column slice of the one output. The per-column scales are each GEMM's own float32
    x_scale * W_scale, so every value is computed exactly as by the separate GEMMs."""

    def __init__(self, parts: list[DynamicQuantMatMul]):
        self.k = parts[0].k
        self.prepared = gemm.prepare_b_quantized(
            np.concatenate([p.prepared.quantized() for p in parts], axis=1))
        zero_points = [np.broadcast_to(np.asarray(p.b_zero_point, np.int32), (p.n,))
                       for p in parts]
        self.b_zero_point = np.concatenate(zero_points)
        if not self.b_zero_point.any():
            self.b_zero_point = 0
        self.w_scale = np.concatenate([np.broadcast_to(p.w_scale, (p.n,)) for p in parts])
        self.bias = (None if parts[0].bias is None else
                     np.concatenate([p.bias.reshape(-1) for p in parts]))
        self.n = sum(p.n for p in parts)
        ends = np.cumsum([p.n for p in parts])
        self.columns = list(zip(ends - [p.n for p in parts], ends, strict=True))
        self.threads = None

    @staticmethod
    def can_merge(parts: list[DynamicQuantMatMul]) -> bool:
        return len({p.k for p in parts}) == 1 and len({p.bias is None for p in parts}) == 1 and \
            all(p.bias is None or p.bias.size == p.n for p in parts)

    def __call__(self, xq, x_scale, x_zero_point, quantize_a=False):
        # Per column, each GEMM's own float32 x_scale * W_scale.
        out = _dynamic_gemm(self, xq, x_scale.reshape(()) * self.w_scale, x_scale, x_zero_point,
                            quantize_a)
        return tuple(out[:, lo:hi].reshape(*xq.shape[:-1], hi - lo) for lo, hi in self.columns)


class QLinearMatMulDequant:
    """DequantizeLinear(QLinearMatMul(xq, ..., W, ...)): an exact int32 gemm_i8, then ONNX's
    requantization (its rounding and saturation are part of the result) and dequantization."""

    def __init__(self, w, w_scale, w_zero_point, y_scale, y_zero_point):
        self.prepared, self.b_zero_point = prepare_weight(w, w_zero_point, w_scale)
        self.w_scale = w_scale.reshape(-1) if w_scale.size > 1 else w_scale.reshape(())
        self.y_scale, self.y_zero_point = y_scale.reshape(()), y_zero_point.reshape(())
        self.k, self.n = w.shape
        self.threads = None

    def __call__(self, xq, x_scale, x_zero_point):
        acc = gemm.gemm_i8(xq.reshape(-1, self.k), self.prepared,
                           a_zero_point=int(x_zero_point.reshape(-1)[0]),
                           b_zero_point=self.b_zero_point, threads=self.threads)
        yq = requantize(acc, x_scale.reshape(()), self.w_scale, self.y_scale, self.y_zero_point)
        y = (yq.astype(np.int32) - np.int32(self.y_zero_point)).astype(np.float32) * self.y_scale
        return y.reshape(*xq.shape[:-1], self.n)
