"""Activations, add/mul and bias_add against numpy (exact ops) and float64 (transcendental ones),
including dense sweeps that check the accuracy bounds the docstrings state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ops_reference import EPS, TINY, assert_within, exp64, gelu_erf64, gelu_tanh64, sigmoid64

import ops

ANY_FLOAT = st.floats(width=32, allow_nan=True, allow_infinity=True)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=30)


def _gelu_tanh_bound(v, ref):
    u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)
    return 4 * EPS * (1 + 2 * np.abs(u)) * np.abs(ref) + TINY


# (op, float64 reference, bound on |y - y64| from the module docstring)
UNARY = {
    "exp": (ops.exp, exp64, lambda v, r: 2 * EPS * np.abs(r) + TINY),
    "sigmoid": (ops.sigmoid, sigmoid64, lambda v, r: 6 * EPS * np.abs(r) + TINY),
    "tanh": (ops.tanh, np.tanh, lambda v, r: 6 * EPS * np.abs(r) + TINY),
    "gelu": (ops.gelu, gelu_erf64, lambda v, r: 2 * EPS * np.abs(r) + TINY),
    "gelu_tanh": (lambda x, **kw: ops.gelu(x, approximate="tanh", **kw), gelu_tanh64,
                  _gelu_tanh_bound),
}


def _check_unary(name, x):
    f, ref_f, bound = UNARY[name]
    v = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ref_f(v)
        assert_within(f(x), ref, bound(v, ref), name)


@pytest.mark.parametrize("name", UNARY)
def test_dense_sweep_within_stated_bound(name):
    """Every float32 magnitude that matters, densely: the stated bound holds everywhere."""
    parts = [np.linspace(-110, 95, 400_001), np.linspace(-4, 4, 200_001),
             np.geomspace(1e-30, 1e-3, 20_001), -np.geomspace(1e-30, 1e-3, 20_001),
             [0.0, -0.0, np.inf, -np.inf, np.nan, 88.72, 88.73, -103.9, -104.0, 1e30, -1e30]]
    x = np.concatenate([np.asarray(p, np.float32) for p in parts])
    if name == "gelu":
        x = x[::5]  # the float64 reference is a Python loop
    _check_unary(name, x)


@pytest.mark.parametrize("name", UNARY)
@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, SHAPES, elements=ANY_FLOAT))
def test_unary_any_shape_any_value(name, x):
    _check_unary(name, x)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, SHAPES, elements=ANY_FLOAT))
def test_relu_as_numpy(x):
    np.testing.assert_array_equal(ops.relu(x), np.maximum(x, np.float32(0)))


@st.composite
def broadcast_pair(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=20))
    cut = draw(st.integers(0, len(shape)))
    small = shape[cut:]
    ones = draw(st.integers(0, 2))
    small = (1,) * ones + small
    a = draw(hnp.arrays(np.float32, shape, elements=ANY_FLOAT))
    b = draw(hnp.arrays(np.float32, small, elements=ANY_FLOAT))
    return (a, b) if draw(st.booleans()) else (b, a)


@settings(max_examples=60, deadline=None)
@given(broadcast_pair())
def test_add_mul_exact_as_numpy(pair):
    a, b = pair
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ops.add(a, b), a + b)
        np.testing.assert_array_equal(ops.mul(a, b), a * b)
        assert ops.add(a, b).shape == np.broadcast_shapes(a.shape, b.shape)


def test_add_mul_scalars_and_threads():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 700)).astype(np.float32)
    y = rng.standard_normal((300, 700)).astype(np.float32)
    np.testing.assert_array_equal(ops.add(x, 1.5), x + np.float32(1.5))
    np.testing.assert_array_equal(ops.mul(2, x), x * np.float32(2))
    np.testing.assert_array_equal(ops.mul(x, np.float32(3)), x * np.float32(3))
    for threads in (1, 2):
        np.testing.assert_array_equal(ops.add(x, y, threads=threads), x + y)
        np.testing.assert_array_equal(ops.mul(x, y[0], threads=threads), x * y[0])
        np.testing.assert_array_equal(ops.exp(x, threads=threads), ops.exp(x, threads=1))
    out = np.empty_like(x)
    assert ops.add(x, y, out=out) is out


def test_add_mul_refused_broadcasts():
    a = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="b: shape"):
        ops.add(a, np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        ops.add(a, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="expands both"):
        ops.mul(np.zeros((4, 1), np.float32), np.zeros((1, 5), np.float32))
    with pytest.raises(TypeError, match="b: expected float32"):
        ops.add(a, np.zeros(5, np.float64))
    with pytest.raises(TypeError, match="b: expected a float32 array or a number"):
        ops.add(a, True)
    with pytest.raises(ValueError, match="b: .* overflows float32"):
        ops.add(a, 1e300)


ACTIVATIONS = [None, "relu", "gelu", "gelu_tanh", "tanh", "sigmoid"]
_APPLY = {None: lambda v: v, "relu": ops.relu, "gelu": ops.gelu,
          "gelu_tanh": lambda v: ops.gelu(v, approximate="tanh"), "tanh": ops.tanh,
          "sigmoid": ops.sigmoid}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_bias_add_equals_the_composition(activation, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=16))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    finite = st.floats(-100, 100, width=32)
    x = data.draw(hnp.arrays(np.float32, shape, elements=finite))
    bias = data.draw(hnp.arrays(np.float32, (shape[axis],), elements=finite))
    residual = data.draw(st.none() | hnp.arrays(np.float32, shape, elements=finite))
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    expected = x + bias.reshape(bshape)
    if residual is not None:
        expected = expected + residual
    expected = _APPLY[activation](np.ascontiguousarray(expected, np.float32))
    got = ops.bias_add(x, bias, residual=residual, activation=activation, axis=axis)
    np.testing.assert_array_equal(got, expected)


def test_bias_add_threads_in_place_and_errors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((512, 1024)).astype(np.float32)
    b = rng.standard_normal(1024).astype(np.float32)
    r = rng.standard_normal((512, 1024)).astype(np.float32)
    one = ops.bias_add(x, b, residual=r, activation="gelu_tanh", threads=1)
    np.testing.assert_array_equal(ops.bias_add(x, b, residual=r, activation="gelu_tanh",
                                               threads=2), one)
    y = x.copy()
    ops.bias_add(y, b, residual=r, activation="gelu_tanh", out=y)
    np.testing.assert_array_equal(y, one)
    with pytest.raises(ValueError, match=r"bias: expected shape \(1024,\)"):
        ops.bias_add(x, b[:5])
    with pytest.raises(ValueError, match="residual: expected x's shape"):
        ops.bias_add(x, b, residual=r[:3])
    with pytest.raises(ValueError, match="activation"):
        ops.bias_add(x, b, activation="swish")
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(x, approximate="fast")
    with pytest.raises(TypeError, match="x: expected float32"):
        ops.relu(x.astype(np.float64))
