"""layer_norm against float64 numpy (ONNX LayerNormalization semantics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx.reference.ops.op_layer_normalization import _layer_normalization
from ops_reference import EPS, assert_within, layer_norm64

import ops

FINITE = st.floats(-1e4, 1e4, width=32)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_layer_norm_matches_float64(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(hnp.arrays(np.float32, shape, elements=FINITE))
    w = data.draw(hnp.arrays(np.float32, shape[axis:], elements=st.floats(-4, 4, width=32)))
    b = data.draw(st.none() | hnp.arrays(np.float32, shape[axis:], elements=st.floats(-4, 4, width=32)))
    epsilon = data.draw(st.sampled_from([0.0, 1e-12, 1e-5, 0.1]))
    ref = layer_norm64(x, w, b, epsilon, axis)
    bias_term = 0 if b is None else np.abs(b)
    bound = 2 * EPS * np.abs(np.nan_to_num(ref)) + 2 * EPS * bias_term + 2.0 ** -126
    got = ops.layer_norm(x, w, b, epsilon, axis=axis)
    if epsilon == 0.0:
        # A constant row has variance 0: 0/0 is NaN in both; compare where defined.
        defined = ~np.isnan(ref)
        assert_within(got[defined], ref[defined], np.broadcast_to(bound, ref.shape)[defined])
        assert np.isnan(got[~defined]).all()
    else:
        assert_within(got, ref, bound, "layer_norm")


def test_special_rows_and_threads():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2048, 512)).astype(np.float32) * 3 + 10
    x[0, 5] = np.nan
    x[1, 7] = np.inf
    w = rng.standard_normal(512).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    one = ops.layer_norm(x, w, b, 1e-5, threads=1)
    np.testing.assert_array_equal(ops.layer_norm(x, w, b, 1e-5, threads=2), one)
    assert np.isnan(one[:2]).all() and np.isfinite(one[2:]).all()
    y = x.copy()
    ops.layer_norm(y, w, b, 1e-5, out=y)
    np.testing.assert_array_equal(y, one)


@pytest.mark.parametrize("width", [4096, 4097, 3 * 4096 + 11])
def test_long_rows_far_from_zero_and_outliers(width):
    """Rows longer than one statistics piece (4096 values, each summed about its first value),
    with a large offset and an outlier opening every piece (the worst case for the shift)."""
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((3, width)) + 1e4).astype(np.float32)
    x[1, ::4096] = -3e4
    x[2] = rng.standard_normal(width).astype(np.float32) * 1e-3
    x[2, ::4096] = 50.0
    w = rng.standard_normal(width).astype(np.float32)
    b = rng.standard_normal(width).astype(np.float32)
    for bias in (b, None):
        ref = layer_norm64(x, w, bias, 1e-5, -1)
        bias_term = 0 if bias is None else np.abs(bias)
        bound = 2 * EPS * np.abs(ref) + 2 * EPS * bias_term + 2.0 ** -126
        assert_within(ops.layer_norm(x, w, bias, 1e-5), ref, bound, "layer_norm long rows")


def test_errors():
    x = np.zeros((3, 4), np.float32)
    w = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\)"):
        ops.layer_norm(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"bias: expected shape \(3, 4\)"):
        ops.layer_norm(x, np.ones((3, 4), np.float32), w, axis=0)
    with pytest.raises(TypeError, match="weight: expected float32"):
        ops.layer_norm(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="epsilon"):
        ops.layer_norm(x, w, None, -1.0)
    with pytest.raises(TypeError, match="epsilon"):
        ops.layer_norm(x, w, None, "1e-5")
    with pytest.raises(TypeError, match="weight: expected a numpy.ndarray"):
        ops.layer_norm(x, [1.0] * 4)


# -- float32_steps and residual: onnx's reference evaluator, bit for bit -------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_float32_steps_equal_onnx_reference(data):
    """Row lengths around numpy's pairwise-sum block (128) and its splits (256, 512, ...)."""
    rows = data.draw(st.integers(1, 6))
    n = data.draw(st.sampled_from([1, 5, 8, 9, 64, 127, 128, 129, 136, 255, 256, 257, 263, 384,
                                   512, 520, 1000, 1024, 1031, 3000]))
    scale = data.draw(st.sampled_from([1e-3, 1.0, 50.0]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * scale + rng.uniform(-5, 5)).astype(np.float32)
    r = rng.standard_normal((rows, n)).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    b = data.draw(st.none() | st.just(rng.standard_normal(n).astype(np.float32)))
    epsilon = data.draw(st.sampled_from([1e-5, 1e-12, 0.1]))
    ref = _layer_normalization(x + r, w, b, axis=-1, epsilon=epsilon)[0]
    np.testing.assert_array_equal(
        ops.layer_norm(x, w, b, epsilon, residual=r, float32_steps=True), ref)
    np.testing.assert_array_equal(ops.layer_norm(x + r, w, b, epsilon, float32_steps=True), ref)


def test_pairwise_sum_is_numpys_float32_sum_bit_for_bit():
    """The float32_steps kernels sum rows as np.sum does (ops/cpu/pairwise.py): every length up to
    600 and some beyond, on values of mixed magnitude where the order of additions shows; rows of
    -0.0 sum to 0.0."""
    from ops.cpu.pairwise import pairwise_sum
    rng = np.random.default_rng(5)
    scratch, stack = np.empty(64, np.float32), np.empty((64, 3), np.int64)
    for n in [*range(0, 600), 1000, 1024, 1031, 4099, 10000, 65537]:
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 6, n)).astype(np.float32)
        offset = np.empty(n + 3, np.float32)[3:]   # rows need not start 32-byte aligned
        offset[:] = x
        for row in (x, offset, np.full(n, -0.0, np.float32)):
            got = pairwise_sum(row, scratch, stack)
            assert np.float32(got).view(np.uint32) == np.sum(row).view(np.uint32), n


def test_short_rows_summed_side_by_side_are_numpys_sums_bit_for_bit():
    """short_row_sums (four rows at a time, for softmax and layer norm): each equals np.sum of
    its row, for every length it takes (up to 256), rows of -0.0, and rows holding inf and NaN."""
    from ops.cpu.pairwise import ROWS_AT_ONCE, short_row_sums, sums_side_by_side
    rng = np.random.default_rng(6)
    sums = np.empty(2 * ROWS_AT_ONCE, np.float32)
    lengths = [n for n in range(1, 300) if sums_side_by_side(n)]
    assert 256 in lengths and 257 not in lengths and 255 not in lengths
    for n in lengths:
        x = (rng.standard_normal((ROWS_AT_ONCE + 3, n)) * 10.0 ** rng.integers(-3, 6, (1, n))
             ).astype(np.float32)
        x[4] = -0.0
        x[5, n // 2] = np.inf
        x[6, n - 1] = np.nan
        for row in (0, 3):
            short_row_sums(x, row, sums)
            with np.errstate(invalid="ignore"):
                expected = np.sum(x[row:row + ROWS_AT_ONCE], axis=1)
            np.testing.assert_array_equal(sums[:ROWS_AT_ONCE].view(np.uint32),
                                          expected.view(np.uint32))


def test_float32_steps_over_several_axes_threads_and_in_place():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 6, 40)).astype(np.float32)
    w = rng.standard_normal((6, 40)).astype(np.float32)
    b = rng.standard_normal((6, 40)).astype(np.float32)
    ref = _layer_normalization(x, w, b, axis=1, epsilon=1e-5)[0]
    one = ops.layer_norm(x, w, b, 1e-5, axis=1, float32_steps=True, threads=1)
    np.testing.assert_array_equal(one, ref)
    np.testing.assert_array_equal(
        ops.layer_norm(x, w, b, 1e-5, axis=1, float32_steps=True, threads=2), ref)
    ops.layer_norm(x, w, b, 1e-5, axis=1, float32_steps=True, out=x)
    np.testing.assert_array_equal(x, ref)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_residual_is_added_first(data):
    """The float64 path too: layer_norm(x, residual=r) is layer_norm(x + r), bit for bit."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=30))
    x = data.draw(hnp.arrays(np.float32, shape, elements=FINITE))
    r = data.draw(hnp.arrays(np.float32, shape, elements=FINITE))
    w = np.ones(shape[-1], np.float32)
    np.testing.assert_array_equal(ops.layer_norm(x, w, residual=r), ops.layer_norm(x + r, w))


def test_residual_errors():
    x = np.zeros((3, 4), np.float32)
    w = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"residual: expected x's shape \(3, 4\)"):
        ops.layer_norm(x, w, residual=np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="residual: expected float32"):
        ops.layer_norm(x, w, residual=np.zeros((3, 4)))
