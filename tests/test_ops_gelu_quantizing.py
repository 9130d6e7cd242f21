"""ops.gelu(quantized_only=True): the exact range, and every value quantizing to the same integer
as the exact float32 steps' value under DynamicQuantizeLinear's scale and zero point from that
range. Here: the close Gelu's error against the bound the argument assumes (the module's comment
records the exhaustive check), hypothesis over shapes and values, inputs built to land on the
quantizer's rounding midpoints and on Gelu's flat minimum -- where the close values alone would
quantize differently, so these tests fail if either fix-up step is skipped -- and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit, prange

import ops
from ops.cpu import gelu_quantizing
from ops.cpu.elementwise import erf_chunks
from ops.cpu.gelu_quantizing import AROUND_MIN, CLOSE_PER_X, NEAR_MIN, gelu_close_f32
from ops.quantize import dynamic_scale_and_zero_point


@njit(cache=False)
def _close(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = gelu_close_f32(x[i])
    return out


def _exact(x):
    return ops.gelu(x, float32_steps=True)


def _quantized(y, scale, zero_point):
    """DynamicQuantizeLinear's integers of y (as ops.quantize_linear computes them)."""
    return ops.quantize_linear(y, np.float32(scale), np.uint8(zero_point))


def _check(x, threads=None):
    """quantized_only's range equals the exact one and its values quantize identically."""
    exact, exact_range = ops.gelu(x, float32_steps=True, with_range=True, threads=threads)
    y, found = ops.gelu(x, float32_steps=True, with_range=True, quantized_only=True,
                        threads=threads)
    assert y.shape == x.shape and y.dtype == np.float32
    assert found.non_finite == exact_range.non_finite
    if found.non_finite:   # no scale exists; then every value is exact
        np.testing.assert_array_equal(y, exact)
        return y
    assert (found.min, found.max) == (exact_range.min, exact_range.max) or x.size == 0
    if x.size:
        scale, zero_point = dynamic_scale_and_zero_point(found.min, found.max)
        if scale == 0:   # the range's scale underflows (every y subnormal): every value exact
            np.testing.assert_array_equal(y, exact)
            return y
        np.testing.assert_array_equal(_quantized(y, scale, zero_point),
                                      _quantized(exact, scale, zero_point))
    return y


def test_close_gelu_error_is_within_the_bound_on_a_dense_sweep():
    """Every 512th float32 in [-8, 8] and 2**20 random bit patterns: |y~ - y| <= CLOSE_PER_X |x|,
    and y~ == y where both erfs are +-1 (|x| >= 5.558), infinities included."""
    top = np.array(8.0, np.float32).view(np.uint32)
    bits = np.arange(0, int(top), 512, dtype=np.uint32)
    x = np.concatenate([bits.view(np.float32), -bits.view(np.float32),
                        np.random.default_rng(0).integers(0, 2**32, 2**20, dtype=np.uint64)
                        .astype(np.uint32).view(np.float32)])
    x = x[np.isfinite(x)]
    close, exact = _close(x), _exact(x)
    far = np.abs(x) >= np.float32(5.558)
    np.testing.assert_array_equal(close[far], exact[far])
    x, close, exact = x[~far], close[~far], exact[~far]
    error = np.abs(close.astype(np.float64) - exact.astype(np.float64))
    assert np.all(error <= CLOSE_PER_X * np.abs(x.astype(np.float64)))
    # The bound is not slack beyond reason: the close values do differ, by up to a third of it.
    assert np.max(error / np.maximum(np.abs(x), 1e-30)) > CLOSE_PER_X / 3


_SPAN = 1 << 16


@njit(parallel=True, cache=False)
def _scan_floats(lo_bits, hi_bits, near, around):
    """Over the float32 whose bit patterns lie in lo_bits..hi_bits (all of one sign), Gelu's exact
    float32 steps y: (the max of y over x in `near`, the min of y over x < 0 outside `around`, how
    many x >= 0 have y < 0 or y below the y of the next smaller float32)."""
    spans = (hi_bits - lo_bits + _SPAN - 1) // _SPAN
    near_max = np.full(spans, -np.inf, np.float32)
    outside_min = np.full(spans, np.inf, np.float32)
    wrong = np.zeros(spans, np.int64)
    for s in prange(spans):
        first = lo_bits + s * _SPAN
        # One value more than the span: the next span's first, so that no step goes unchecked.
        bits = np.arange(first, min(first + _SPAN + 1, hi_bits + 1)).astype(np.uint32)
        x = bits.view(np.float32)
        y = np.empty_like(x)
        erf_chunks(x, y, True)
        for i in range(x.shape[0]):
            v, g = x[i], y[i]
            if v >= 0:
                if g < 0 or (i and g < y[i - 1]):
                    wrong[s] += 1
            elif near[0] <= v <= near[1]:
                near_max[s] = max(near_max[s], g)
            elif not around[0] <= v <= around[1]:
                outside_min[s] = min(outside_min[s], g)
    return near_max.max(), outside_min.min(), wrong.sum()


def _bits(v):
    return int(np.float32(v).view(np.uint32))


def test_the_windows_around_gelus_minimum_hold_for_every_float32():
    """The rule that finds the min of y from x alone (gelu_quantizing.NEAR_MIN): every x < 0
    outside AROUND_MIN has a larger y than every x in NEAR_MIN; and for x >= 0, y >= 0 and y
    never falls as x grows (the max of y is the y of the max of x). Checked here where it is not
    evident (2**-10 <= |x| <= 6; below, |y| <= |x| / 2; beyond, erf is +-1, y is -0 for x < 0
    and x for x > 0); the module's comment records the check over all 2**32."""
    near, around = np.array(NEAR_MIN), np.array(AROUND_MIN)
    near_max, outside_min, _ = _scan_floats(_bits(-2.0**-10), _bits(-6.0), near, around)
    assert near_max < outside_min
    assert _scan_floats(_bits(2.0**-10), _bits(6.0), near, around)[2] == 0
    # The check can fail: windows a tenth as wide do (Gelu is flatter there than float32's
    # steps are fine).
    middle = np.float32(-0.75168604)
    narrow = np.array([middle - 1e-4, middle + 1e-4], np.float32)
    near_max, outside_min, _ = _scan_floats(_bits(-0.7), _bits(-0.8), narrow, 2 * narrow - middle)
    assert near_max >= outside_min


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 3000),
                    elements=st.floats(-8, 8, width=32)),
       near=hnp.arrays(np.float32, st.integers(1, 50),
                       elements=st.floats(-0.00299072265625, 0.00299072265625, width=32)),
       threads=st.sampled_from([1, 2]))
def test_values_with_some_near_gelus_minimum(x, near, threads):
    """The range found from x alone (some x within 1e-3 of Gelu's minimiser): exact, and every
    value quantizing as the exact one."""
    _check(np.concatenate([x, np.float32(-0.75168604) + near]).astype(np.float32), threads)


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=70),
                    elements=st.floats(-12, 12, width=32)),
       scale=st.sampled_from([1e-30, 1e-3, 0.1, 1.0, 3.0, 100.0]),
       threads=st.sampled_from([1, 2]))
def test_any_shape_and_values_quantize_as_the_exact_values(x, scale, threads):
    _check((x * np.float32(scale)).astype(np.float32), threads)


def test_large_normal_input_on_several_threads():
    x = np.random.default_rng(1).standard_normal((700, 1000)).astype(np.float32)
    _check(x, threads=2)
    _check(x * np.float32(1.7), threads=3)


def _midpoint_inputs(rng, others: int):
    """(x, scale, zero_point): x whose exact Gelu lies within 1e-7 of a rounding midpoint of the
    final scale (found by a search over a dense float32 grid), among `others` normal values and
    the two that fix the range (Gelu's minimum, and the max), shuffled. Some of them the close
    values alone quantize to the other integer (asserted: the tests using them have teeth)."""
    ends = np.array([-0.7518, 4.0], np.float32)
    exact_ends = _exact(ends)
    scale, zero_point = dynamic_scale_and_zero_point(exact_ends.min(), exact_ends.max())
    grid = np.linspace(-4.0, 4.0, 2_000_001, dtype=np.float32)
    r = _exact(grid).astype(np.float64) / np.float64(scale)
    near = grid[np.abs(r - np.floor(r) - 0.5) < 2e-4]
    assert near.size > 100
    x = np.concatenate([ends, near, rng.standard_normal(others).astype(np.float32) * 1.3])
    x = np.clip(x, -4.0, 4.0).astype(np.float32)
    rng.shuffle(x)
    assert np.any(_quantized(_close(x), scale, zero_point) !=
                  _quantized(_exact(x), scale, zero_point))
    return x, scale, zero_point


def test_values_on_the_quantizers_rounding_midpoints():
    """Values on the quantizer's rounding midpoints (_midpoint_inputs): quantizing the close
    values alone gets some wrong; the result must not."""
    x, scale, zero_point = _midpoint_inputs(np.random.default_rng(2), 5000)
    y = _check(x)
    found = ops.gelu(x, float32_steps=True, with_range=True, quantized_only=True)[1]
    assert dynamic_scale_and_zero_point(found.min, found.max) == (scale, zero_point)
    assert np.any(y != _exact(x))   # and it is not merely the exact path


def test_range_is_exact_where_gelu_is_flat_at_its_minimum():
    """Thousands of x around Gelu's minimum (x = -0.7518): y~ alone misplaces the minimum."""
    x = (np.float32(-0.7518) + np.linspace(-3e-3, 3e-3, 40_001, dtype=np.float32)).astype(
        np.float32)
    x = np.concatenate([x, np.array([2.5], np.float32)])
    np.random.default_rng(3).shuffle(x)
    assert _close(x).min() != _exact(x).min()   # has teeth
    _check(x)
    _check(x.reshape(1, -1), threads=2)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_give_the_exact_values_and_count(special):
    x = np.random.default_rng(4).standard_normal(50_000).astype(np.float32)
    x[1234] = special
    y = _check(x, threads=2)
    np.testing.assert_array_equal(y, _exact(x))


def test_every_value_equal_gives_the_exact_values():
    """A zero scale (every y the same): nothing to quantize by, so every value is exact."""
    for value in (0.0, -30.0, 7.0):
        x = np.full(3000, value, np.float32)
        y, found = ops.gelu(x, float32_steps=True, with_range=True, quantized_only=True)
        np.testing.assert_array_equal(y, _exact(x))


def test_empty():
    y, found = ops.gelu(np.zeros((0, 4), np.float32), float32_steps=True, with_range=True,
                        quantized_only=True)
    assert y.shape == (0, 4) and found.min > found.max and found.non_finite == 0


def test_arguments():
    x = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="quantized_only"):
        ops.gelu(x, quantized_only=True, with_range=True)
    with pytest.raises(ValueError, match="quantized_only"):
        ops.gelu(x, float32_steps=True, quantized_only=True)
    with pytest.raises(ValueError, match="out"):
        ops.gelu(x, float32_steps=True, with_range=True, quantized_only=True, out=x)
    y = np.empty_like(x)
    assert ops.gelu(x, float32_steps=True, with_range=True, quantized_only=True, out=y)[0] is y


def test_rounding_tolerances_cover_the_error_and_the_roundings():
    inv_scale, tol0, tol1 = gelu_quantizing.rounding_tolerances(0.02)
    assert tol0 >= gelu_quantizing.CLOSE_ERROR / 0.02 and tol1 >= 2.0**-22


# -- ops.gelu_dynamic_quantize_linear: the uint8 values, scale and zero point --------------------


def _check_quantized(x, threads=None):
    """DynamicQuantizeLinear(Gelu(x)) in one op equals the two ops one after the other."""
    q, scale, zero_point = ops.gelu_dynamic_quantize_linear(x, threads=threads)
    q0, scale0, zero_point0 = ops.dynamic_quantize_linear(_exact(x))
    assert q.shape == x.shape and q.dtype == np.uint8
    assert (scale, zero_point) == (scale0, zero_point0)
    assert type(scale) is np.float32 and type(zero_point) is np.uint8
    np.testing.assert_array_equal(q, q0)
    return q


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 3000), elements=st.floats(-8, 8, width=32)),
       near=hnp.arrays(np.float32, st.integers(0, 50),
                       elements=st.floats(-0.00299072265625, 0.00299072265625, width=32)),
       scale=st.sampled_from([1e-3, 0.3, 1.0, 40.0]),
       threads=st.sampled_from([1, 2]))
def test_quantized_gelu_equals_the_two_ops(x, near, scale, threads):
    """With and without x near Gelu's minimiser (the range from x alone, or the two ops)."""
    x = np.concatenate([x * np.float32(scale), np.float32(-0.75168604) + near])
    _check_quantized(x.astype(np.float32), threads)


def test_quantized_gelu_on_the_quantizers_rounding_midpoints():
    """Values on the quantizer's rounding midpoints (_midpoint_inputs), with values near Gelu's
    minimiser, so that the range comes from x alone."""
    x, _, _ = _midpoint_inputs(np.random.default_rng(12), 20_000)
    assert gelu_quantizing._range_from_x(x, 1, x.size, 1) is not None   # the range from x alone
    _check_quantized(x)
    _check_quantized(x.reshape(1, -1), threads=2)


@pytest.mark.parametrize("case", ["all negative", "none near the minimiser", "all positive",
                                  "huge", "one value", "subnormal"])
def test_quantized_gelu_where_the_range_needs_the_values(case):
    """Inputs the rule from x alone does not cover (the two ops then run), or covers by its
    other branches (every x >= 0)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal(70_000).astype(np.float32)
    x = {"all negative": -np.abs(x) - np.float32(0.01),
         "none near the minimiser": x[np.abs(x + np.float32(0.7517)) > 0.01],
         "all positive": np.abs(x),
         "huge": np.append(x, np.float32(3e38)),
         "one value": np.array([-0.75], np.float32),
         # Gelu's range so small that DynamicQuantizeLinear's scale underflows to 0.
         "subnormal": np.array([3e-43, 0.0, 1e-44, 2e-43], np.float32)}[case]
    if case == "huge":   # Gelu is inf there: no scale represents it, as for the two ops
        with pytest.raises(ValueError, match="NaN or infinite"):
            ops.gelu_dynamic_quantize_linear(x)
        with pytest.raises(ValueError, match="NaN or infinite"):
            ops.dynamic_quantize_linear(_exact(x))
        return
    _check_quantized(x, threads=2)


def test_quantized_gelu_nan_empty_and_out():
    x = np.random.default_rng(14).standard_normal((300, 70)).astype(np.float32)
    x[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        ops.gelu_dynamic_quantize_linear(x)
    q, scale, zero_point = ops.gelu_dynamic_quantize_linear(np.zeros((0, 3), np.float32))
    assert q.shape == (0, 3) and (scale, zero_point) == ops.dynamic_quantize_linear(
        np.zeros((0, 3), np.float32))[1:]
    x[5, 5] = 0.0
    out = np.empty(x.shape, np.uint8)
    assert ops.gelu_dynamic_quantize_linear(x, out=out)[0] is out
    np.testing.assert_array_equal(out, ops.dynamic_quantize_linear(_exact(x))[0])
    with pytest.raises(TypeError, match="out: expected dtype uint8"):
        ops.gelu_dynamic_quantize_linear(x, out=np.empty(x.shape, np.int8))
    with pytest.raises(TypeError, match="x"):
        ops.gelu_dynamic_quantize_linear(x.astype(np.float64))
