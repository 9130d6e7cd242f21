"""Whole transformer layers (built in torch's export pattern, width 256, random weights),
quantized by onnxruntime's quantize_dynamic (per tensor and per channel) and quantize_static,
run by graph.Session and compared with onnx's reference evaluator and with onnxruntime."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import linear_model
from onnx.reference import ReferenceEvaluator

import graph
from graph import transformer

ort = pytest.importorskip("onnxruntime")
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

WIDTH = 256


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _feeds(session, rng, batch=2, seq=9, src=7, vocab=1000):
    sizes = {"batch": batch, "seq": seq, "tgt": seq, "tgt_seq": seq, "src": src, "src_seq": src}
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes[d] for d in arg.shape]
        feeds[arg.name] = (rng.integers(0, vocab, shape) if arg.dtype == np.int64
                           else rng.standard_normal(shape).astype(np.float32))
    return feeds


MODELS = {
    "encoder": lambda: transformer.encoder(width=WIDTH, heads=4),
    "encoder_decomposed_ln": lambda: transformer.encoder(width=WIDTH, heads=4, decomposed_ln=True),
    "decoder": lambda: transformer.decoder(width=WIDTH, heads=4),
    "encoder_decoder": lambda: transformer.encoder_decoder(vocab=1000, width=WIDTH, heads=4),
}


@pytest.fixture(scope="module")
def dynamic_models(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dynamic"))
    paths = {}
    for name, build in MODELS.items():
        model = build()
        for per_channel in (False, True):
            paths[name, per_channel] = transformer.quantize_dynamic(model, per_channel, folder, name)
        paths[name, "float"] = os.path.join(folder, f"{name}.onnx")
    return paths


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", list(MODELS))
def test_quantize_dynamic_model_matches_reference_and_onnxruntime(dynamic_models, name, per_channel):
    path = dynamic_models[name, per_channel]
    session = graph.Session(path)
    matmul_integer = {n.name for n in onnx.load(path).graph.node if n.op_type == "MatMulInteger"}
    fused = [s for s in session.steps if s.op_type == "DynamicQuantMatMul"]
    # Every quantized MatMul of these models is in the exact fused form; attention's query, key
    # and value projections, which read one quantized input, in one merged GEMM.
    assert sorted(n for s in fused for n in s.nodes if n in matmul_integer) == \
        sorted(matmul_integer) and matmul_integer
    assert any(len(set(s.nodes) & matmul_integer) == 3 for s in fused)
    feeds = _feeds(session, np.random.default_rng(1))
    (ours,) = session.run(None, feeds)
    (ref,) = ReferenceEvaluator(path).run(None, feeds)
    (theirs,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert _rel(ours, ref) <= 1e-4
    assert _rel(ours, theirs) <= 1e-4


def test_fused_integer_products_are_exact(dynamic_models):
    """The int32 product inside each fused group equals numpy's on the same uint8 activations:
    compare the unfused plan's MatMulInteger outputs with an int64 numpy product."""
    path = dynamic_models["encoder", True]
    unfused = graph.Session(path, fuse=False)
    model = onnx.load(path)
    feeds = _feeds(unfused, np.random.default_rng(2))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "MatMulInteger"][:3]:
        acc = unfused.run_until(node.output[0], feeds)
        a = unfused.run_until(node.input[0], feeds).astype(np.int64)
        za = unfused.run_until(node.input[2], feeds).astype(np.int64)
        w = inits[node.input[1]].astype(np.int64) - inits[node.input[3]].astype(np.int64)
        assert acc.dtype == np.int32
        np.testing.assert_array_equal(acc, (a - za) @ w)


def test_fused_and_unfused_plans_agree_bit_for_bit(dynamic_models):
    path = dynamic_models["encoder", False]
    fused, unfused = graph.Session(path), graph.Session(path, fuse=False)
    feeds = _feeds(fused, np.random.default_rng(3))
    np.testing.assert_array_equal(fused.run(None, feeds)[0], unfused.run(None, feeds)[0])


def test_thread_counts_agree_bit_for_bit_and_equal_the_reference(dynamic_models):
    """Batch 3 x 64 tokens: big enough that every kernel splits its work over the threads (and
    the attention Softmax rows, Gelu values and GEMM rows land in different chunks)."""
    path = dynamic_models["encoder", True]
    one, three = graph.Session(path, threads=1), graph.Session(path, threads=3)
    # Only the fused GEMMs read each DynamicQuantizeLinear's output here, so they quantize its
    # input themselves (gemm_i8's a_scale) and the op is reduced to its scale and zero point.
    kinds = [s.op_type for s in one.steps]
    assert "DynamicQuantizeLinear(scale)" in kinds and "DynamicQuantizeLinear" not in kinds
    # Where a fused Gelu, LayerNorm or attention writes that input (attention's through a
    # Transpose and a Reshape), it reports the input's range as it writes it, and the op reads
    # no tensor at all: all but the DynamicQuantizeLinear of the model's input.
    from_writer = [s for s in one.steps if s.inputs and s.inputs[0].endswith("::range")]
    writers = {s.op_type for s in one.steps if s.attrs.get("with_range")}
    assert writers == {"Add+LayerNormalization", "Attention(MatMul+Div+Softmax+MatMul)"}
    assert len(from_writer) == sum(s.op_type == "DynamicQuantizeLinear(scale)" for s in one.steps) - 1
    # Only the next GEMM quantizes Gelu's output, so Gelu and that DynamicQuantizeLinear are one
    # step (ops.gelu_dynamic_quantize_linear) and the GEMM reads its uint8 values; the outputs
    # below are still the reference's, bit for bit.
    (gelu,) = [s for s in one.steps if s.op_type.startswith("Gelu(")]
    assert gelu.op_type == "Gelu(Erf)+DynamicQuantizeLinear" and gelu.attrs["quantized_only"]
    (reader,) = [s for s in one.steps if gelu.outputs[0] in s.inputs]
    assert reader.inputs[:3] == gelu.outputs[:3] and not reader.attrs.get("quantize_a")
    # Attention's MatMul -> Div -> Softmax -> MatMul is one step; its first call checks the one
    # pass against the three steps, later calls run the one pass (tests/test_graph_attention.py).
    attention = [s for s in one.steps if s.op_type.startswith("Attention(")]
    assert len(attention) == 1 and not any(s.op_type == "Div+Softmax" for s in one.steps)
    feeds = _feeds(one, np.random.default_rng(6), batch=3, seq=64)
    (ref,) = ReferenceEvaluator(path).run(None, feeds)
    for session in (one, three):
        for _ in range(2):
            np.testing.assert_array_equal(session.run(None, feeds)[0], ref)


def test_run_until_gives_the_tensors_a_quantized_only_step_stands_for(dynamic_models):
    """The plan's Gelu + DynamicQuantizeLinear step never writes the float32 Gelu; run_until
    computes it, exactly, and the step's quantized values equal the unfused ops' too."""
    path = dynamic_models["encoder", False]
    session, unfused = graph.Session(path), graph.Session(path, fuse=False)
    (gelu,) = [s for s in session.steps if s.attrs.get("quantized_only")]
    feeds = _feeds(session, np.random.default_rng(7), batch=2, seq=64)
    for name in (gelu.outputs[0], gelu.outputs[3]):
        np.testing.assert_array_equal(session.run_until(name, feeds),
                                      unfused.run_until(name, feeds))


def test_float_model_matches_onnxruntime(dynamic_models):
    path = dynamic_models["encoder_decoder", "float"]
    session = graph.Session(path)
    feeds = _feeds(session, np.random.default_rng(4))
    (ours,) = session.run(None, feeds)
    (theirs,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert _rel(ours, theirs) <= 1e-4


class _Calibration(CalibrationDataReader):
    def __init__(self, rng):
        self.batches = iter([{"x": rng.standard_normal((2, 9, WIDTH)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("fmt", [QuantFormat.QOperator, QuantFormat.QDQ], ids=["qoperator", "qdq"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_quantize_static_model_matches_reference_and_onnxruntime(tmp_path, fmt, per_channel):
    model = transformer.encoder(width=WIDTH, heads=4)
    # onnx's reference evaluator implements (De)QuantizeLinear from opset 19 on.
    model.opset_import[0].version = 21
    model.ir_version = 10
    src, dst = str(tmp_path / "float.onnx"), str(tmp_path / "static.onnx")
    onnx.save(model, src)
    quantize_static(src, dst, _Calibration(np.random.default_rng(5)), quant_format=fmt,
                    op_types_to_quantize=["MatMul"], per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    session = graph.Session(dst)
    if fmt == QuantFormat.QOperator:
        # The six weight GEMMs fuse with their DequantizeLinear; attention's QLinearMatMuls
        # multiply two activations and run unfused.
        assert sum(s.op_type == "QLinearMatMulDequant" for s in session.steps) == 6
    feeds = _feeds(session, np.random.default_rng(6))
    (ours,) = session.run(None, feeds)
    (ref,) = ReferenceEvaluator(dst).run(None, feeds)
    (theirs,) = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert _rel(ours, ref) <= 1e-4
    assert _rel(ours, theirs) <= 1e-4


def test_shape_results_follow_the_input_shapes(dynamic_models, monkeypatch):
    """The Shape -> Gather -> Unsqueeze -> Concat chains that size each Reshape reuse their
    results while the input shapes repeat (a run with the last run's shapes does not call them
    at all); a run with other shapes must compute them afresh."""
    path = dynamic_models["encoder_decoder", False]
    session = graph.Session(path)
    reused = [s for s in session.steps if type(s.fn).__name__ == "_SameInputsSameResult"]
    assert any(s.op_type == "Shape" for s in reused) and any(s.op_type != "Shape" for s in reused)
    called = []
    call_step = graph.session._call_step
    monkeypatch.setattr(graph.session, "_call_step",
                        lambda step, args: called.append(step) or call_step(step, args))
    reference = ReferenceEvaluator(path)
    last = None
    for batch, seq, src in [(2, 9, 7), (3, 5, 11), (3, 5, 11), (2, 9, 7), (1, 9, 7), (3, 5, 11)]:
        feeds = _feeds(session, np.random.default_rng(batch * seq), batch=batch, seq=seq, src=src)
        called.clear()
        (ours,) = session.run(None, feeds)
        (ref,) = reference.run(None, feeds)
        np.testing.assert_array_equal(ours, ref)
        shape_steps = [s for s in called if s in reused]
        assert (not shape_steps) if (batch, seq, src) == last else len(shape_steps) == len(reused)
        last = (batch, seq, src)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_an_input_whose_range_underflows_runs_as_the_reference(tmp_path, per_channel):
    """x within a few subnormals of 0: DynamicQuantizeLinear's scale underflows to 0, which the
    GEMM cannot divide by while it packs x; the step quantizes x as the op does instead, and the
    result is the reference evaluator's, bit for bit (signed zeros too)."""
    path = transformer.quantize_dynamic(linear_model(72, 40, 3), per_channel, str(tmp_path), "lin")
    x = np.zeros((3, 72), np.float32)
    x[0, :5] = [1e-45, -1e-45, 2e-45, 0.0, -3e-45]
    x[1, 7] = 1e-45
    session = graph.Session(path)
    assert [s.op_type for s in session.steps] == ["DynamicQuantizeLinear(scale)",
                                                  "DynamicQuantMatMul"]
    with np.errstate(all="ignore"):  # the reference's own divisions by zero
        (ref,) = ReferenceEvaluator(path).run(None, {"x": x})
    (out,) = session.run(None, {"x": x})
    assert out.tobytes() == ref.tobytes()
