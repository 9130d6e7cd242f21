"""Small transformer models built directly with onnx.helper, in the op pattern torch's ONNX
exporter emits (torch itself is not a dependency): Linear as MatMul + Add with the weight
transposed into an initializer, attention shapes computed at run time with
Shape/Gather/Unsqueeze/Concat -> Reshape, Transpose to heads, scaled MatMul, Softmax, Gelu as
x * 0.5 * (1 + Erf(x / sqrt 2)), LayerNormalization (opset 17) or torch's older
ReduceMean/Sub/Pow/Sqrt/Div decomposition, a causal mask from Range/Unsqueeze/Greater/Where.

Used by the tests, the translation example (graph/example_translate.py) and the benchmark
(graph/bench.py). Weights are random (seeded); the models compute nothing meaningful.

    model = encoder(width=256, heads=4, layers=2)           # input "x": (batch, seq, width) float
    model = encoder_decoder(vocab=32000, width=256)         # inputs "src", "tgt": int64 ids
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9   # what onnxruntime 1.16+ loads


class _Builder:
    """Collects nodes and initializers; every helper returns the name of the tensor it made."""

    def __init__(self, seed: int):
        self.nodes: list = []
        self.inits: list = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value, prefix="c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, prefix=None, outputs=1, **attrs):
        base = self.name(prefix or op_type)
        outs = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    def linear(self, x, d_in, d_out, prefix="linear"):
        # torch stores W as (out, in); the exporter writes W.T as the MatMul's initializer.
        w = (self.rng.standard_normal((d_out, d_in)) / math.sqrt(d_in)).astype(np.float32)
        b = (self.rng.standard_normal(d_out) * 0.02).astype(np.float32)
        y = self.op("MatMul", [x, self.const(w.T.copy(), prefix + ".weight")], prefix + "_MatMul")
        return self.op("Add", [y, self.const(b, prefix + ".bias")], prefix + "_Add")

    def layer_norm(self, x, width, decomposed: bool):
        scale = (1 + 0.1 * self.rng.standard_normal(width)).astype(np.float32)
        bias = (0.1 * self.rng.standard_normal(width)).astype(np.float32)
        if not decomposed:
            return self.op("LayerNormalization", [x, self.const(scale), self.const(bias)],
                           axis=-1, epsilon=1e-5)
        mean = self.op("ReduceMean", [x], axes=[-1])
        diff = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Pow", [diff, self.const(np.float32(2))])], axes=[-1])
        std = self.op("Sqrt", [self.op("Add", [var, self.const(np.float32(1e-5))])])
        y = self.op("Div", [diff, std])
        return self.op("Add", [self.op("Mul", [y, self.const(scale)]), self.const(bias)])

    def gelu(self, x):
        e = self.op("Erf", [self.op("Div", [x, self.const(np.float32(math.sqrt(2)))])])
        y = self.op("Mul", [x, self.op("Add", [e, self.const(np.float32(1))])])
        return self.op("Mul", [y, self.const(np.float32(0.5))])

    def dim(self, x, axis):
        """Dimension `axis` of x as a 1-element int64 tensor (Shape -> Gather -> Unsqueeze)."""
        g = self.op("Gather", [self.op("Shape", [x]), self.const(np.int64(axis))], axis=0)
        return self.op("Unsqueeze", [g, self.const(np.array([0], np.int64))])

    def split_heads(self, x, heads, head_dim):
        shape = self.op("Concat", [self.dim(x, 0), self.dim(x, 1),
                                   self.const(np.array([heads, head_dim], np.int64))], axis=0)
        return self.op("Transpose", [self.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    def attention(self, q_in, kv_in, width, heads, mask=None, prefix="attn"):
        head_dim = width // heads
        q = self.split_heads(self.linear(q_in, width, width, prefix + ".q_proj"), heads, head_dim)
        k = self.split_heads(self.linear(kv_in, width, width, prefix + ".k_proj"), heads, head_dim)
        v = self.split_heads(self.linear(kv_in, width, width, prefix + ".v_proj"), heads, head_dim)
        kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = self.op("Div", [self.op("MatMul", [q, kt]),
                                 self.const(np.float32(math.sqrt(head_dim)))])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        p = self.op("Softmax", [scores], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
        shape = self.op("Concat", [self.dim(q_in, 0), self.dim(q_in, 1),
                                   self.const(np.array([width], np.int64))], axis=0)
        return self.linear(self.op("Reshape", [ctx, shape]), width, width, prefix + ".out_proj")

    def causal_mask(self, x):
        """(S, S) float: 0 where a position may attend, -1e9 above the diagonal."""
        seq = self.op("Squeeze", [self.dim(x, 1), self.const(np.array([0], np.int64))])
        pos = self.op("Range", [self.const(np.int64(0)), seq, self.const(np.int64(1))])
        rows = self.op("Unsqueeze", [pos, self.const(np.array([1], np.int64))])
        cols = self.op("Unsqueeze", [pos, self.const(np.array([0], np.int64))])
        future = self.op("Greater", [cols, rows])
        return self.op("Where", [future, self.const(np.float32(-1e9)), self.const(np.float32(0))])

    def encoder_layer(self, x, width, heads, ffn, decomposed_ln=False, prefix="enc"):
        a = self.attention(x, x, width, heads, prefix=prefix + ".self_attn")
        x = self.layer_norm(self.op("Add", [x, a]), width, decomposed_ln)
        h = self.gelu(self.linear(x, width, ffn, prefix + ".linear1"))
        f = self.linear(h, ffn, width, prefix + ".linear2")
        return self.layer_norm(self.op("Add", [x, f]), width, decomposed_ln)

    def decoder_layer(self, y, memory, width, heads, ffn, prefix="dec"):
        mask = self.causal_mask(y)
        a = self.attention(y, y, width, heads, mask, prefix + ".self_attn")
        y = self.layer_norm(self.op("Add", [y, a]), width, False)
        c = self.attention(y, memory, width, heads, prefix=prefix + ".cross_attn")
        y = self.layer_norm(self.op("Add", [y, c]), width, False)
        h = self.op("Relu", [self.linear(y, width, ffn, prefix + ".linear1")])
        f = self.linear(h, ffn, width, prefix + ".linear2")
        return self.layer_norm(self.op("Add", [y, f]), width, False)

    def embed(self, ids, vocab, width, max_len, prefix):
        table = (self.rng.standard_normal((vocab, width)) * 0.5).astype(np.float32)
        pos_table = (self.rng.standard_normal((max_len, width)) * 0.1).astype(np.float32)
        tok = self.op("Gather", [self.const(table, prefix + ".embed"), ids], axis=0)
        seq = self.op("Squeeze", [self.dim(ids, 1), self.const(np.array([0], np.int64))])
        pos = self.op("Range", [self.const(np.int64(0)), seq, self.const(np.int64(1))])
        return self.op("Add", [tok, self.op("Gather", [self.const(pos_table), pos], axis=0)])

    def model(self, inputs, outputs, name) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="i8gemm.graph.transformer")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def encoder(width=256, heads=4, ffn=None, layers=1, decomposed_ln=False, seed=0) -> onnx.ModelProto:
    """Input "x" (batch, seq, width) float32 -> output "y" of the same shape."""
    b = _Builder(seed)
    x = "x"
    for i in range(layers):
        x = b.encoder_layer(x, width, heads, ffn or 4 * width, decomposed_ln, prefix=f"enc{i}")
    b.nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", width])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", width])],
                   "encoder")


def decoder(width=256, heads=4, ffn=None, seed=0) -> onnx.ModelProto:
    """Inputs "y" (batch, tgt_seq, width) and "memory" (batch, src_seq, width) -> "out"."""
    b = _Builder(seed)
    out = b.decoder_layer("y", "memory", width, heads, ffn or 4 * width)
    b.nodes.append(helper.make_node("Identity", [out], ["out"], name="output"))
    f = TensorProto.FLOAT
    return b.model([helper.make_tensor_value_info("y", f, ["batch", "tgt", width]),
                    helper.make_tensor_value_info("memory", f, ["batch", "src", width])],
                   [helper.make_tensor_value_info("out", f, ["batch", "tgt", width])], "decoder")


def encoder_decoder(vocab=32000, width=256, heads=4, ffn=None, layers=1, max_len=128,
                    seed=0) -> onnx.ModelProto:
    """Inputs "src" (batch, src_seq) and "tgt" (batch, tgt_seq) int64 token ids -> "logits"
    (batch, tgt_seq, vocab). The decoder's last hidden state is the tensor "decoder_hidden"; the
    output projection is the MatMul node "output_projection" with weight "output_projection.weight"
    and bias "output_projection.bias"."""
    b = _Builder(seed)
    ffn = ffn or 4 * width
    x = b.embed("src", vocab, width, max_len, "src")
    for i in range(layers):
        x = b.encoder_layer(x, width, heads, ffn, prefix=f"enc{i}")
    y = b.embed("tgt", vocab, width, max_len, "tgt")
    for i in range(layers):
        y = b.decoder_layer(y, x, width, heads, ffn, prefix=f"dec{i}")
    b.nodes.append(helper.make_node("Identity", [y], ["decoder_hidden"], name="decoder_hidden"))
    w = (b.rng.standard_normal((width, vocab)) / math.sqrt(width)).astype(np.float32)
    bias = (b.rng.standard_normal(vocab) * 0.1).astype(np.float32)
    b.inits += [numpy_helper.from_array(w, "output_projection.weight"),
                numpy_helper.from_array(bias, "output_projection.bias")]
    b.nodes.append(helper.make_node("MatMul", ["decoder_hidden", "output_projection.weight"],
                                    ["projected"], name="output_projection"))
    b.nodes.append(helper.make_node("Add", ["projected", "output_projection.bias"], ["logits"],
                                    name="output_bias"))
    i64 = TensorProto.INT64
    return b.model([helper.make_tensor_value_info("src", i64, ["batch", "src_seq"]),
                    helper.make_tensor_value_info("tgt", i64, ["batch", "tgt_seq"])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                  ["batch", "tgt_seq", vocab])], "encoder_decoder")


def quantize_dynamic(model: onnx.ModelProto, per_channel: bool, folder: str,
                     name: str = "model") -> str:
    """onnxruntime's quantize_dynamic (int8 weights) on `model`; returns the quantized file's
    path. Only MatMuls are quantized (Gather stays float, as translation models keep
    embeddings). Needs onnxruntime."""
    import os

    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    src = os.path.join(folder, f"{name}.onnx")
    dst = os.path.join(folder, f"{name}.{'per_channel' if per_channel else 'per_tensor'}.int8.onnx")
    onnx.save(model, src)
    ort_quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    return dst
