"""graph.Session: the onnxruntime-style API, direct kernel access, and load-time safety (models
are untrusted input: every rejection names the node or tensor at fault)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import gemm
import graph

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _vi(name, elem=F, shape=("n", 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _matmul_integer_model(n=6, k=4):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
        helper.make_node("Mul", ["xs", "w_scale"], ["s"], name="scale"),
        helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"], name="mmi"),
        helper.make_node("Cast", ["acc"], ["accf"], name="cast", to=F),
        helper.make_node("Mul", ["accf", "s"], ["y"], name="mul"),
        helper.make_node("Add", ["y", "b"], ["z"], name="bias"),
    ]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.full(n, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.arange(n, dtype=np.float32), "b")]
    return _model(nodes, [_vi("x", shape=("m", k))], [_vi("z", shape=("m", n))], inits), w


# -- the onnxruntime-style interface -------------------------------------------------------------


def test_inputs_outputs_and_run_like_onnxruntime():
    model, _ = _matmul_integer_model()
    for source in (model, model.SerializeToString()):
        session = graph.Session(source)
        (inp,) = session.get_inputs()
        (out,) = session.get_outputs()
        assert (inp.name, inp.shape, inp.type) == ("x", ["m", 4], "tensor(float)")
        assert (out.name, out.shape, out.type) == ("z", ["m", 6], "tensor(float)")
        x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
        (z,) = session.run(None, {"x": x})
        (z2,) = session.run(["z"], {"x": x})
        np.testing.assert_array_equal(z, z2)
        assert z.shape == (3, 6) and z.dtype == np.float32


def test_loads_from_path(tmp_path):
    model, _ = _matmul_integer_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert graph.Session(str(path)).get_outputs()[0].name == "z"
    assert graph.Session(path).get_outputs()[0].name == "z"


def test_the_callers_model_proto_is_not_modified():
    model, _ = _matmul_integer_model()
    before = model.SerializeToString()
    graph.Session(model)
    assert model.SerializeToString() == before


def test_outputs_never_alias_feeds_or_weights():
    w = np.ones((2, 2), np.float32)
    model = _model([helper.make_node("Identity", ["x"], ["y"], name="id"),
                    helper.make_node("Identity", ["w"], ["wy"], name="idw")],
                   [_vi("x", shape=(2, 2))], [_vi("y", shape=(2, 2)), _vi("wy", shape=(2, 2))],
                   [numpy_helper.from_array(w, "w")])
    session = graph.Session(model)
    x = np.zeros((2, 2), np.float32)
    y, wy = session.run(None, {"x": x})
    y[:] = 5
    wy[:] = 5
    assert not x.any()
    np.testing.assert_array_equal(session.run(None, {"x": x})[1], w)


def test_outputs_never_alias_what_later_runs_reuse():
    # Shape(x) depends on x's shape alone, so the session keeps its result for the next run
    # with that shape; the caller's copy of it must not be that kept array.
    model = _model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                    helper.make_node("Identity", ["s"], ["y"], name="id")],
                   [_vi("x", shape=("n", 4))], [_vi("y", TensorProto.INT64, shape=(2,))], [])
    session = graph.Session(model)
    x = np.zeros((3, 4), np.float32)
    for _ in range(2):
        (y,) = session.run(None, {"x": x})
        np.testing.assert_array_equal(y, [3, 4])
        y[:] = 99
    np.testing.assert_array_equal(session.run_until("y", {"x": x}), [3, 4])


def test_a_run_holds_blas_to_one_thread_and_gives_its_count_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from graph import float_matmul

    # numpy's BLAS is loaded with numpy, before the session first looks for BLAS libraries.
    held = {lib.filepath for lib in float_matmul._blas_libraries()}
    if not held:
        pytest.skip("numpy's BLAS exposes no thread pool here")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")

    def counts():
        return {lib["num_threads"] for lib in blas.info() if lib["filepath"] in held}

    with blas.limit(limits=2):
        if counts() != {2}:
            pytest.skip("numpy's BLAS here cannot run on 2 threads")
        with float_matmul.blas_single_threaded():
            assert counts() == {1}
        assert counts() == {2}


def test_feed_errors_name_the_input():
    session = graph.Session(_matmul_integer_model()[0])
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="missing input 'x'"):
        session.run(None, {})
    with pytest.raises(ValueError, match="unknown input"):
        session.run(None, {"x": x, "extra": x})
    with pytest.raises(TypeError, match=r"feeds\['x'\].*float32"):
        session.run(None, {"x": x.astype(np.float64)})
    with pytest.raises(ValueError, match=r"feeds\['x'\].*shape"):
        session.run(None, {"x": np.zeros((2, 5), np.float32)})
    with pytest.raises(ValueError, match="output_names"):
        session.run(["nope"], {"x": x})


def test_a_failing_node_is_named_at_run_time():
    model = _model([helper.make_node("Gather", ["data", "idx"], ["y"], name="lookup")],
                   [_vi("idx", TensorProto.INT64, (2,))], [_vi("y", shape=(2, 3))],
                   [numpy_helper.from_array(np.zeros((4, 3), np.float32), "data")])
    with pytest.raises(graph.NodeError, match="'lookup' \\(Gather\\).*indices"):
        graph.Session(model).run(None, {"idx": np.array([0, 9])})


# -- fusion and direct kernel access -------------------------------------------------------------


def test_fused_chain_equals_the_onnx_definition_exactly():
    model, w = _matmul_integer_model()
    session = graph.Session(model)
    # The fused GEMM is xq's only reader, so it quantizes x itself and the DynamicQuantizeLinear
    # step computes just xs and xz; xq is never materialized.
    assert [s.op_type for s in session.steps] == ["DynamicQuantizeLinear(scale)",
                                                  "DynamicQuantMatMul"]
    assert session.steps[1].nodes == ("scale", "mmi", "cast", "mul", "bias")
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="inside the fused step"):
        session.run_until("xq", {"x": x})
    xq = graph.Session(model, fuse=False).run_until("xq", {"x": x})
    xs, xz = session.run_until("xs", {"x": x}), session.run_until("xz", {"x": x})
    acc = (xq.astype(np.int64) - xz.astype(np.int64)) @ w.astype(np.int64)
    expected = acc.astype(np.int32).astype(np.float32) * (xs * np.float32(0.01)) + \
        np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], expected)


def _float_chains_model(sqrt2, residual_shape):
    """Gelu as torch exports it (Div by `sqrt2`), Add(residual) -> LayerNormalization, and
    Div(scale) -> Softmax."""
    c = lambda v, name: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["t"], name="div"),
        helper.make_node("Erf", ["t"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
        helper.make_node("Mul", ["x", "e1"], ["xe"], name="mul"),
        helper.make_node("Mul", ["xe", "half"], ["g"], name="half"),
        helper.make_node("Add", ["g", "r"], ["s"], name="residual"),
        helper.make_node("LayerNormalization", ["s", "ln_w", "ln_b"], ["y"], name="ln",
                         epsilon=1e-5),
        helper.make_node("Div", ["y", "temp"], ["z"], name="scale"),
        helper.make_node("Softmax", ["z"], ["p"], name="softmax", axis=-1),
    ]
    rng = np.random.default_rng(4)
    inits = [c(sqrt2, "sqrt2"), c(1.0, "one"), c(0.5, "half"), c(8.0, "temp"),
             c(rng.standard_normal(16), "ln_w"), c(rng.standard_normal(16), "ln_b")]
    return _model(nodes, [_vi("x", shape=("m", 16)), _vi("r", shape=residual_shape)],
                  [_vi("p", shape=("m", 16))], inits)


@pytest.mark.parametrize("residual_shape", [("m", 16), (16,)], ids=["same_shape", "broadcast"])
def test_float_chains_fuse_and_equal_the_reference_bit_for_bit(residual_shape):
    from onnx.reference import ReferenceEvaluator
    model = _float_chains_model(np.float32(np.sqrt(2)), residual_shape)
    session = graph.Session(model)
    assert [s.op_type for s in session.steps] == ["Gelu(Erf)", "Add+LayerNormalization",
                                                  "Div+Softmax"]
    rng = np.random.default_rng(5)
    feeds = {"x": (rng.standard_normal((300, 16)) * 3).astype(np.float32),
             "r": rng.standard_normal((300, 16) if len(residual_shape) == 2 else 16)
             .astype(np.float32)}
    (ref,) = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_array_equal(session.run(None, feeds)[0], ref)
    np.testing.assert_array_equal(graph.Session(model, fuse=False).run(None, feeds)[0], ref)


def test_gelu_with_other_constants_is_not_fused_but_still_exact():
    from onnx.reference import ReferenceEvaluator
    model = _float_chains_model(1.5, ("m", 16))
    session = graph.Session(model)
    assert "Gelu(Erf)" not in [s.op_type for s in session.steps]
    feeds = {"x": np.linspace(-6, 6, 320, dtype=np.float32).reshape(20, 16),
             "r": np.zeros((20, 16), np.float32)}
    (ref,) = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_array_equal(session.run(None, feeds)[0], ref)


def test_prepared_weight_by_initializer_or_node_name_and_shortlisting():
    model, w = _matmul_integer_model(n=40, k=16)
    session = graph.Session(model)
    pb = session.prepared_weight("w")
    assert pb is session.prepared_weight("mmi") is session.prepared_weight("bias")
    assert isinstance(pb, gemm.PreparedB) and pb.shape == (16, 40)
    np.testing.assert_array_equal(pb.quantized(), w)
    # A pipeline's own call on a shortlist equals those columns of the full product.
    a = np.random.default_rng(3).integers(-127, 128, (3, 16)).astype(np.int8)
    ids = [39, 2, 17]
    np.testing.assert_array_equal(gemm.gemm_i8(a, pb.select_columns(ids)),
                                  gemm.gemm_i8(a, pb)[:, ids])
    np.testing.assert_array_equal(session.constant("b"), np.arange(40, dtype=np.float32))
    with pytest.raises(KeyError, match="no prepared weight"):
        session.prepared_weight("x")


def test_run_until_returns_intermediates_and_explains_fused_ones():
    model, _ = _matmul_integer_model()
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="inside the fused step 'mmi'.*fuse=False"):
        graph.Session(model).run_until("acc", {"x": x})
    acc = graph.Session(model, fuse=False).run_until("acc", {"x": x})
    assert acc.dtype == np.int32 and acc.shape == (2, 6)


# -- load-time rejection ---------------------------------------------------------------------------


def test_missing_ops_are_all_reported_with_their_nodes():
    model = _model([helper.make_node("Abs", ["x"], ["a"], name="abs1"),
                    helper.make_node("Abs", ["a"], ["b"], name="abs2"),
                    helper.make_node("Floor", ["b"], ["y"], name="floor")],
                   [_vi("x")], [_vi("y")])
    with pytest.raises(ValueError) as info:
        graph.Session(model)
    message = str(info.value)
    assert "Abs" in message and "abs1, abs2" in message and "Floor" in message and "floor" in message


def test_unsupported_op_version_is_rejected():
    model = _model([helper.make_node("Softmax", ["x"], ["y"], name="sm")], [_vi("x")], [_vi("y")],
                   opset=9)
    graph.Session(model)  # Softmax-1 semantics are supported
    model = _model([helper.make_node("LogSoftmax", ["x"], ["y"], name="ls")], [_vi("x")], [_vi("y")])
    model.graph.node[0].op_type = "Gelu"  # Gelu exists from opset 20 only
    with pytest.raises(ValueError, match="Gelu"):
        graph.Session(model)


def test_malformed_attributes_name_the_node():
    unknown = _model([helper.make_node("Relu", ["x"], ["y"], name="r", alpha=1.0)],
                     [_vi("x")], [_vi("y")])
    with pytest.raises(ValueError, match="'r'"):
        graph.Session(unknown)
    bad_cast = _model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.BFLOAT16)],
                      [_vi("x")], [_vi("y", TensorProto.BFLOAT16)])
    with pytest.raises(ValueError, match="'c'.*BFLOAT16"):
        graph.Session(bad_cast)
    bad_gelu = _model([helper.make_node("Gelu", ["x"], ["y"], name="g", approximate="fast")],
                      [_vi("x")], [_vi("y")], opset=20)
    with pytest.raises(ValueError, match="'g'.*approximate"):
        graph.Session(bad_gelu)


def test_initializer_sizes_are_checked_against_the_bytes_present():
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.dims[:] = [1000, 1000]  # claims a million floats, holds four
    model = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                   [_vi("x", shape=(4,))], [_vi("y", shape=(4,))], [t])
    with pytest.raises(ValueError, match="'w'.*bytes"):
        graph.Session(model.SerializeToString())


def _external_model(tmp_path, location, length=16):
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    model = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                   [_vi("x", shape=(4,))], [_vi("y", shape=(4,))], [t])
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir()
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_external_data_inside_the_folder_loads(tmp_path):
    path = _external_model(tmp_path, "w.bin")
    np.arange(4, dtype=np.float32).tofile(path.parent / "w.bin")
    (y,) = graph.Session(str(path)).run(None, {"x": np.ones(4, np.float32)})
    np.testing.assert_array_equal(y, np.arange(4) + 1)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_leaving_the_folder_is_rejected(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _external_model(tmp_path, location)
    with pytest.raises(ValueError, match="leaves the model's folder|rejected by onnx.checker"):
        graph.Session(str(path))


def test_external_data_shorter_than_declared_is_rejected(tmp_path):
    path = _external_model(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="'w'.*16 bytes"):
        graph.Session(str(path))


def test_not_a_model():
    with pytest.raises(ValueError, match="model"):
        graph.Session(b"not a protobuf at all")
    with pytest.raises(TypeError, match="model"):
        graph.Session(42)
    with pytest.raises(ValueError, match="no file"):
        graph.Session(os.path.join("nowhere", "m.onnx"))


def test_gpu_backend_without_a_gpu_says_why(i8gemm_env):
    i8gemm_env("I8GEMM_GPU", "off")
    with pytest.raises(RuntimeError, match="backend.*I8GEMM_GPU=off"):
        graph.Session(_matmul_integer_model()[0], backend="gpu")
    with pytest.raises(ValueError, match="backend"):
        graph.Session(_matmul_integer_model()[0], backend="tpu")


def test_data_dependent_allocations_are_bounded():
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill")],
                   [_vi("shape", TensorProto.INT64, (2,))], [_vi("y", shape=("a", "b"))])
    session = graph.Session(model)
    assert session.run(None, {"shape": np.array([2, 3])})[0].shape == (2, 3)
    with pytest.raises(graph.NodeError, match="'fill'.*elements"):
        session.run(None, {"shape": np.array([1 << 20, 1 << 20])})
