"""The ops on GPU arrays (ops.wgsl) against float64 references and the CPU ops, on whatever
adapter exists (lavapipe in CI); skipped, with the reason, where wgpu finds none.

Bounds (eps = 2**-24, y64 the float64 result on the same float32 input) are the README's GPU
bounds: looser than the CPU's where WGSL allows a 2.5-ulp division or float32-only
accumulation; quantize ops are bit-identical to the CPU's. Shapes stay small (lavapipe runs
every invocation on the CPU), except one row of 32000 values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ops_reference import (
    EPS,
    TINY,
    assert_within,
    exp64,
    gelu_erf64,
    gelu_tanh64,
    layer_norm64,
    logsoftmax64,
    sigmoid64,
    softmax64,
)

import gemm
import ops
from dispatch import gpu
from dispatch.gpu_array import GpuArray
from ops.wgsl import quantize as gpu_quantize

pytestmark = pytest.mark.gpu

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FINITE = st.floats(-1e4, 1e4, width=32)
WITH_SPECIALS = st.one_of(FINITE, FINITE, FINITE, FINITE, FINITE, FINITE,
                          st.just(-np.inf), st.just(np.nan), st.just(np.inf))


@pytest.fixture(autouse=True)
def need_gpu():
    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")


def G(a):
    return GpuArray.from_numpy(np.ascontiguousarray(a))


# -- bounds (README, "ops on the GPU") ---------------------------------------------------------


def _gelu_tanh_bound(v, ref):
    u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)
    return 8 * EPS * (1 + 2 * np.abs(u)) * np.abs(ref) + TINY


UNARY = {
    "exp": (ops.exp, exp64, lambda v, r: 4 * EPS * np.abs(r) + TINY),
    "sigmoid": (ops.sigmoid, sigmoid64, lambda v, r: 12 * EPS * np.abs(r) + TINY),
    "tanh": (ops.tanh, np.tanh, lambda v, r: 12 * EPS * np.abs(r) + TINY),
    "gelu": (ops.gelu, gelu_erf64, lambda v, r: 24 * EPS * np.abs(r) + TINY),
    "gelu_tanh": (lambda x, **kw: ops.gelu(x, approximate="tanh", **kw), gelu_tanh64,
                  _gelu_tanh_bound),
}


def logsoftmax_bound(ref, n):
    return 6 * EPS * (np.abs(np.nan_to_num(ref, posinf=0, neginf=0)) + np.log(max(n, 1)) + 1)


def softmax_bound(ref):
    return 16 * EPS * np.nan_to_num(ref) + EPS


def layer_norm_bound(x, w, b, ref, axis, epsilon=1e-5):
    # The |mean| term is float32 accumulation's error in the mean (about eps |mean|) times
    # what the kernel divides by, sqrt(var + epsilon): for a constant row far from zero the
    # mean is off by an ulp and the output by ulp(mean) / sqrt(epsilon), not 0 (a row of three
    # 101.28864 gave -0.0024 on the H200; the float64 reference gives 0).
    axes = tuple(range(axis % x.ndim, x.ndim))
    x64 = x.astype(np.float64)
    mean = np.abs(x64.mean(axis=axes, keepdims=True))
    scale = np.sqrt(x64.var(axis=axes, keepdims=True) + epsilon)
    with np.errstate(invalid="ignore"):
        offset = np.nan_to_num(np.abs(w) * mean / scale)
    bias = 0.0 if b is None else np.abs(b)
    return 16 * EPS * (np.abs(ref - (0.0 if b is None else b)) + offset + bias) + TINY


# -- elementwise --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNARY)
def test_dense_sweep_within_stated_bound(name):
    parts = [np.linspace(-110, 95, 100_001), np.linspace(-4, 4, 50_001),
             np.geomspace(1e-30, 1e-3, 5_001), -np.geomspace(1e-30, 1e-3, 5_001),
             [0.0, -0.0, 88.72, 88.73, -103.9, -104.0, 1e30, -1e30]]
    x = np.concatenate([np.asarray(p, np.float32) for p in parts])
    if name == "gelu":
        x = x[::4]  # the float64 reference is a Python loop
    f, ref_f, bound = UNARY[name]
    v = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ref_f(v)
    y = f(G(x))
    assert isinstance(y, GpuArray)
    # Subnormal results: WGSL lets a GPU flush them to zero. gelu's far negative tail also
    # passes through subnormal intermediates (NVIDIA's Vulkan driver flushes those), so results
    # below 2**-100 in magnitude may come out as zero.
    floor = 2.0 ** -100 if name.startswith("gelu") else TINY
    assert_within(y.numpy(), ref, np.maximum(bound(v, ref), floor), name)


@pytest.mark.parametrize("name", ["relu", *UNARY])
def test_special_values_as_the_cpu(name):
    """NaN stays NaN, infinities give what the CPU gives (lavapipe keeps IEEE semantics; the
    kernels decide NaN by bit tests so that no GPU can drop it)."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 100.0, -100.0], np.float32)
    f = ops.relu if name == "relu" else UNARY[name][0]
    with np.errstate(all="ignore"):
        cpu = f(x)
    got = f(G(x)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(cpu))
    special = np.isinf(cpu) | (cpu == 0)
    np.testing.assert_array_equal(got[special], cpu[special])


@SETTINGS
@given(data=st.data())
def test_add_mul_bias_add_exact_as_the_cpu(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    x = data.draw(hnp.arrays(np.float32, shape, elements=WITH_SPECIALS))
    tail = shape[data.draw(st.integers(0, len(shape) - 1)):]
    y = data.draw(hnp.arrays(np.float32, tail, elements=FINITE))
    for f in (ops.add, ops.mul):
        with np.errstate(all="ignore"):
            expected = f(x, y)
        np.testing.assert_array_equal(f(G(x), G(y)).numpy(), expected)
        np.testing.assert_array_equal(f(G(y), G(x)).numpy(), expected)
        np.testing.assert_array_equal(f(G(x), 1.5).numpy(), f(x, 1.5))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    bias = data.draw(hnp.arrays(np.float32, (shape[axis],), elements=FINITE))
    res = data.draw(hnp.arrays(np.float32, shape, elements=FINITE))
    for act in (None, "relu"):
        with np.errstate(all="ignore"):
            expected = ops.bias_add(x, bias, residual=res, activation=act, axis=axis)
        got = ops.bias_add(G(x), G(bias), residual=G(res), activation=act, axis=axis)
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "tanh", "sigmoid"])
def test_bias_add_is_the_composition(act):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 12)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    fused = ops.bias_add(G(x), G(b), residual=G(r), activation=act, axis=1).numpy()
    s = ops.add(ops.add(G(x), G(b[:, None] * np.ones((6, 12), np.float32))), G(r))
    f = UNARY[act][0]
    np.testing.assert_array_equal(fused, f(s).numpy())


# -- logsoftmax, softmax --------------------------------------------------------------------------


@st.composite
def array_and_axis(draw, elements=FINITE):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30))
    x = draw(hnp.arrays(np.float32, shape, elements=elements))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return x, axis


@SETTINGS
@given(array_and_axis())
def test_logsoftmax_softmax_match_float64(case):
    x, axis = case
    n = x.shape[axis]
    ref = logsoftmax64(x, axis)
    assert_within(ops.logsoftmax(G(x), axis=axis).numpy(), ref, logsoftmax_bound(ref, n))
    ref = softmax64(x, axis)
    assert_within(ops.softmax(G(x), axis=axis).numpy(), ref, softmax_bound(ref))


@SETTINGS
@given(array_and_axis(elements=WITH_SPECIALS))
def test_special_values_as_the_cpu_softmax(case):
    x, axis = case
    for f in (ops.logsoftmax, ops.softmax):
        cpu = f(x, axis=axis)
        got = f(G(x), axis=axis).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(cpu))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(cpu))
        exact = np.isinf(cpu) | (cpu == 0)
        np.testing.assert_array_equal(got[exact], cpu[exact])


def test_long_rows_and_masks():
    """Rows of 32000 (each invocation loops over 32 groups), masked entries, the documented
    rows: all -inf -> NaN; a NaN or +inf -> NaN; length 1."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 32000)) * 8).astype(np.float32)
    x[1, ::3] = -np.inf
    x[2, :] = -np.inf
    x[3, 17] = np.nan
    x[4, 31999] = np.inf
    x[5] += 1e4
    ref = logsoftmax64(x, -1)
    assert_within(ops.logsoftmax(G(x)).numpy(), ref, logsoftmax_bound(ref, 32000))
    ref = softmax64(x, -1)
    assert_within(ops.softmax(G(x)).numpy(), ref, softmax_bound(ref))
    one = np.array([[3.0], [-np.inf]], np.float32)
    np.testing.assert_array_equal(ops.logsoftmax(G(one)).numpy(), ops.logsoftmax(one))
    np.testing.assert_array_equal(ops.softmax(G(one)).numpy(), ops.softmax(one))


def test_out_and_in_place():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 50)).astype(np.float32)
    g = G(x)
    out = GpuArray((4, 50), np.float32)
    assert ops.logsoftmax(g, out=out) is out
    expected = out.numpy()
    assert ops.logsoftmax(g, out=g) is g                 # in place
    np.testing.assert_array_equal(g.numpy(), expected)
    h = G(x)
    assert ops.relu(h, out=h) is h
    np.testing.assert_array_equal(h.numpy(), ops.relu(x))
    assert ops.add(h, h, out=h) is h
    np.testing.assert_array_equal(h.numpy(), 2 * ops.relu(x))


def test_errors_name_the_argument():
    g = G(np.zeros((2, 8), np.float32))
    with pytest.raises(TypeError, match="out: is a ndarray but x is not"):
        ops.logsoftmax(g, out=np.empty((2, 8), np.float32))
    with pytest.raises(TypeError, match="b: is a ndarray but a is not"):
        ops.add(g, np.zeros(8, np.float32))
    with pytest.raises(TypeError, match="x: expected float32"):
        ops.relu(G(np.zeros(4, np.int32)))
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.softmax(g, out=GpuArray((2, 7), np.float32))
    with pytest.raises(ValueError, match="bias: expected shape"):
        ops.bias_add(g, G(np.zeros(7, np.float32)))
    with pytest.raises(ValueError, match="k: the GPU kernel selects at most 128"):
        ops.log_softmax_topk(G(np.zeros((1, 300), np.float32)), 129)


# -- layer_norm ----------------------------------------------------------------------------------


def test_layer_norm_of_a_constant_row_far_from_zero():
    """var = 0: the output is the bias up to float32's error in the mean, scaled by
    1 / sqrt(epsilon) (see layer_norm_bound)."""
    x = np.full((2, 3), 101.28864, np.float32)
    w, b = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
    got = ops.layer_norm(G(x), G(w), G(b), 1e-5).numpy()
    ref = layer_norm64(x, w, b, 1e-5, -1)
    assert_within(got, ref, layer_norm_bound(x, w, b, ref, -1, 1e-5))


@SETTINGS
@given(data=st.data())
def test_layer_norm_matches_float64(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    offset = data.draw(st.sampled_from([0.0, 100.0, -3e3]))
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-50, 50, width=32))) + np.float32(offset)
    w = data.draw(hnp.arrays(np.float32, shape[axis:], elements=st.floats(-3, 3, width=32)))
    b = data.draw(st.none() | hnp.arrays(np.float32, shape[axis:], elements=st.floats(-3, 3, width=32)))
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    ref = layer_norm64(x, w, b, eps, axis)
    got = ops.layer_norm(G(x), G(w), None if b is None else G(b), eps, axis).numpy()
    assert_within(got, ref, layer_norm_bound(x, w, b, ref, axis, eps))


def test_layer_norm_long_rows_and_special_rows():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 32000)) + 1e3).astype(np.float32)
    x[2, 5] = np.nan
    x[3, 0] = -np.inf
    w = rng.standard_normal(32000).astype(np.float32)
    b = rng.standard_normal(32000).astype(np.float32)
    with np.errstate(invalid="ignore"):
        ref = layer_norm64(x, w, b, 1e-5, -1)
        bound = layer_norm_bound(x, w, b, ref, -1)
    got = ops.layer_norm(G(x), G(w), G(b)).numpy()
    assert_within(got, ref, bound)
    assert np.isnan(got[2:]).all()


# -- top-k ------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_topk_as_the_cpu(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=300))
    # few distinct values, so ties are common
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([-2.0, 0.0, 1.5, 3.0])
                             | WITH_SPECIALS))
    k = data.draw(st.integers(1, min(shape[-1], 64)))
    cpu_v, cpu_i = ops.log_softmax_topk(x, k)
    v, i = ops.log_softmax_topk(G(x), k)
    assert v.dtype == np.float32 and i.dtype == np.int32
    np.testing.assert_array_equal(i.numpy(), cpu_i)
    full = ops.logsoftmax(G(x)).numpy()
    np.testing.assert_array_equal(v.numpy(), np.take_along_axis(full, cpu_i, axis=-1))


def test_topk_long_rows_ties_beyond_the_candidate_capacity():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((3, 32000)) * 4).astype(np.float32)
    x[1] = 1.0                          # 32000 equal values: the k-rounds path
    x[2, ::2] = 7.0                     # 16000 ties at the top
    for k in (1, 8, 64, 128):
        cpu_v, cpu_i = ops.log_softmax_topk(x, k)
        v, i = ops.log_softmax_topk(G(x), k)
        np.testing.assert_array_equal(i.numpy(), cpu_i)
        full = ops.logsoftmax(G(x)).numpy()
        np.testing.assert_array_equal(v.numpy(), np.take_along_axis(full, cpu_i, axis=-1))
    out = (GpuArray((3, 8), np.float32), GpuArray((3, 8), np.int32))
    assert ops.log_softmax_topk(G(x), 8, out=out) == out


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([8197, 12288, 4100]),
       distinct=st.sampled_from([1, 3, 1000]), nan_share=st.sampled_from([0.0, 0.3, 0.9995, 1.0]),
       k=st.integers(1, 9))
def test_topk_rows_read_in_several_trips(seed, n, distinct, nan_share, k):
    """Rows longer than one trip of the workgroup, where each invocation's largest value comes
    from several trips and the threshold's owners are re-read: ties (few distinct values, -0 next
    to +0, -inf), rows of NaN with fewer than k numbers, lengths not a multiple of 4."""
    rng = np.random.default_rng(seed)
    palette = np.concatenate([rng.standard_normal(distinct) * 4, [-np.inf, -0.0, 0.0]])
    x = rng.choice(palette.astype(np.float32), size=(3, n))
    x[rng.random((3, n)) < nan_share] = np.nan
    x[2, ::3] = -np.inf
    cpu_v, cpu_i = ops.log_softmax_topk(x, k)
    v, i = ops.log_softmax_topk(G(x), k)
    np.testing.assert_array_equal(i.numpy(), cpu_i)
    full = ops.logsoftmax(G(x)).numpy()
    np.testing.assert_array_equal(v.numpy(), np.take_along_axis(full, cpu_i, axis=-1))


def test_topk_rows_sorted_either_way():
    """Rows sorted either way put the k best in one invocation's share or spread them over
    k invocations."""
    rng = np.random.default_rng(12)
    up = np.sort(rng.standard_normal(20000)).astype(np.float32)
    x = np.stack([up, up[::-1], np.repeat(up[::100], 100)])
    for k in (1, 3, 8):
        cpu_v, cpu_i = ops.log_softmax_topk(x, k)
        v, i = ops.log_softmax_topk(G(x), k)
        np.testing.assert_array_equal(i.numpy(), cpu_i)
        full = ops.logsoftmax(G(x)).numpy()
        np.testing.assert_array_equal(v.numpy(), np.take_along_axis(full, cpu_i, axis=-1))


# -- quantize ----------------------------------------------------------------------------------------

X_VALUES = st.one_of(st.floats(-300, 300, width=32), st.integers(-600, 600).map(lambda v: v / 4),
                     st.just(np.inf), st.just(-np.inf), st.just(1e30))


@st.composite
def quantize_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    x = draw(hnp.arrays(np.float32, shape, elements=X_VALUES))
    qtype = draw(st.sampled_from([np.uint8, np.int8]))
    info = np.iinfo(qtype)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    scale_el = st.sampled_from([0.5, 0.25, 1.0, 2.0, 0.1, 0.3]) | st.floats(0.015625, 4.0, width=32)
    zp_el = st.integers(int(info.min), int(info.max))
    if draw(st.booleans()):
        scale = draw(hnp.arrays(np.float32, (shape[axis],), elements=scale_el))
        zp = draw(hnp.arrays(qtype, (shape[axis],), elements=zp_el))
    else:
        scale = np.array(draw(scale_el), np.float32)
        zp = np.array(draw(zp_el), qtype)
    return x, scale, zp, axis


@pytest.fixture(params=[False, True], ids=["checked-division", "long-division"])
def exact_path(request, monkeypatch):
    """Both ways a quotient is computed: WGSL's division checked near half-integers (the usual
    path) and long division for every value (on a GPU with an inexact `/`, the path near
    half-integers; lavapipe's division is exact, so this is how CI covers it)."""
    monkeypatch.setattr(gpu_quantize, "FORCE_EXACT", request.param)
    return request.param


@SETTINGS
@given(case=quantize_case())
def test_quantize_dequantize_bit_identical_to_the_cpu(exact_path, case):
    x, scale, zp, axis = case
    expected = ops.quantize_linear(x, scale, zp, axis)
    q = ops.quantize_linear(G(x), scale, zp, axis)
    assert q.dtype == expected.dtype
    np.testing.assert_array_equal(q.numpy(), expected)
    d = ops.dequantize_linear(q, scale, zp, axis)
    np.testing.assert_array_equal(d.numpy(), ops.dequantize_linear(expected, scale, zp, axis))


def test_quantize_division_near_half_integers(exact_path):
    """Quotients within an ulp or two of k + 0.5, where an inexact division would flip rint."""
    rng = np.random.default_rng(10)
    scale = np.float32(0.1)
    halves = (rng.integers(-120, 120, 20000) + 0.5).astype(np.float32) * scale
    x = np.concatenate([np.nextafter(halves, np.float32(np.inf) * k) for k in (-1, 1)] + [halves])
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, -np.float32(np.inf))])
    expected = ops.quantize_linear(x, scale, np.int8(0))
    np.testing.assert_array_equal(ops.quantize_linear(G(x), scale, np.int8(0)).numpy(), expected)


def _no_tiny_values(floats):
    """Values of 1e-30 or more in magnitude, or 0: then max - min (which spans 0) is at least
    1e-30, and the scale (max - min) / 255 a normal float32. A GPU may flush subnormal results
    (a documented difference), which changes the scale of a range of a few subnormals."""
    return floats.map(lambda v: 0.0 if abs(v) < 1e-30 else v)


@SETTINGS
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30),
                    elements=_no_tiny_values(st.floats(-1e3, 1e3, width=32)
                                             | st.floats(0.0, 50.0, width=32)
                                             | st.floats(-50.0, 0.0, width=32))))
def test_dynamic_quantize_linear_bit_identical_to_the_cpu(exact_path, x):
    y_ref, s_ref, z_ref = ops.dynamic_quantize_linear(x)
    y, s, z = ops.dynamic_quantize_linear(G(x))
    assert all(isinstance(a, GpuArray) for a in (y, s, z))
    assert s.shape == z.shape == () and s.dtype == np.float32 and z.dtype == np.uint8
    np.testing.assert_array_equal(y.numpy(), y_ref)
    assert s.numpy().tobytes() == s_ref.tobytes()
    assert z.numpy() == z_ref


@pytest.mark.parametrize("shape", [(3 * 65536 + 5,), (131072,), (7, 10003)])
def test_dynamic_quantize_linear_over_several_workgroups(shape):
    """Inputs the min/max pass splits into several parts (65536 values each), with the extremes
    in different parts, at part edges and in the ragged end; then an inf in the last part."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    flat = x.reshape(-1)
    n = flat.size
    for lo_at, hi_at in [(n - 1, 65536), (65535, n // 2), (0, n - 2)]:
        v = flat.copy()
        v[lo_at], v[hi_at] = -41.3, 57.9
        v = v.reshape(shape)
        y_ref, s_ref, z_ref = ops.dynamic_quantize_linear(v)
        y, s, z = ops.dynamic_quantize_linear(G(v))
        np.testing.assert_array_equal(y.numpy(), y_ref)
        assert s.numpy().tobytes() == s_ref.tobytes() and z.numpy() == z_ref
    flat[n - 3] = np.inf
    _, s, z = ops.dynamic_quantize_linear(G(x))
    assert np.isnan(s.numpy()) and z.numpy() == 0


def test_quantize_special_values_differ_from_the_cpu_as_documented():
    x = np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(ops.quantize_linear(G(x), np.float32(1.0), np.int8(5)).numpy(),
                                  [5, 6, 127, -128])          # the CPU raises for the NaN
    _, s, z = ops.dynamic_quantize_linear(G(x))
    assert np.isnan(s.numpy()) and z.numpy() == 0
    y, s, z = ops.dynamic_quantize_linear(G(np.zeros((0, 3), np.float32)))
    assert y.shape == (0, 3) and s.numpy() == np.float32(1) / np.float32(255) and z.numpy() == 0


# -- chaining with gemm_i8 --------------------------------------------------------------------------


def test_a_decoder_step_chains_on_the_gpu_without_transfers():
    rng = np.random.default_rng(11)
    m, k, n = 6, 64, 300
    w1 = rng.standard_normal((k, k)).astype(np.float32)
    w2 = rng.standard_normal((k, n)).astype(np.float32)
    prepared2 = gemm.prepare_b(w2, 127 / np.abs(w2).max())
    pb1 = gemm.prepare_b(w1, 127 / np.abs(w1).max()).to_gpu()
    pb2 = prepared2.to_gpu()
    a = G(rng.standard_normal((m, k)).astype(np.float32))
    bias = G(rng.standard_normal(k).astype(np.float32))
    gamma = G(np.ones(k, np.float32))
    beta = G(np.zeros(k, np.float32))
    gemm.gemm_i8(a, pb1, a_quant_mult=30.0)             # compile everything once
    before = dict(gpu.TRANSFERS)

    h = gemm.gemm_i8(a, pb1, a_quant_mult=30.0)
    h1 = ops.bias_add(h, bias, residual=a, activation="gelu")
    h2 = ops.layer_norm(h1, gamma, beta)
    q = ops.quantize_linear(h2, np.float32(0.05), np.int8(0))
    c = gemm.gemm_i8(q, pb2)                               # int8 GPU array in, exact int32 out
    logits = gemm.gemm_i8(h2, pb2, a_quant_mult=20.0)
    y, scale, zp = ops.dynamic_quantize_linear(logits)
    probs = ops.logsoftmax(logits)
    values, ids = ops.log_softmax_topk(logits, 4)
    assert dict(gpu.TRANSFERS) == before                   # nothing crossed to the host

    # each step against the CPU op on the GPU's own input (downloaded now)
    s = ops.add(ops.add(h.numpy(), bias.numpy()), a.numpy()).astype(np.float64)
    ref = gelu_erf64(s)
    assert_within(h1.numpy(), ref, 24 * EPS * np.abs(ref) + TINY)
    ref = layer_norm64(h1.numpy(), gamma.numpy(), beta.numpy(), 1e-5, -1)
    assert_within(h2.numpy(), ref, layer_norm_bound(h1.numpy(), gamma.numpy(), beta.numpy(), ref, -1))
    np.testing.assert_array_equal(q.numpy(), ops.quantize_linear(h2.numpy(), np.float32(0.05), np.int8(0)))
    b_int8 = prepared2.quantized().astype(np.int32)
    np.testing.assert_array_equal(c.numpy(), q.numpy().astype(np.int32) @ b_int8)
    yc, sc, zc = ops.dynamic_quantize_linear(logits.numpy())
    np.testing.assert_array_equal(y.numpy(), yc)
    assert scale.numpy() == sc and zp.numpy() == zc
    ref = logsoftmax64(logits.numpy(), -1)
    assert_within(probs.numpy(), ref, logsoftmax_bound(ref, n))
    np.testing.assert_array_equal(ids.numpy(), ops.log_softmax_topk(logits.numpy(), 4)[1])



# -- the benchmark runs ------------------------------------------------------------------------------


def test_bench_ops_gpu_runs(capsys, tmp_path):
    from graph import cli

    out = tmp_path / "ops_gpu.json"
    assert cli.main(["bench", "--ops", "--backend", "gpu", "--rows", "3", "--cols", "64",
                     "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for op in ("copy", "logsoftmax", "log_softmax_topk k=8", "layer_norm", "gelu (erf)",
               "quantize_linear int8", "dynamic_quantize_linear"):
        assert op in printed
    import json
    result = json.loads(out.read_text())
    assert result["shape"] == [3, 64] and all(r["GB_s"] > 0 for r in result["rows"])


def test_layer_norm_residual_as_the_cpu_and_float32_steps_cpu_only():
    rng = np.random.default_rng(3)
    x, r = (rng.standard_normal((5, 64)).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(64).astype(np.float32) for _ in range(2))
    got = ops.layer_norm(G(x), G(w), G(b), 1e-5, residual=G(r)).numpy()
    ref = ops.layer_norm(x + r, w, b, 1e-5).astype(np.float64)
    assert_within(got, ref, layer_norm_bound(x + r, w, b, ref, -1), "layer_norm residual")
    with pytest.raises(ValueError, match="float32_steps"):
        ops.layer_norm(G(x), G(w), G(b), 1e-5, float32_steps=True)
    with pytest.raises(ValueError, match="float32_steps"):
        ops.softmax(G(x), float32_steps=True)
