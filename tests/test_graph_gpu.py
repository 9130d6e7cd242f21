"""Session(model, backend="gpu") on whatever adapter exists (lavapipe in CI): quantize_dynamic
transformer layers against the CPU session and onnx's reference evaluator, the host transfers
a run makes, and models whose ops lack a GPU kernel.

Tolerances. The integer GEMMs are exact on both backends, and a fused quantize_dynamic GEMM
fed the same uint8 activations gives the CPU's floats within one rounding
(test_fused_gemm_matches_the_cpu). The float ops between the GEMMs run on the GPU kernels
(README "ops on the GPU": a few float32 ulp) instead of the CPU's bit-for-bit float32_steps;
where such a difference moves a DynamicQuantizeLinear input across a rounding boundary, that
activation takes the neighbouring uint8 value and the outputs move by about one quantization
step times the weights (seen here: up to 0.024 on LayerNorm outputs of magnitude <= 4; without
such a flip the difference is <= 1e-6). Bound tested for the int8 layers: max |gpu - ref| <= 0.1
and mean |gpu - ref| <= 0.01; for the float32 encoder (no quantization) max |gpu - ref| <= 1e-4.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import linear_model
from onnx.reference import ReferenceEvaluator

import graph
from dispatch import gpu
from graph import transformer
from graph.run import explain

pytestmark = pytest.mark.gpu
ort = pytest.importorskip("onnxruntime")

WIDTH, HEADS = 64, 4


@pytest.fixture(autouse=True)
def need_gpu():
    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gpu_models"))


def transfers_of(fn):
    before = dict(gpu.TRANSFERS)
    result = fn()
    after = dict(gpu.TRANSFERS)
    return result, {k: after.get(k, 0) - before.get(k, 0) for k in ("upload", "download")}


def assert_int8_bound(out, ref):
    diff = np.abs(out - ref)
    assert diff.max() <= 0.1, diff.max()
    assert diff.mean() <= 0.01, diff.mean()


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_encoder_on_the_gpu(folder, per_channel):
    path = transformer.quantize_dynamic(transformer.encoder(WIDTH, HEADS, layers=2), per_channel,
                                        folder, "encoder")
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 16, WIDTH)).astype(np.float32)}
    ref = ReferenceEvaluator(path).run(None, feeds)[0]
    cpu = graph.Session(path).run(None, feeds)[0]
    session = graph.Session(path, backend="gpu")
    (out,), moved = transfers_of(lambda: session.run(None, feeds))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_array_equal(cpu, ref)
    assert_int8_bound(out, ref)
    # Every op has a GPU kernel: the input goes up once, the output comes down once.
    assert moved == {"upload": 1, "download": 1}
    assert [s.name for s in session.steps if s.where == "transfer"] == ["upload x"]
    assert all(s.where == "gpu" or s.op_type in ("Shape", "Gather", "Unsqueeze", "Concat")
               for s in session.steps if s.where != "transfer")
    _, moved = transfers_of(lambda: session.run(None, feeds))
    assert moved == {"upload": 1, "download": 1}


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_decoder_on_the_gpu(folder, per_channel):
    path = transformer.quantize_dynamic(transformer.decoder(WIDTH, HEADS), per_channel, folder,
                                        "decoder")
    rng = np.random.default_rng(2)
    feeds = {"y": rng.standard_normal((2, 7, WIDTH)).astype(np.float32),
             "memory": rng.standard_normal((2, 9, WIDTH)).astype(np.float32)}
    ref = ReferenceEvaluator(path).run(None, feeds)[0]
    session = graph.Session(path, backend="gpu")
    (out,), first = transfers_of(lambda: session.run(None, feeds))
    assert_int8_bound(out, ref)
    assert_int8_bound(out, graph.Session(path).run(None, feeds)[0])
    # The causal mask is computed on the host from the shapes (Shape, Range, Greater, Where)
    # and uploaded once per sequence length; later runs move only the inputs and the output.
    assert first == {"upload": 3, "download": 1}
    (again,), moved = transfers_of(lambda: session.run(None, feeds))
    assert moved == {"upload": 2, "download": 1}
    np.testing.assert_array_equal(again, out)
    longer = {"y": rng.standard_normal((2, 5, WIDTH)).astype(np.float32),
              "memory": feeds["memory"]}
    (out5,), moved = transfers_of(lambda: session.run(None, longer))
    assert moved == {"upload": 3, "download": 1}
    assert_int8_bound(out5, ReferenceEvaluator(path).run(None, longer)[0])


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("m", [3, 40])
def test_fused_gemm_matches_the_cpu(folder, per_channel, m):
    """DynamicQuantizeLinear of a model input, then one fused GEMM: the GPU's integer part is
    exact and its float epilogue within one rounding of the CPU's (a fused multiply-add)."""
    path = transformer.quantize_dynamic(linear_model(72, 40, m), per_channel, folder, f"lin{m}")
    x = np.random.default_rng(m).standard_normal((m, 72)).astype(np.float32)
    session = graph.Session(path, backend="gpu")
    assert [s.op_type for s in session.steps] == ["Upload", "DynamicQuantizeLinear",
                                                  "DynamicQuantMatMul"]
    out = session.run(None, {"x": x})[0]
    ref = graph.Session(path).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ref, ReferenceEvaluator(path).run(None, {"x": x})[0])
    bias = onnx.numpy_helper.to_array(
        next(t for t in onnx.load(path).graph.initializer if t.name == "b"))
    eps = 2.0 ** -23
    assert np.all(np.abs(out - ref) <= eps * (np.abs(ref - bias) + np.abs(ref)) + 1e-30)


def test_float_encoder_on_the_gpu():
    model = transformer.encoder(WIDTH, HEADS, layers=2)
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 16, WIDTH)).astype(np.float32)}
    ref = ReferenceEvaluator(model).run(None, feeds)[0]
    session = graph.Session(model, backend="gpu")
    (out,), moved = transfers_of(lambda: session.run(None, feeds))
    assert np.abs(out - ref).max() <= 1e-4
    assert moved == {"upload": 1, "download": 1}


def test_ops_without_a_gpu_kernel_cost_visible_transfers_not_failures(folder):
    """torch's older LayerNorm decomposition: ReduceMean, Pow and Sqrt have no GPU kernel here,
    so they run on the host with their inputs downloaded and results uploaded."""
    path = transformer.quantize_dynamic(
        transformer.encoder(WIDTH, HEADS, layers=1, decomposed_ln=True), False, folder, "decomposed")
    feeds = {"x": np.random.default_rng(4).standard_normal((1, 8, WIDTH)).astype(np.float32)}
    ref = ReferenceEvaluator(path).run(None, feeds)[0]
    session = graph.Session(path, backend="gpu")
    (out,), moved = transfers_of(lambda: session.run(None, feeds))
    assert_int8_bound(out, ref)
    planned = [s for s in session.steps if s.where == "transfer"]
    downloads = sum(s.op_type == "Download" for s in planned)
    uploads = sum(s.op_type == "Upload" for s in planned)
    assert downloads >= 2 and moved == {"upload": uploads, "download": downloads + 1}
    text = explain(session, "gpu")
    line = next(x for x in text.splitlines() if "for want of a GPU kernel" in x)
    assert {"Pow", "ReduceMean", "Sqrt"} <= set(line.split(": ")[1].split(", "))
    assert explain(graph.Session(path), "gpu").splitlines()[1:] == text.splitlines()[1:]


def test_run_until_and_outputs_come_back_as_numpy(folder):
    path = transformer.quantize_dynamic(transformer.encoder(WIDTH, HEADS, layers=1), False,
                                        folder, "encoder1")
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 8, WIDTH)).astype(np.float32)}
    session = graph.Session(path, backend="gpu")
    cpu = graph.Session(path)
    name = next(s.outputs[0] for s in cpu.steps if s.op_type == "DynamicQuantMatMul")
    h = session.run_until(name, feeds)
    assert isinstance(h, np.ndarray)
    np.testing.assert_allclose(h, cpu.run_until(name, feeds), rtol=0, atol=1e-5)
    # (The CPU plan never materializes the quantized activations: its GEMMs quantize x.)
    q = next(s.outputs for s in session.steps if s.op_type == "DynamicQuantizeLinear")
    unfused = graph.Session(path, fuse=False)
    np.testing.assert_array_equal(session.run_until(q[0], feeds), unfused.run_until(q[0], feeds))
    assert session.run_until(q[2], feeds).dtype == np.uint8
