"""ops.matmul (float32, batched) and the data-movement ops (transpose, concat, slice_axes,
expand) on numpy and GPU arrays, against numpy. Data movement is exact on both backends;
matmul is within the float32 summation bound |C - C64| <= K eps sum_k |A_ik||B_kj|."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from dispatch import gpu
from dispatch.gpu_array import GpuArray

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
EPS = 2.0 ** -24


def backends():
    kinds = ["cpu"]
    if gpu.unavailable_reason() is None:
        kinds.append("gpu")
    return kinds


def on(kind, x):
    return GpuArray.from_numpy(x) if kind == "gpu" else x


def back(x):
    return x.numpy() if isinstance(x, GpuArray) else x


MATMUL_SHAPES = [((5, 7), (7, 3)), ((2, 3, 70, 65), (2, 3, 65, 130)), ((4, 1, 9, 8), (3, 8, 5)),
                 ((8,), (8,)), ((6,), (2, 6, 4)), ((3, 5, 4), (4,)), ((1, 0, 3), (3, 2)),
                 ((2, 4, 0), (0, 3))]


@pytest.mark.parametrize("kind", [pytest.param("cpu"), pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_is_numpy_matmul_within_float_rounding(kind, sa, sb):
    if kind not in backends():
        pytest.skip(f"no GPU adapter: {gpu.unavailable_reason()}")
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    c = back(ops.matmul(on(kind, a), on(kind, b)))
    assert c.shape == exact.shape and c.dtype == np.float32
    k = sa[-1]
    bound = k * EPS * np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    assert np.all(np.abs(c - exact) <= bound + 1e-30)


@pytest.mark.gpu
@SETTINGS
@given(m=st.integers(1, 80), k=st.integers(1, 80), n=st.integers(1, 80),
       batch=st.sampled_from([(), (1,), (3,), (2, 2)]), seed=st.integers(0, 2**32 - 1))
def test_gpu_matmul_shapes(m, k, n, batch, seed):
    if gpu.unavailable_reason():
        pytest.skip(f"no GPU adapter: {gpu.unavailable_reason()}")
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((*batch, m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)   # broadcast over a's batch
    c = ops.matmul(GpuArray.from_numpy(a), GpuArray.from_numpy(b)).numpy()
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    bound = k * EPS * np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    assert np.all(np.abs(c - exact) <= bound + 1e-30)


@pytest.mark.parametrize("kind", [pytest.param("cpu"), pytest.param("gpu", marks=pytest.mark.gpu)])
@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=6), data=st.data())
def test_data_movement_is_exact(kind, shape, data):
    if kind not in backends():
        pytest.skip(f"no GPU adapter: {gpu.unavailable_reason()}")
    rng = np.random.default_rng(len(shape))
    dtype = data.draw(st.sampled_from([np.float32, np.int32, np.uint32]))
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    gx = on(kind, x)
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(back(ops.transpose(gx, perm)), np.transpose(x, perm))
    axis = data.draw(st.integers(0, len(shape) - 1))
    y = (rng.standard_normal(shape) * 100).astype(dtype)
    np.testing.assert_array_equal(back(ops.concat([gx, on(kind, y), gx], axis)),
                                  np.concatenate([x, y, x], axis))
    start = data.draw(st.integers(-6, 6))
    end = data.draw(st.integers(-6, 6))
    step = data.draw(st.sampled_from([1, 2, -1, -2]))
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, end, step)
    np.testing.assert_array_equal(back(ops.slice_axes(gx, [start], [end], [axis], [step])),
                                  x[tuple(index)])
    small = x[tuple(slice(0, 1) if i == axis else slice(None) for i in range(len(shape)))]
    target = (*small.shape[:axis], 3, *small.shape[axis + 1:])
    if len(shape) < 6:
        target = (2, *target)   # a new leading axis too
    np.testing.assert_array_equal(back(ops.expand(on(kind, small), target)),
                                  np.broadcast_to(small, target))


def test_errors_name_the_argument():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="b"):
        ops.matmul(a, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="a"):
        ops.matmul(a.astype(np.float64), a.T)
    with pytest.raises(ValueError, match="perm"):
        ops.transpose(a, (0, 0))
    with pytest.raises(TypeError, match="x"):
        ops.transpose(a.astype(np.int8))
    with pytest.raises(ValueError, match=r"arrays\[1\]"):
        ops.concat([a, np.zeros((3, 3), np.float32)], 1)
    with pytest.raises(ValueError, match="steps"):
        ops.slice_axes(a, [0], [1], [0], [0])
    with pytest.raises(ValueError, match="shape"):
        ops.expand(a, (4, 3))
