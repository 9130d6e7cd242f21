"""quantize_linear, dequantize_linear and dynamic_quantize_linear bit-identical to
onnx.reference.ReferenceEvaluator on tiny one-node models."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ops
from ops.quantize import dynamic_scale_and_zero_point

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
          np.dtype(np.float32): TensorProto.FLOAT}


@functools.cache
def _model(op, in_types, out_types, opset, **attrs):
    inputs = [helper.make_tensor_value_info(f"i{j}", t, None) for j, t in enumerate(in_types)]
    outputs = [helper.make_tensor_value_info(f"o{j}", t, None) for j, t in enumerate(out_types)]
    node = helper.make_node(op, [i.name for i in inputs], [o.name for o in outputs], **attrs)
    graph = helper.make_graph([node], op.lower(), inputs, outputs)
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def onnx_run(op, inputs, out_types, opset=19, **attrs):
    in_types = tuple(_TYPES[a.dtype] for a in inputs)
    model = _model(op, in_types, tuple(out_types), opset, **attrs)
    return model.run(None, {f"i{j}": a for j, a in enumerate(inputs)})


# Values whose quotient by the scale lands on exact halves now and then (rounding ties).
X_VALUES = st.one_of(st.floats(-300, 300, width=32), st.integers(-600, 600).map(lambda v: v / 4))


@st.composite
def quantize_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    x = draw(hnp.arrays(np.float32, shape, elements=X_VALUES))
    qtype = draw(st.sampled_from([np.uint8, np.int8]))
    info = np.iinfo(qtype)
    per_axis = draw(st.booleans())
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis] if per_axis else None
    scale_el = st.sampled_from([0.5, 0.25, 1.0, 2.0]) | st.floats(0.015625, 4.0, width=32)
    zp_el = st.integers(int(info.min), int(info.max))
    if per_axis:
        scale = draw(hnp.arrays(np.float32, (n,), elements=scale_el))
        zp = draw(hnp.arrays(qtype, (n,), elements=zp_el))
    else:
        scale = np.array(draw(scale_el), np.float32)
        zp = np.array(draw(zp_el), qtype)
    return x, scale, zp, axis


@settings(max_examples=80, deadline=None)
@given(quantize_case())
def test_quantize_linear_bit_identical_to_onnx(case):
    x, scale, zp, axis = case
    (expected,) = onnx_run("QuantizeLinear", [x, scale, zp], [_TYPES[zp.dtype]], axis=axis)
    got = ops.quantize_linear(x, scale, zp, axis=axis)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(quantize_case())
def test_dequantize_linear_bit_identical_to_onnx(case):
    x, scale, zp, axis = case
    q = ops.quantize_linear(x, scale, zp, axis=axis)
    (expected,) = onnx_run("DequantizeLinear", [q, scale, zp], [TensorProto.FLOAT], axis=axis)
    got = ops.dequantize_linear(q, scale, zp, axis=axis)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30),
                  elements=st.floats(-1e3, 1e3, width=32)
                  | st.floats(0.0, 50.0, width=32) | st.floats(-50.0, 0.0, width=32)))
def test_dynamic_quantize_linear_bit_identical_to_onnx(x):
    y_ref, scale_ref, zp_ref = onnx_run("DynamicQuantizeLinear", [x],
                                        [TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8],
                                        opset=11)
    y, scale, zp = ops.dynamic_quantize_linear(x)
    assert y.dtype == np.uint8 and type(scale) is np.float32 and type(zp) is np.uint8
    np.testing.assert_array_equal(y, y_ref)
    assert scale.tobytes() == np.asarray(scale_ref, np.float32).tobytes()
    assert zp == zp_ref


@pytest.mark.parametrize("values", [[1e-45, 0.0], [-1e-45, 0.0, -0.0], [2e-45, 1e-45, 0.0, -1e-45],
                                    [3e-43, -1e-45]])
def test_dynamic_quantize_linear_where_the_range_underflows(values):
    """A range of a few subnormals: (max - min) / 255 underflows to a zero scale, which the
    reference divides by (x > 0: 255, x < 0 and x = 0: 0; zero point 255). Just above it the
    scale is subnormal but not zero, and quantizes as usual."""
    x = np.array(values, np.float32)
    with np.errstate(all="ignore"):  # the reference's own divisions by zero
        y_ref, scale_ref, zp_ref = onnx_run(
            "DynamicQuantizeLinear", [x], [TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8],
            opset=11)
    y, scale, zp = ops.dynamic_quantize_linear(x)
    np.testing.assert_array_equal(y, y_ref)
    assert scale.tobytes() == np.asarray(scale_ref, np.float32).tobytes()
    assert zp == zp_ref


FINITE_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(FINITE_F32, FINITE_F32)
def test_scale_and_zero_point_of_any_finite_range_match_the_reference(a, b):
    """Ranges of every magnitude, subnormal to where max - min overflows: the scale and zero
    point that dynamic_quantize_params and the fused steps take (compiled float32 steps) are
    the reference's."""
    x = np.array([a, b], np.float32)
    with np.errstate(all="ignore"):
        _, scale_ref, zp_ref = onnx_run(
            "DynamicQuantizeLinear", [x], [TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8],
            opset=11)
    scale, zp = dynamic_scale_and_zero_point(x.min(), x.max())
    assert type(scale) is np.float32 and type(zp) is np.uint8
    assert scale.tobytes() == np.asarray(scale_ref, np.float32).tobytes()
    assert zp == zp_ref


def test_large_inputs_threads_and_saturation():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((300, 1000)) * 100).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 1e30, -1e30]
    q1 = ops.quantize_linear(x, np.float32(0.5), np.int8(3), threads=1)
    np.testing.assert_array_equal(ops.quantize_linear(x, np.float32(0.5), np.int8(3), threads=2), q1)
    np.testing.assert_array_equal(q1[0, :4], [127, -128, 127, -128])   # saturated
    finite = x[1:]
    (expected,) = onnx_run("QuantizeLinear", [finite, np.float32(0.5) * np.ones((), np.float32),
                                              np.array(3, np.int8)], [TensorProto.INT8])
    np.testing.assert_array_equal(q1[1:], expected)
    y1, s1, z1 = ops.dynamic_quantize_linear(finite, threads=1)
    y2, s2, z2 = ops.dynamic_quantize_linear(finite, threads=2)
    np.testing.assert_array_equal(y1, y2)
    assert (s1, z1) == (s2, z2)
    d1 = ops.dequantize_linear(q1, np.float32(0.5), np.int8(3), threads=1)
    np.testing.assert_array_equal(ops.dequantize_linear(q1, np.float32(0.5), np.int8(3), threads=2), d1)


def test_defaults_and_edge_cases():
    x = np.array([[-1.0, 0.0, 1.5, 2.5]], np.float32)
    np.testing.assert_array_equal(ops.quantize_linear(x, 1.0), [[0, 0, 2, 2]])    # uint8, zp 0
    np.testing.assert_array_equal(ops.quantize_linear(x, 1.0, dtype=np.int8), [[-1, 0, 2, 2]])
    y, scale, zp = ops.dynamic_quantize_linear(np.zeros((2, 3), np.float32))
    assert scale == np.float32(1.0) / np.float32(255.0) and zp == 0 and not y.any()
    y, scale, zp = ops.dynamic_quantize_linear(np.zeros((0, 3), np.float32))
    assert y.shape == (0, 3) and zp == 0


def test_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="x: contains 1 NaN"):
        ops.quantize_linear(np.array([np.nan, 1.0], np.float32), 1.0)
    with pytest.raises(ValueError, match="x: contains 1 NaN or infinite"):
        ops.dynamic_quantize_linear(np.array([np.inf, 1.0], np.float32))
    with pytest.raises(ValueError, match="scale: every value must be positive"):
        ops.quantize_linear(x, 0.0)
    with pytest.raises(TypeError, match="scale: expected float32"):
        ops.quantize_linear(x, np.ones(3, np.float64))
    with pytest.raises(ValueError, match=r"scale: expected 1 value or 3"):
        ops.quantize_linear(x, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="zero_point: expected uint8 or int8"):
        ops.quantize_linear(x, 1.0, 3)
    with pytest.raises(TypeError, match="zero_point: dtype int8 differs"):
        ops.quantize_linear(x, 1.0, np.int8(0), dtype=np.uint8)
    with pytest.raises(TypeError, match="x: expected uint8 or int8"):
        ops.dequantize_linear(x, 1.0)
    with pytest.raises(TypeError, match="zero_point: expected x's dtype"):
        ops.dequantize_linear(np.zeros(3, np.int8), 1.0, np.uint8(0))
    with pytest.raises(TypeError, match="zero_point: expected uint8 or int8"):
        ops.dequantize_linear(np.zeros(3, np.int8), 1.0, 0)


def _finite_or_not():
    special = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 0.0, 3.4e38, -3.4e38, 1e-45])
    return st.floats(-1e4, 1e4, width=32) | special


@settings(max_examples=120, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 200), elements=_finite_or_not()),
       st.integers(0, 40))
def test_value_range_is_numpys_min_max_and_count_of_non_finite(x, offset):
    """Every length around the 32-value vector groups, at unaligned starts, with NaN and
    infinities anywhere: min and max leave NaN out, the count is of NaN and inf together."""
    x = np.concatenate([np.zeros(offset, np.float32), x])[offset:]   # an unaligned view
    found = ops.value_range(x)
    assert found.non_finite == np.count_nonzero(~np.isfinite(x))
    if x.size and not np.isnan(x).all():
        assert found.min == np.nanmin(x) and found.max == np.nanmax(x)
    if found.non_finite == 0:
        assert ops.dynamic_quantize_params(value_range=found) == ops.dynamic_quantize_params(x)


def test_value_range_on_threads_equals_one_pass():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2048, 1024)) * 7).astype(np.float32)   # past the parallel threshold
    x[1000, 3] = -50.0
    one = ops.value_range(x, threads=1)
    assert one == ops.value_range(x, threads=2) == (np.float32(-50.0), x.max(), 0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(7,), (3, 33), (2048, 1024), (1, 70001)])
def test_gelu_with_range_reports_its_output_range(shape, threads):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    for steps in (True, False):
        plain = ops.gelu(x, float32_steps=steps, threads=threads)
        y, found = ops.gelu(x, float32_steps=steps, threads=threads, with_range=True)
        np.testing.assert_array_equal(y, plain)
        assert found == ops.value_range(plain)
    x.reshape(-1)[shape[-1] // 2] = np.nan
    _, found = ops.gelu(x, float32_steps=True, threads=threads, with_range=True)
    assert found.non_finite == 1
    with pytest.raises(ValueError, match="x: contains 1 NaN or infinite"):
        ops.dynamic_quantize_params(value_range=found)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("steps", [True, False])
def test_layer_norm_with_range_reports_its_output_range(steps, threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2048, 256)).astype(np.float32)
    res = rng.standard_normal((2048, 256)).astype(np.float32)
    w, b = rng.standard_normal((2, 256)).astype(np.float32)
    plain = ops.layer_norm(x, w, b, residual=res, float32_steps=steps, threads=threads)
    y, found = ops.layer_norm(x, w, b, residual=res, float32_steps=steps, threads=threads,
                              with_range=True)
    np.testing.assert_array_equal(y, plain)
    assert found == ops.value_range(plain)
    y, found = ops.layer_norm(x[:0], w, b, float32_steps=steps, with_range=True)
    assert y.shape == (0, 256) and found.non_finite == 0 and found.min > found.max
    assert ops.dynamic_quantize_params(value_range=found) == \
        ops.dynamic_quantize_linear(y)[1:]


def test_value_range_errors():
    x = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="x: pass x or value_range, not both"):
        ops.dynamic_quantize_params(x, value_range=ops.value_range(x))
    with pytest.raises(TypeError, match="value_range: expected an ops.ValueRange"):
        ops.dynamic_quantize_params(value_range=(0.0, 1.0, 0))
    with pytest.raises(TypeError, match="x: required"):
        ops.dynamic_quantize_params()
    with pytest.raises(TypeError, match="x: expected float32"):
        ops.value_range(np.zeros(3))
