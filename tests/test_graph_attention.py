"""Attention's MatMul -> Div -> Softmax -> MatMul in one pass (ops.attention,
ops/cpu/attention_pass.py, graph/float_attention.py): its products add as chains of fused
multiply-adds in k order, it equals the three numpy steps bit for bit where numpy's BLAS adds in
that order, and the graph falls back to the three steps where it does not."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

import ops
from graph.float_attention import FloatAttention
from graph.float_matmul import FloatMatMul
from graph.float_softmax import FloatSoftmax
from ops.cpu import attention_pass as kernel
from ops.cpu.mathfuncs import fma

matches_numpy = ops.replicates_numpy_exp

FINITE = st.floats(-30, 30, width=32)


@njit(error_model="numpy")
def _fma_chain(a, b, c):
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = np.float32(0.0)
            for k in range(a.shape[1]):
                acc = fma(a[i, k], b[k, j], acc)
            c[i, j] = acc


def fma_chain(a, b):
    """a @ b with each output a chain of single-rounding fused multiply-adds in k order from +0.0,
    one output at a time: what the tiles must equal. (Emulating the fma in float64 rounds twice:
    hypothesis found a tie that float64 broke the other way.)"""
    c = np.empty((a.shape[0], b.shape[1]), np.float32)
    _fma_chain(a, b, c)
    return c


def test_each_step_rounds_once():
    """A product exactly halfway between two float32 values, plus a tiny earlier sum: one
    rounding (a fused multiply-add) sees the tiny sum and rounds up; a multiplication and an
    addition would round the tie to even first. Both the tile and the scalar tail round once."""
    x = np.float32(22.055859)
    half_way = Fraction(float(x)) * Fraction(3, 2)
    assert float(np.float32(float(half_way))) != float(half_way)   # not a float32 itself
    for n in (1, 64):   # the scalar tail, a full tile row
        a = np.array([[1.0, x, 0.0]], np.float32)
        b = np.tile(np.array([[3.9097292e-32], [1.5], [1.5]], np.float32), (1, n))
        c = np.empty((1, n), np.float32)
        kernel.matmul_fma_chain(a, b, c)
        exact = Fraction(float(np.float32(3.9097292e-32))) + half_way
        above = np.nextafter(np.float32(float(half_way)), np.float32(np.inf))
        below = np.nextafter(above, np.float32(0))
        nearest = above if exact - Fraction(float(below)) > Fraction(float(above)) - exact \
            else below
        assert (c == nearest).all() and nearest == above


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_products_are_fma_chains_in_k_order(data):
    """Every register block, the single-vector columns and the scalar tail: rows 1..9 (not a
    multiple of the tile's 4 everywhere), columns 1..150 (tails of 64, 16 and 8), k 0..70, A as a
    transposed view."""
    m, k, n = (data.draw(st.integers(1, 9)), data.draw(st.integers(0, 70)),
               data.draw(st.integers(1, 150)))
    a = data.draw(hnp.arrays(np.float32, (m, k), elements=FINITE))
    if data.draw(st.booleans()):
        a = np.ascontiguousarray(a.T).T
    b = data.draw(hnp.arrays(np.float32, (k, n), elements=FINITE))
    c = np.full((m, n), np.nan, np.float32)
    kernel.matmul_fma_chain(a, b, c)
    np.testing.assert_array_equal(c, fma_chain(a, b))


@pytest.mark.parametrize("vectors, lanes", [(4, 16), (2, 8), (1, 8)],
                         ids=["avx512_block", "avx2_block", "one_vector"])
def test_each_register_block_is_an_fma_chain(vectors, lanes):
    """The tiles of both register blocks, whichever this machine uses: every row count 1-4, a
    strided A, a column offset, k = 37."""
    rng = np.random.default_rng(vectors * lanes)
    width = vectors * lanes
    a = rng.standard_normal((37, 6)).astype(np.float32).T   # 6 x 37, a strided view
    b = rng.standard_normal((37, width + 5)).astype(np.float32)
    for rows in range(1, 5):
        tile = kernel.fma_tile(rows, vectors, lanes)

        @njit
        def run(a, b, c, tile=tile):
            tile(a, b, c, 1, 5, b.shape[0])

        c = np.full((6, width + 5), np.nan, np.float32)
        run(a, b, c)
        np.testing.assert_array_equal(c[1:1 + rows, 5:], fma_chain(a[1:1 + rows], b[:, 5:]))
        assert np.isnan(c[0]).all() and np.isnan(c[1 + rows:]).all() and np.isnan(c[:, :5]).all()


def heads(rng, batch, heads_, seq, d, scale=1.0):
    """q, k^T and v as a transformer's graph has them: views of one (batch, seq, 3 x width)
    projection, reshaped to heads and transposed."""
    x = (rng.standard_normal((batch, seq, 3 * heads_ * d)) * scale).astype(np.float32)
    w = heads_ * d
    q = x[..., :w].reshape(batch, seq, heads_, d).transpose(0, 2, 1, 3)
    kt = x[..., w:2 * w].reshape(batch, seq, heads_, d).transpose(0, 2, 3, 1)
    v = x[..., 2 * w:].reshape(batch, seq, heads_, d).transpose(0, 2, 1, 3)
    return q, kt, v


def three_steps(q, kt, v, divisor):
    s = np.matmul(q, kt)
    if divisor is not None:
        s = s / divisor
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v)


def fma_three_steps(q, kt, v, divisor):
    """The three steps with the products as fma chains: what the one pass must give anywhere."""
    b, h = q.shape[:2]
    s = np.stack([np.stack([fma_chain(q[i, j], kt[i, j]) for j in range(h)]) for i in range(b)])
    if divisor is not None:
        s = s / divisor
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.stack([np.stack([fma_chain(p[i, j], v[i, j]) for j in range(h)]) for i in range(b)])


@pytest.mark.skipif(not matches_numpy(), reason="numpy's exp is not the routine ops/cpu/numpy_exp "
                    "replicates on this machine; the one pass is not used here")
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 40), st.integers(1, 20),
       st.sampled_from([None, np.float32(8.0), np.float32(0.3)]), st.integers(1, 3),
       st.integers(0, 2**32 - 1))
def test_one_pass_equals_the_steps_with_fma_products(b, h, s, d, divisor, workers, seed):
    q, kt, v = heads(np.random.default_rng(seed), b, h, s, d, scale=3.0)
    out = np.empty((b, s, h, d), np.float32)
    found = kernel.run_units(q, kt, v, out, divisor, workers, 1, with_range=True)
    result = out.transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(result, fma_three_steps(q, kt, v, divisor))
    assert found == (result.min(), result.max(), 0)


def fused(threads=2):
    matmul = FloatMatMul(threads)
    return FloatAttention(matmul, FloatSoftmax(threads, np.float32(8.0)), matmul, threads)


@pytest.mark.skipif(not matches_numpy(), reason="numpy's exp is not the routine ops/cpu/numpy_exp "
                    "replicates on this machine; the one pass is not used here")
def test_attention_shapes_take_the_one_pass_and_equal_numpy():
    """(16, 4, 128, 64), the encoder's: the first call compares the one pass with the three
    steps; from then on the one pass runs, and its results are numpy's, bit for bit."""
    q, kt, v = heads(np.random.default_rng(0), 16, 4, 128, 64)
    step = fused()
    first = step(q, kt, v)
    np.testing.assert_array_equal(first, three_steps(q, kt, v, np.float32(8.0)))
    if not all(step.verdicts.values()):
        pytest.skip("this numpy's BLAS adds attention's products in another order than a "
                    "k-ordered fma chain: the graph keeps the three steps here (as it should)")
    q2, kt2, v2 = heads(np.random.default_rng(1), 16, 4, 128, 64)
    calls = []
    step.unfused = lambda *args: calls.append(args) or three_steps(*args, np.float32(8.0))
    second = step(q2, kt2, v2)
    assert calls == []   # the one pass ran
    np.testing.assert_array_equal(second, three_steps(q2, kt2, v2, np.float32(8.0)))


@pytest.mark.skipif(not matches_numpy(), reason="numpy's exp is not the routine ops/cpu/numpy_exp "
                    "replicates on this machine; the one pass is not used here")
def test_the_check_is_per_matrix_shape_not_per_batch():
    """A pipeline's batch size changes from call to call: the check runs once per matrix shape
    and layout; a new sequence length is a new shape and is checked again."""
    step = fused()
    calls = []
    real = step.unfused
    step.unfused = lambda *args: calls.append(args[0].shape) or real(*args)
    for batch in (3, 5, 1):
        q, kt, v = heads(np.random.default_rng(batch), batch, 2, 16, 8)
        np.testing.assert_array_equal(step(q, kt, v), three_steps(q, kt, v, np.float32(8.0)))
    if not all(step.verdicts.values()):
        pytest.skip("this numpy's BLAS adds these products in another order: each call runs the "
                    "three steps")
    assert calls == [(3, 2, 16, 8)] and len(step.verdicts) == 1
    q, kt, v = heads(np.random.default_rng(9), 3, 2, 24, 8)
    step(q, kt, v)
    assert calls == [(3, 2, 16, 8), (3, 2, 24, 8)] and len(step.verdicts) == 2


def test_a_shape_whose_check_fails_keeps_the_three_steps():
    """Where the one pass and the steps differ in a bit on the first call, every later call of
    that shape runs the steps."""
    q, kt, v = heads(np.random.default_rng(0), 2, 2, 16, 8)
    step = fused()
    expected = three_steps(q, kt, v, np.float32(8.0))
    real = step.unfused
    step.unfused = lambda *args: real(*args) + np.float32(1e-3)   # a BLAS that adds otherwise
    np.testing.assert_array_equal(step(q, kt, v), expected + np.float32(1e-3))
    assert list(step.verdicts.values()) == [False]
    np.testing.assert_array_equal(step(q, kt, v), expected + np.float32(1e-3))


def test_calls_outside_its_scope_run_the_steps():
    """float64, 3-D stacks, a V whose rows are strided: the steps, with numpy's results."""
    rng = np.random.default_rng(0)
    step = fused()
    q, kt, v = heads(rng, 2, 2, 8, 4)
    cases = [(q.astype(np.float64), kt.astype(np.float64), v.astype(np.float64)),
             (q[0], kt[0], v[0]),
             (q, kt, np.asfortranarray(v))]
    for args in cases:
        np.testing.assert_allclose(step(*args), three_steps(*args, np.float32(8.0)), rtol=1e-6)
    assert step.verdicts == {}


@pytest.mark.skipif(not matches_numpy(), reason="numpy's exp is not the routine ops/cpu/numpy_exp "
                    "replicates on this machine")
def test_ops_attention_result_layout_and_range():
    """ops.attention: the (B, H, S, E) result is a view of a (B, S, H, E) array, so the
    transformer's transpose back is contiguous; its range is the result's; thread counts agree."""
    q, kt, v = heads(np.random.default_rng(3), 4, 4, 64, 32, scale=2.0)
    one = ops.attention(q, kt, v, divide_by=np.float32(8.0), threads=1)
    out, found = ops.attention(q, kt, v, divide_by=8.0, with_range=True, threads=2)
    np.testing.assert_array_equal(one, out)
    np.testing.assert_array_equal(out, fma_three_steps(q, kt, v, np.float32(8.0)))
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous
    assert found == ops.ValueRange(out.min(), out.max(), 0)
    # A V with strided rows is copied for the tile's loads; the values are the same.
    np.testing.assert_array_equal(ops.attention(q, kt, np.asfortranarray(v), divide_by=8.0), out)
    # D = 0: zero scores, a uniform softmax; no rows: an empty result.
    qz, ktz = q[..., :0], kt[:, :, :0]
    uniform = ops.attention(qz, ktz, v)
    np.testing.assert_array_equal(uniform, fma_three_steps(qz, ktz, v, None))
    np.testing.assert_allclose(uniform, np.broadcast_to(v.mean(axis=2, keepdims=True), out.shape),
                               rtol=1e-5, atol=1e-6)
    assert ops.attention(q[:, :, :0], kt, v).shape == (4, 4, 0, 32)


def test_ops_attention_errors_name_the_argument():
    q, kt, v = heads(np.random.default_rng(0), 1, 2, 4, 8)
    with pytest.raises(TypeError, match="q: "):
        ops.attention(q.astype(np.float64), kt, v)
    with pytest.raises(ValueError, match="v: expected 4 dimensions"):
        ops.attention(q, kt, v[0])
    with pytest.raises(ValueError, match="kt: expected shape"):
        ops.attention(q, kt[:, :, :3], v)
    with pytest.raises(ValueError, match="v: expected shape"):
        ops.attention(q, kt, v[:, :, :2])
    with pytest.raises(ValueError, match="kt: no columns"):
        ops.attention(q, kt[..., :0], v[:, :, :0])
    with pytest.raises(TypeError, match="divide_by: "):
        ops.attention(q, kt, v, divide_by="8")
    with pytest.raises(ValueError, match="threads"):
        ops.attention(q, kt, v, threads=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 3), st.integers(1, 100), st.data())
def test_unit_range_of_strided_rows(b, s, h, e, data):
    """The range a (batch, head) reports: min and max leaving NaN out, NaN and inf counted, for
    every row width (whole groups of 32 and the rest) and rows a (heads x width) stride apart."""
    out = data.draw(hnp.arrays(np.float32, (b, s, h, e), elements=st.one_of(
        FINITE, FINITE, FINITE, st.just(np.nan), st.just(np.inf), st.just(-np.inf))))
    for bi in range(b):
        for hi in range(h):
            block = out[bi, :, hi, :]
            lo, top, bad = kernel._unit_range(out, bi, hi)
            assert bad == np.count_nonzero(~np.isfinite(block))
            numbers = block[~np.isnan(block)]
            if numbers.size:
                assert (lo, top) == (numbers.min(), numbers.max())
            else:
                assert lo > top
