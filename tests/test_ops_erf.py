"""ops.erf and ops.gelu(float32_steps=True): bit for bit what onnx's reference evaluator computes
(float32(math.erf(float(x))) for Erf, and the float32 steps of torch's exported Gelu chain).

The fast float64 erf decides the rounding for all but the inputs near a float32 rounding midpoint,
which go to the C library; every one of the 2**32 float32 inputs was checked once against
float32(math.erf) with no difference. Here: dense sweeps over the whole range that matters, the
special values, hypothesis over shapes, layouts and values, and the two halves of that argument
on their own: the approximation's error against the bound the guard assumes, and the guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

import ops
from ops.cpu.mathfuncs import ERF_REL_ERROR, ERF_X_MAX, EXACT_FLAGS, erf_f64, erf_guard

ANY_FLOAT = st.floats(width=32, allow_nan=True, allow_infinity=True)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40)
_REFERENCE_ERF = np.vectorize(math.erf, otypes=["f"])   # onnx.reference's Erf


def _reference_gelu(x):
    """The five ONNX nodes torch exports for Gelu, evaluated one by one in float32."""
    x = np.asarray(x, np.float32)
    t = x / np.float32(math.sqrt(2.0))
    e = _REFERENCE_ERF(t) if t.size else t
    with np.errstate(over="ignore", invalid="ignore"):   # x = +-inf, as the nodes would
        return (x * (e + np.float32(1.0))) * np.float32(0.5)


def _same(a, b):
    np.testing.assert_array_equal(a, b)   # NaN equals NaN here
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape


def _sweep():
    """Every magnitude erf distinguishes, densely, with both signs and the special values."""
    parts = [np.linspace(-4.5, 4.5, 300_001), np.linspace(0.99, 1.01, 20_001),
             np.linspace(3.8, 4.1, 20_001), np.geomspace(1e-45, 1.0, 50_001),
             -np.geomspace(1e-45, 1.0, 50_001), np.geomspace(4.0, 3e38, 1_001),
             [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 4.0, -4.0]]
    return np.concatenate([np.asarray(p, np.float32) for p in parts])


def test_erf_dense_sweep_equals_reference():
    x = _sweep()
    _same(ops.erf(x), _REFERENCE_ERF(x))


def test_erf_every_float32_in_one_binade_equals_reference():
    """All 2**23 float32 values of [1, 2), where float32(erf) sits just below 1 (0.84 to 0.995)
    and the rounding is decided most finely relative to the value."""
    x = (np.arange(1 << 23, dtype=np.uint32) + np.uint32(0x3F800000)).view(np.float32)
    _same(ops.erf(x), _REFERENCE_ERF(x))


@njit(error_model="numpy", fastmath=EXACT_FLAGS)
def _erf_f64_and_guard(x, y, flags):
    for i in range(x.shape[0]):
        y[i] = erf_f64(x[i])
        flags[i] = erf_guard(y[i], x[i])


@njit(error_model="numpy", fastmath=EXACT_FLAGS)
def _erf_guard_array(y, x, flags):
    for i in range(y.shape[0]):
        flags[i] = erf_guard(y[i], x[i])


def _fast_erf(x):
    x = np.asarray(x, np.float64)
    y, flags = np.empty_like(x), np.empty(x.shape, np.bool_)
    _erf_f64_and_guard(x, y, flags)
    return y, flags


def test_erf_f64_error_stays_9x_below_the_guard_bound():
    """The guard is only as good as ERF_REL_ERROR: a coarser fit fails here (the measured maximum
    over every float32 in (0, 3.93] is 5.25e-13, near 0)."""
    x = np.concatenate([np.linspace(0.0, ERF_X_MAX, 1_000_001, dtype=np.float32)[1:],
                        np.geomspace(1e-30, 1.0, 100_001, dtype=np.float32)]).astype(np.float64)
    x = np.concatenate([x, -x])
    y, _ = _fast_erf(x)
    exact = np.vectorize(math.erf)(x)
    assert np.max(np.abs(y - exact) / np.abs(exact)) <= ERF_REL_ERROR / 9


def test_erf_guard_flags_every_value_the_bound_could_round_the_other_way():
    """Unflagged y round like everything within ERF_REL_ERROR |y| of them, over many binades and
    right around rounding midpoints; subnormal inputs (rounded at 2**-149) are flagged, and the
    saturated range (erf rounds to +-1) is not."""
    rng = np.random.default_rng(7)
    f32 = np.geomspace(1e-37, 1.0, 4_000, dtype=np.float32)
    mid = (f32.astype(np.float64) + np.nextafter(f32, np.float32(2.0)).astype(np.float64)) / 2
    steps = np.arange(-60_000, 60_001, 137)
    y = np.concatenate([(mid[:, None] * (1 + steps * 2.0**-52)).ravel(), rng.random(200_000)])
    y = np.concatenate([y, -y])
    ones = np.ones_like(y)
    flags = np.empty(y.shape, np.bool_)
    _erf_guard_array(y, ones, flags)
    d = np.abs(y) * ERF_REL_ERROR
    free = ~flags
    np.testing.assert_array_equal((y[free] - d[free]).astype(np.float32),
                                  (y[free] + d[free]).astype(np.float32))
    assert 0 < np.count_nonzero(flags[-200_000:]) < 200   # random y: a few in 10**4 flagged
    sub = np.array([1e-45, -1e-40, 1.17e-38, 0.0, -0.0], np.float32).astype(np.float64)
    _, sub_flags = _fast_erf(sub)
    np.testing.assert_array_equal(sub_flags, [True, True, True, False, False])
    big = np.array([ERF_X_MAX, 3.95, 10.0, 3e38, np.inf], np.float64)
    big = np.concatenate([big, -big])
    y_big, big_flags = _fast_erf(big)
    assert not big_flags.any() and np.all(np.abs(y_big.astype(np.float32)) == 1.0)


def test_gelu_float32_steps_dense_sweep_equals_reference_chain():
    x = np.concatenate([_sweep()[::3], np.linspace(-10, 10, 100_001, dtype=np.float32)])
    _same(ops.gelu(x, float32_steps=True), _reference_gelu(x))


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, SHAPES, elements=ANY_FLOAT), transpose=st.booleans())
def test_any_shape_layout_and_value(x, transpose):
    if transpose and x.ndim >= 2:
        x = x.swapaxes(0, 1)   # a non-contiguous view
    _same(ops.erf(x), _REFERENCE_ERF(x) if x.size else x.astype(np.float32))
    _same(ops.gelu(x, float32_steps=True), _reference_gelu(x))


def test_threads_out_and_in_place():
    x = np.random.default_rng(3).standard_normal(300_001).astype(np.float32) * 3
    one = ops.gelu(x, float32_steps=True, threads=1)
    _same(ops.gelu(x, float32_steps=True, threads=2), one)
    y = x.copy()
    ops.gelu(y, float32_steps=True, out=y)
    _same(y, one)
    e = ops.erf(x, threads=1)
    _same(ops.erf(x, threads=2), e)
    ops.erf(x, out=x)
    _same(x, e)


def test_float32_steps_is_only_for_the_erf_form():
    with pytest.raises(ValueError, match="float32_steps"):
        ops.gelu(np.zeros(3, np.float32), approximate="tanh", float32_steps=True)
    with pytest.raises(TypeError, match="x: expected float32"):
        ops.erf(np.zeros(3))
