"""log_softmax_topk against logsoftmax + a stable sort: same indices, bit-identical values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ops


def reference_topk(x, k):
    """Indices ordered by value descending, ties by index ascending, NaN last (numpy's stable
    argsort of -x puts NaN last too)."""
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return order


# Few distinct values (many ties), -inf and NaN now and then.
TIED = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.5]), st.floats(-50, 50, width=32),
                 st.just(-np.inf), st.just(np.nan))


@st.composite
def rows_and_k(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4))
    n = draw(st.integers(1, 3000))
    elements = draw(st.sampled_from([TIED, st.floats(-1e4, 1e4, width=32)]))
    x = draw(hnp.arrays(np.float32, lead + (n,), elements=elements))
    k = draw(st.integers(1, min(n, 16)))
    return x, k


@settings(max_examples=60, deadline=None)
@given(rows_and_k())
def test_topk_matches_logsoftmax_and_stable_sort(case):
    x, k = case
    values, indices = ops.log_softmax_topk(x, k)
    assert values.shape == indices.shape == x.shape[:-1] + (k,)
    assert values.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, reference_topk(x, k))
    full = ops.logsoftmax(x)
    np.testing.assert_array_equal(values, np.take_along_axis(full, indices, axis=-1))


def test_ties_come_in_index_order():
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0]], np.float32)
    _, idx = ops.log_softmax_topk(x, 4)
    np.testing.assert_array_equal(idx, [[1, 2, 4, 5]])


def test_nan_ranks_last_and_masked_rows():
    x = np.array([[np.nan, 1.0, -np.inf, 2.0],
                  [-np.inf, -np.inf, 5.0, -np.inf],
                  [-np.inf, -np.inf, -np.inf, -np.inf]], np.float32)
    values, idx = ops.log_softmax_topk(x, 3)
    np.testing.assert_array_equal(idx, [[3, 1, 2], [2, 0, 1], [0, 1, 2]])
    assert np.isnan(values[0]).all()                 # a row with NaN: logsoftmax is NaN
    np.testing.assert_array_equal(values[1], [0.0, -np.inf, -np.inf])
    assert np.isnan(values[2]).all()                 # all -inf: NaN, as logsoftmax


def test_threads_and_out():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 4000)).astype(np.float32)
    v1, i1 = ops.log_softmax_topk(x, 8, threads=1)
    v2 = np.empty((64, 8), np.float32)
    i2 = np.empty((64, 8), np.int64)
    result = ops.log_softmax_topk(x, 8, out=(v2, i2), threads=2)
    assert result[0] is v2 and result[1] is i2
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(i1, i2)


def test_errors():
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 5"):
        ops.log_softmax_topk(x, 6)
    with pytest.raises(ValueError, match="k: expected"):
        ops.log_softmax_topk(x, 0)
    with pytest.raises(TypeError, match="k: expected an integer"):
        ops.log_softmax_topk(x, 2.0)
    with pytest.raises(TypeError, match="x: expected float32"):
        ops.log_softmax_topk(x.astype(np.float16), 2)
    with pytest.raises(TypeError, match="out: expected a"):
        ops.log_softmax_topk(x, 2, out=np.empty((2, 2), np.float32))
    with pytest.raises(TypeError, match=r"out\[1\]: expected dtype int64"):
        ops.log_softmax_topk(x, 2, out=(np.empty((2, 2), np.float32), np.empty((2, 2), np.int32)))
