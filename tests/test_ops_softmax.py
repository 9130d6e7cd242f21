"""logsoftmax and softmax against float64 numpy, over shapes, axes and special values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ops_reference import EPS, assert_within, logsoftmax64, softmax64

import ops

FINITE = st.floats(-1e4, 1e4, width=32)
# Mostly ordinary values, sometimes -inf (masked logits), NaN or +inf.
WITH_SPECIALS = st.one_of(FINITE, FINITE, FINITE, FINITE, FINITE, FINITE,
                          st.just(-np.inf), st.just(np.nan), st.just(np.inf))


def logsoftmax_bound(ref, n):
    return 4 * EPS * (np.abs(np.nan_to_num(ref, posinf=0, neginf=0)) + np.log(max(n, 1)) + 1)


def softmax_bound(ref):
    return 8 * EPS * np.nan_to_num(ref) + EPS


@st.composite
def array_and_axis(draw, elements=FINITE, max_side=40):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=max_side))
    x = draw(hnp.arrays(np.float32, shape, elements=elements))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return x, axis


@settings(max_examples=60, deadline=None)
@given(array_and_axis())
def test_logsoftmax_matches_float64(case):
    x, axis = case
    ref = logsoftmax64(x, axis)
    assert_within(ops.logsoftmax(x, axis=axis), ref, logsoftmax_bound(ref, x.shape[axis]),
                  "logsoftmax")


@settings(max_examples=60, deadline=None)
@given(array_and_axis())
def test_softmax_matches_float64(case):
    x, axis = case
    ref = softmax64(x, axis)
    assert_within(ops.softmax(x, axis=axis), ref, softmax_bound(ref), "softmax")


@settings(max_examples=60, deadline=None)
@given(array_and_axis(elements=WITH_SPECIALS, max_side=12))
def test_special_values_as_numpy(case):
    """-inf, +inf and NaN anywhere: the same NaN/inf pattern as numpy's formula, and the same
    numbers elsewhere."""
    x, axis = case
    ref = logsoftmax64(x, axis)
    assert_within(ops.logsoftmax(x, axis=axis), ref, logsoftmax_bound(ref, x.shape[axis]),
                  "logsoftmax")
    sref = softmax64(x, axis)
    assert_within(ops.softmax(x, axis=axis), sref, softmax_bound(sref), "softmax")


def test_documented_rows():
    x = np.array([[-np.inf, 0.0, 1.0],          # masked entry
                  [-np.inf, -np.inf, -np.inf],   # all masked: NaN (numpy, onnx)
                  [np.nan, 0.0, 1.0],            # NaN: the row is NaN
                  [np.inf, 0.0, 1.0],            # +inf: the row is NaN
                  [1e4, -1e4, 1e4]], np.float32)  # large magnitudes: no overflow
    y = ops.logsoftmax(x)
    assert y[0, 0] == -np.inf and np.isfinite(y[0, 1:]).all()
    assert np.isnan(y[1:4]).all()
    np.testing.assert_allclose(y[4], [-np.log(2), -2e4 - np.log(2), -np.log(2)], rtol=1e-6)
    s = ops.softmax(x)
    assert s[0, 0] == 0.0 and np.isnan(s[1:4]).all()
    np.testing.assert_allclose(s[4], [0.5, 0.0, 0.5])


def test_logsoftmax_dense_sweep_of_one_term():
    """Rows [0, t] for t densely over every exponent a float32 sum term can have (and past it):
    the sum's cheaper e**t (ops/cpu/mathfuncs.py) keeps logsoftmax within its bound."""
    t = np.concatenate([np.linspace(-100, 0, 400_001), -np.geomspace(1e-30, 1, 20_001)])
    x = np.stack([np.zeros_like(t), t], axis=1).astype(np.float32)
    for threads in (1, 2):
        ref = logsoftmax64(x, -1)
        assert_within(ops.logsoftmax(x, threads=threads), ref, logsoftmax_bound(ref, 2),
                      "logsoftmax")


def test_long_rows_cross_chunks():
    """Rows longer than the kernel's chunk, with the maximum late, early, and -inf leading
    chunks (the online max/sum rescales)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 5000)).astype(np.float32) * 30
    x[0, 4999] = 400.0
    x[1, 0] = 400.0
    x[2, :3000] = -np.inf
    x[3, :4999] = -np.inf
    x[4, 2500] = np.nan
    for f, ref_f, bound in ((ops.logsoftmax, logsoftmax64, lambda r: logsoftmax_bound(r, 5000)),
                            (ops.softmax, softmax64, softmax_bound)):
        ref = ref_f(x, -1)
        assert_within(f(x), ref, bound(ref), f.__name__)


def test_length_one_and_empty_axes():
    x = np.array([[3.0], [-np.inf], [np.nan]], np.float32)
    np.testing.assert_array_equal(ops.logsoftmax(x), [[0.0], [np.nan], [np.nan]])
    np.testing.assert_array_equal(ops.softmax(x), [[1.0], [np.nan], [np.nan]])
    for shape, axis in (((3, 0), -1), ((0, 4), 0), ((0, 4), 1)):
        e = np.zeros(shape, np.float32)
        assert ops.logsoftmax(e, axis=axis).shape == shape
        assert ops.softmax(e, axis=axis).shape == shape


def test_out_in_place_and_layouts():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 50)).astype(np.float32)
    expected = ops.logsoftmax(x)
    out = np.empty_like(x)
    assert ops.logsoftmax(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    y = x.copy()
    ops.logsoftmax(y, out=y)
    np.testing.assert_array_equal(y, expected)
    # A transposed (non-contiguous) input gives the same numbers as its contiguous copy.
    np.testing.assert_array_equal(ops.softmax(x.T, axis=0), ops.softmax(np.ascontiguousarray(x.T), axis=0))
    # Another axis runs another kernel (column sums): the same numbers within the bound.
    ref = logsoftmax64(x, -1)
    assert_within(ops.logsoftmax(x.T, axis=0).T, ref, logsoftmax_bound(ref, 50))


def test_threads_do_not_change_results():
    """Rows are independent: the serial and the multi-threaded kernels agree bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 9000)).astype(np.float32) * 10  # above the serial threshold
    for f in (ops.logsoftmax, ops.softmax):
        np.testing.assert_array_equal(f(x, threads=1), f(x, threads=2))
    x3 = rng.standard_normal((40, 30, 60)).astype(np.float32)
    np.testing.assert_array_equal(ops.softmax(x3, axis=1, threads=1),
                                  ops.softmax(x3, axis=1, threads=2))


@pytest.mark.parametrize("f", [ops.logsoftmax, ops.softmax])
def test_errors_name_the_argument(f):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="x: expected float32"):
        f(x.astype(np.float64))
    with pytest.raises(TypeError, match="x: expected a numpy.ndarray"):
        f([[1.0, 2.0]])
    with pytest.raises(np.exceptions.AxisError, match="axis"):
        f(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        f(x, axis=1.0)
    with pytest.raises(ValueError, match="out: expected shape"):
        f(x, out=np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        f(x, out=np.empty((2, 3), np.float64))
    with pytest.raises(ValueError, match="out: must be C-contiguous"):
        f(x, out=np.empty((3, 2), np.float32).T)
    big = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="out: overlaps"):
        f(big.reshape(-1)[:6].reshape(2, 3), out=big.reshape(-1)[1:7].reshape(2, 3))
    with pytest.raises(ValueError, match="threads"):
        f(x, threads=0)
    with pytest.raises(ValueError, match="x: expected at least one dimension"):
        f(np.ones((), np.float32))


# -- float32_steps: onnx's reference evaluator, bit for bit ---------------------------------------


def _reference_softmax(x):
    """onnx.reference's Softmax (x - max, numpy's exp, divided by numpy's sum)."""
    with np.errstate(invalid="ignore", over="ignore"):
        tmp = x - x.max(axis=-1, keepdims=True)
        y = np.exp(tmp)
        y /= y.sum(axis=-1, keepdims=True)
    return y


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_softmax_float32_steps_equals_onnx_reference(data):
    rows = data.draw(st.integers(1, 11))   # rows are summed four at a time, and one by one
    n = data.draw(st.sampled_from([1, 2, 7, 8, 9, 100, 128, 129, 256, 257, 263, 1000, 4099]))
    x = data.draw(hnp.arrays(np.float32, (rows, n), elements=WITH_SPECIALS
                             if data.draw(st.booleans()) else FINITE))
    threads = data.draw(st.sampled_from([1, 2]))
    np.testing.assert_array_equal(ops.softmax(x, float32_steps=True, threads=threads),
                                  _reference_softmax(x))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_softmax_float32_steps_divide_by_equals_div_then_reference(data):
    rows = data.draw(st.integers(1, 5))
    n = data.draw(st.sampled_from([1, 7, 8, 128, 129, 1000]))
    x = data.draw(hnp.arrays(np.float32, (rows, n), elements=WITH_SPECIALS
                             if data.draw(st.booleans()) else FINITE))
    d = data.draw(st.sampled_from([np.float32(8.0), np.float32(np.sqrt(48)), np.float32(-3.5),
                                   np.float32(1e-30), np.float32(-0.25), np.float32(2.0**-126),
                                   np.float32(2.0**127), np.float32(2.0**-149)]))
    with np.errstate(over="ignore", invalid="ignore"):
        expected = _reference_softmax(x / d)
    threads = data.draw(st.sampled_from([1, 2]))
    np.testing.assert_array_equal(
        ops.softmax(x, float32_steps=True, divide_by=d, threads=threads), expected)


@pytest.mark.parametrize("d", [8.0, -8.0, -0.25, 2.0**-126, -(2.0**127)])
def test_softmax_divided_by_a_power_of_two_of_either_sign(d):
    """Scores divided by a power of two, as attention's √d = 8 divides them: the softmax scales in
    its exp loop, taking the max of the products from the max of x, which holds for a positive
    divisor only (a negative one makes it the min)."""
    x = (np.random.default_rng(8).standard_normal((9, 128)) * 30).astype(np.float32)
    x[3, 5], x[4, :] = np.inf, -0.0
    d = np.float32(d)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = _reference_softmax(x / d)
    for in_place in (False, True):
        got = x.copy() if in_place else None
        got = ops.softmax(got if in_place else x, float32_steps=True, divide_by=d,
                          out=got)
        np.testing.assert_array_equal(got, expected)


def test_division_by_a_power_of_two_is_the_multiplication_the_softmax_uses():
    """The one-pass softmax multiplies by 1 / d where power_of_two_reciprocal(d) holds: that must
    be x / d bit for bit, subnormal results and infinities included; elsewhere it divides."""
    from ops.cpu.probabilities import power_of_two_reciprocal
    rng = np.random.default_rng(5)
    x = np.concatenate([
        rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, 2.0**-149, 3 * 2.0**-149, 2.0**-126, 3.4e38],
                 np.float32)])
    x = x[~np.isnan(x)]
    for e in range(-149, 128):
        for sign in (1, -1):
            d = np.float32(sign * 2.0**e)
            assert power_of_two_reciprocal(d) == (-126 <= e <= 126), d
            if power_of_two_reciprocal(d):
                with np.errstate(all="ignore"):
                    np.testing.assert_array_equal((x * (np.float32(1) / d)).view(np.uint32),
                                                  (x / d).view(np.uint32))
    for d in (np.float32(3.0), np.float32(np.sqrt(48)), np.float32(1.5), np.float32(0.0),
              np.float32(np.inf), np.float32(np.nan)):
        assert not power_of_two_reciprocal(d), d


def test_numpy_exp_replica_equals_np_exp_over_the_float32_range():
    """The one-pass softmax computes numpy's float32 exp itself (ops/cpu/numpy_exp.py): bit for
    bit np.exp on a sweep of every 61st bit pattern of all 2**32 (softmax's inputs, <= 0, densely
    on [-20, 0])."""
    from ops.cpu import numpy_exp
    if not numpy_exp.matches_numpy():
        pytest.skip("this numpy's float32 exp is another routine (not its AVX2/AVX-512 one): the "
                    "softmax calls np.exp itself here, which the reference tests cover")
    for start in range(0, 61):
        x = np.arange(start, 1 << 32, 61 * 64, dtype=np.uint64).astype(np.uint32).view(np.float32)
        if start == 0:
            x = np.concatenate([x, np.linspace(-20, 0, 1 << 20, dtype=np.float32)])
        got = np.empty_like(x)
        numpy_exp.numpy_exp_into(x, got)
        with np.errstate(all="ignore"):
            expected = np.exp(x)
        bad = np.flatnonzero(got.view(np.uint32) != expected.view(np.uint32))
        assert bad.size == 0, f"differs at x = {x[bad[:5]]}: {got[bad[:5]]} vs {expected[bad[:5]]}"


def test_softmax_float32_steps_without_the_exp_replica(monkeypatch):
    """Where numpy's exp is another routine the softmax takes three passes with np.exp itself:
    the same results."""
    from ops.cpu import probabilities
    x = np.random.default_rng(3).standard_normal((33, 129)).astype(np.float32) * 30
    x[0, 5], x[1, :] = -np.inf, -np.inf
    monkeypatch.setattr(probabilities, "matches_numpy", lambda: False)
    for threads in (1, 2):
        np.testing.assert_array_equal(ops.softmax(x, float32_steps=True, threads=threads),
                                      _reference_softmax(x))
        with np.errstate(over="ignore", invalid="ignore"):
            expected = _reference_softmax(x / np.float32(8))
        np.testing.assert_array_equal(
            ops.softmax(x, float32_steps=True, divide_by=8.0, threads=threads), expected)


def test_softmax_divide_by_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="divide_by: only with float32_steps"):
        ops.softmax(x, divide_by=2.0)
    with pytest.raises(TypeError, match="divide_by: expected a number"):
        ops.softmax(x, float32_steps=True, divide_by=np.ones(3, np.float32))
    with pytest.raises(TypeError, match="divide_by: expected a number"):
        ops.softmax(x, float32_steps=True, divide_by="2")


def test_softmax_float32_steps_big_rows_in_place():
    x = np.random.default_rng(8).standard_normal((64, 128, 128)).astype(np.float32) * 4
    ref = _reference_softmax(x)
    ops.softmax(x, float32_steps=True, out=x)
    np.testing.assert_array_equal(x, ref)


def test_softmax_float32_steps_last_axis_only():
    with pytest.raises(ValueError, match="float32_steps: only over the last axis"):
        ops.softmax(np.zeros((3, 4), np.float32), axis=0, float32_steps=True)
