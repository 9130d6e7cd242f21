"""The float path: quantize A on the fly, multiply exactly, unquantize, add bias, optional relu."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import backend_of, ref, ref_quantize
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gemm

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def f64_expected(aq: np.ndarray, bq: np.ndarray, qa, qb, bias=None) -> tuple[np.ndarray, np.ndarray]:
    """(Aq @ Bq) * (1/qa) * (1/qb_j) + bias_j in float64, and the magnitude scale for rtol."""
    acc = aq.astype(np.int64) @ bq.astype(np.int64)
    scale = (1.0 / np.float64(np.float32(qa))) * (1.0 / np.asarray(qb, np.float32).astype(np.float64))
    prod = acc * scale
    mag = np.abs(prod)
    if bias is not None:
        prod = prod + bias.astype(np.float64)
        mag = mag + np.abs(bias.astype(np.float64))
    return prod, mag


def assert_close_to_scale(c: np.ndarray, expected: np.ndarray, mag: np.ndarray, rtol=1e-5):
    """|c - expected| <= rtol * (|product| + |bias|) elementwise (+ a denormal-sized floor)."""
    err = np.abs(c.astype(np.float64) - expected)
    tol = rtol * mag + 1e-30
    bad = err > tol
    assert not bad.any(), (
        f"{bad.sum()} elements off; worst err {err.max():.3g} at "
        f"{np.unravel_index(err.argmax(), err.shape)}, tol there {tol.flat[err.argmax()]:.3g}")


def draw_float_a(rng, m, k, mode, qa):
    if mode == "normal":
        return (rng.standard_normal((m, k)) * rng.uniform(0.01, 10)).astype(np.float32)
    if mode == "ties":
        # x * qa lands exactly on n + 0.5 (qa is a power of two here), including past 127.
        return ((rng.integers(-140, 140, (m, k)) + 0.5) / qa).astype(np.float32)
    # "saturating": most values clamp to +-127
    return (rng.standard_normal((m, k)) * 400 / qa).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Against the quantized reference.


@SETTINGS
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 130),
       mode=st.sampled_from(["normal", "ties", "saturating"]),
       per_column=st.booleans(), with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
@example(m=1, k=1, n=1, mode="ties", per_column=False, with_bias=True, seed=0)
def test_float_output_matches_quantized_reference(cpu_path, m, k, n, mode, per_column, with_bias,
                                                  seed):
    rng = np.random.default_rng(seed)
    qa = np.float32(2.0 ** rng.integers(-2, 8)) if mode == "ties" else np.float32(rng.uniform(1, 300))
    a = draw_float_a(rng, m, k, mode, qa)
    w = (rng.standard_normal((k, n)) * rng.uniform(0.01, 5)).astype(np.float32)
    qb = np.float32(rng.uniform(5, 200, n) if per_column else rng.uniform(5, 200))
    bias = (rng.standard_normal(n) * 3).astype(np.float32) if with_bias else None

    pb = gemm.prepare_b(w, qb)
    aq, bq = ref_quantize(a, qa), ref_quantize(w, qb)
    np.testing.assert_array_equal(pb.quantized(), bq)
    np.testing.assert_array_equal(gemm.quantize(a, qa), aq)

    c = gemm.gemm_i8(a, pb, a_quant_mult=qa, bias=bias, backend=backend_of(cpu_path))
    assert c.dtype == np.float32 and c.shape == (m, n)
    expected, mag = f64_expected(aq, bq, qa, qb, bias)
    assert_close_to_scale(c, expected, mag)

    # The same product through the int32 path is exact.
    np.testing.assert_array_equal(gemm.gemm_i8(aq, pb, backend=backend_of(cpu_path)), ref(aq, bq))
    # int8 A with a_quant_mult is taken as already quantized: bit-identical to the float A call.
    c_pre = gemm.gemm_i8(aq, pb, a_quant_mult=qa, bias=bias, backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c_pre, c)


def test_float_output_all_paths_agree():
    from conftest import available_paths

    rng = np.random.default_rng(1)
    a = rng.standard_normal((17, 90)).astype(np.float32)
    w = rng.standard_normal((90, 70)).astype(np.float32)
    bias = rng.standard_normal(70).astype(np.float32)
    pb = gemm.prepare_b(w, 64.0)
    results = {p: gemm.gemm_i8(a, pb, a_quant_mult=50.0, bias=bias, backend=backend_of(p))
               for p in available_paths()}
    first = next(iter(results.values()))
    for p, c in results.items():
        np.testing.assert_array_equal(c, first, err_msg=p)


# ---------------------------------------------------------------------------------------------
# Against the true float64 product, within the quantization error bound.


def quantization_bound(a, w, qa, qb):
    """Bound on |A@W - (Aq/qa)@(Bq/qb)| when nothing clamps: with a = aq/qa - da, |da| <= ea and
    w = bq/qb - dw, |dw| <= eb,  a*w - (a+da)(w+dw) = -(a dw + w da + da dw), so
    |error_ij| <= sum_k (|a_ik| eb_j + |w_kj| ea + ea eb_j),  ea = 0.5/qa, eb = 0.5/qb."""
    ea = 0.5 / np.float64(qa)
    eb = 0.5 / np.asarray(qb, np.float64)
    absa = np.abs(a.astype(np.float64))
    absw = np.abs(w.astype(np.float64))
    k = a.shape[1]
    return absa.sum(axis=1, keepdims=True) * eb + ea * absw.sum(axis=0) + k * ea * eb


@SETTINGS
@given(m=st.integers(1, 30), k=st.integers(1, 200), n=st.integers(1, 100),
       per_column=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_float_output_within_quantization_error_of_true_product(cpu_path, m, k, n, per_column,
                                                                 seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    w = (rng.standard_normal((k, n)) * rng.uniform(0.01, 2)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    # Multipliers that map the largest magnitude to 127: nothing clamps.
    qa = np.float32(127.0 / np.abs(a).max())
    if per_column:
        qb = (127.0 / np.maximum(np.abs(w).max(axis=0), 1e-30)).astype(np.float32)
    else:
        qb = np.float32(127.0 / np.abs(w).max())
    assert np.abs(ref_quantize(a, qa)).max() <= 127

    c = gemm.gemm_i8(a, gemm.prepare_b(w, qb), a_quant_mult=qa, bias=bias,
                     backend=backend_of(cpu_path))
    true = a.astype(np.float64) @ w.astype(np.float64) + bias
    bound = quantization_bound(a, w, qa, qb)
    ea, eb = 0.5 / np.float64(qa), 0.5 / np.asarray(qb, np.float64)
    scale = ((np.abs(a.astype(np.float64)) + ea) @ (np.abs(w.astype(np.float64)) + eb)
             + np.abs(bias))
    # Slack for float32 rounding of x*qa (relative 2^-24), of 1/qa, 1/qb and the epilogue.
    tol = bound * (1 + 1e-4) + 1e-5 * scale
    err = np.abs(c - true)
    assert (err <= tol).all(), f"max err/tol {np.max(err / tol):.3f}"


# ---------------------------------------------------------------------------------------------
# Per-column multipliers, relu, transposed preparation, pre-quantized B.


def test_per_column_quant_mult(cpu_path):
    rng = np.random.default_rng(2)
    m, k, n = 9, 77, 41
    a = rng.standard_normal((m, k)).astype(np.float32)
    # Columns with very different ranges: per-column scaling is what keeps them all accurate.
    w = (rng.standard_normal((k, n)) * np.logspace(-3, 2, n)[None, :]).astype(np.float32)
    qb = (127.0 / np.abs(w).max(axis=0)).astype(np.float32)
    qa = np.float32(127.0 / np.abs(a).max())
    bias = rng.standard_normal(n).astype(np.float32)
    pb = gemm.prepare_b(w, qb)
    assert pb.quant_mult.shape == (n,)
    np.testing.assert_array_equal(pb.quant_mult, qb)
    bq = ref_quantize(w, qb[None, :])
    np.testing.assert_array_equal(pb.quantized(), bq)
    c = gemm.gemm_i8(a, pb, a_quant_mult=qa, bias=bias, backend=backend_of(cpu_path))
    expected, mag = f64_expected(ref_quantize(a, qa), bq, qa, qb, bias)
    assert_close_to_scale(c, expected, mag)
    # Each column equals a scalar-multiplier call on that column alone.
    for j in (0, n // 2, n - 1):
        cj = gemm.gemm_i8(a, gemm.prepare_b(np.ascontiguousarray(w[:, j:j + 1]), qb[j]),
                          a_quant_mult=qa, bias=bias[j:j + 1], backend=backend_of(cpu_path))
        np.testing.assert_array_equal(cj[:, 0], c[:, j])


def test_per_column_equal_values_same_as_scalar():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((30, 12)).astype(np.float32)
    a = rng.standard_normal((4, 30)).astype(np.float32)
    p_scalar = gemm.prepare_b(w, 37.5)
    p_vector = gemm.prepare_b(w, np.full(12, 37.5, np.float32))
    np.testing.assert_array_equal(p_scalar.quantized(), p_vector.quantized())
    np.testing.assert_array_equal(gemm.gemm_i8(a, p_scalar, a_quant_mult=20.0),
                                  gemm.gemm_i8(a, p_vector, a_quant_mult=20.0))


@pytest.mark.parametrize("with_bias", [False, True])
def test_relu(cpu_path, with_bias):
    rng = np.random.default_rng(4)
    m, k, n = 13, 50, 35
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    pb = gemm.prepare_b(w, 60.0)
    plain = gemm.gemm_i8(a, pb, a_quant_mult=40.0, bias=bias, backend=backend_of(cpu_path))
    rel = gemm.gemm_i8(a, pb, a_quant_mult=40.0, bias=bias, relu=True, backend=backend_of(cpu_path))
    assert (plain < 0).any() and (plain > 0).any()  # the test means something
    np.testing.assert_array_equal(rel, np.maximum(plain, np.float32(0)))
    assert (rel >= 0).all()


def test_prepare_b_transposed_equals_prepare_b(cpu_path):
    rng = np.random.default_rng(5)
    k, n = 45, 29
    w = rng.standard_normal((k, n)).astype(np.float32)
    a = rng.standard_normal((6, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for qb in (np.float32(50.0), rng.uniform(10, 90, n).astype(np.float32)):
        p1 = gemm.prepare_b(w, qb)
        for wt in (np.ascontiguousarray(w.T), w.T):
            p2 = gemm.prepare_b_transposed(wt, qb)
            assert p2.shape == p1.shape == (k, n)
            np.testing.assert_array_equal(p2.quantized(), p1.quantized())
            np.testing.assert_array_equal(p2.col_sums, p1.col_sums)
            np.testing.assert_array_equal(p2.quant_mult, p1.quant_mult)
            np.testing.assert_array_equal(
                gemm.gemm_i8(a, p2, a_quant_mult=30.0, bias=bias, backend=backend_of(cpu_path)),
                gemm.gemm_i8(a, p1, a_quant_mult=30.0, bias=bias, backend=backend_of(cpu_path)))


def test_prepare_b_quantized_with_quant_mult_matches_prepare_b():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((40, 20)).astype(np.float32)
    a = rng.standard_normal((3, 40)).astype(np.float32)
    qb = rng.uniform(10, 90, 20).astype(np.float32)
    bq = ref_quantize(w, qb)
    c_ref = gemm.gemm_i8(a, gemm.prepare_b(w, qb), a_quant_mult=25.0)
    for pb in (gemm.prepare_b_quantized(bq, quant_mult=qb),
               gemm.prepare_b_quantized_transposed(np.ascontiguousarray(bq.T), quant_mult=qb)):
        np.testing.assert_array_equal(gemm.gemm_i8(a, pb, a_quant_mult=25.0), c_ref)


def test_uint8_a_with_float_output(cpu_path):
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (5, 37), dtype=np.uint8)
    w = rng.standard_normal((37, 23)).astype(np.float32)
    bias = rng.standard_normal(23).astype(np.float32)
    pb = gemm.prepare_b(w, 50.0)
    c = gemm.gemm_i8(a, pb, a_quant_mult=40.0, bias=bias, backend=backend_of(cpu_path))
    expected, mag = f64_expected(a, pb.quantized(), 40.0, np.float32(50.0), bias)
    assert_close_to_scale(c, expected, mag)


def test_float_out_written_in_place(cpu_path):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((4, 20)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((20, 11)).astype(np.float32), 30.0)
    out = np.full((4, 11), np.nan, np.float32)
    c = gemm.gemm_i8(a, pb, a_quant_mult=30.0, out=out, backend=backend_of(cpu_path))
    assert c is out
    np.testing.assert_array_equal(out, gemm.gemm_i8(a, pb, a_quant_mult=30.0,
                                                    backend=backend_of(cpu_path)))


def test_non_contiguous_float_a(cpu_path):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((7, 60)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((30, 9)).astype(np.float32), 40.0)
    expected = gemm.gemm_i8(np.ascontiguousarray(base[:, ::2]), pb, a_quant_mult=20.0,
                            backend=backend_of(cpu_path))
    for a in (base[:, ::2], np.asfortranarray(base[:, ::2])):
        np.testing.assert_array_equal(
            gemm.gemm_i8(a, pb, a_quant_mult=20.0, backend=backend_of(cpu_path)), expected)


def test_float_output_large_k_does_not_overflow(cpu_path):
    """K = 70000 with |Aq| = |Bq| = 127: the exact dot product (+-1.13e9) fits in int32 and the
    int32 output is right on every path, so the float output must be +-K."""
    k = 70000
    a = np.ones((2, k), np.float32)
    a[1] = -1.0
    w = np.ones((k, 3), np.float32)
    w[:, 1] = -1.0
    pb = gemm.prepare_b(w, 127.0)
    # The int32 path is exact (wrapping arithmetic cancels).
    ci = gemm.gemm_i8(gemm.quantize(a, 127.0), pb, backend=backend_of(cpu_path), threads=1)
    np.testing.assert_array_equal(ci, 127 * 127 * k * np.array([[1, -1, 1], [-1, 1, -1]]))
    c = gemm.gemm_i8(a, pb, a_quant_mult=127.0, backend=backend_of(cpu_path), threads=1)
    np.testing.assert_allclose(c, k * np.array([[1, -1, 1], [-1, 1, -1]], np.float32), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# quantize()


def test_quantize_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 0.49999997, 126.5, -126.5],
                 np.float32)
    np.testing.assert_array_equal(
        gemm.quantize(x, 1.0), np.array([0, 2, 2, 4, 0, -2, -2, -4, 0, 126, -126], np.int8))
    # Ties after scaling (exact in float32: the multiplier is a power of two).
    y = np.array([0.25, 0.75, 1.25, -0.25, -0.75], np.float32)
    np.testing.assert_array_equal(gemm.quantize(y, 2.0), np.array([0, 2, 2, 0, -2], np.int8))


def test_quantize_clamps_symmetrically():
    big = np.finfo(np.float32).max
    x = np.array([127.0, 127.4, 127.5, 128.0, 1e6, big, -127.0, -127.5, -128.0, -128.5, -1e6, -big],
                 np.float32)
    q = gemm.quantize(x, 1.0)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(
        q, np.array([127, 127, 127, 127, 127, 127, -127, -127, -127, -127, -127, -127], np.int8))
    assert (gemm.quantize(x, 1000.0) != -128).all()  # x * qm overflowing float32 still clamps
    assert q.min() == -127


@settings(max_examples=40, deadline=None, derandomize=True)
@given(shape=st.sampled_from([(1,), (7,), (3, 5), (1, 1), (2, 3, 4), (4, 1, 2, 3)]),
       qm=st.floats(1 / 1024, 1024.0, allow_nan=False, width=32), seed=st.integers(0, 2**32 - 1))
def test_quantize_matches_reference(shape, qm, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.choice([0.01, 1, 100, 1e5])).astype(np.float32)
    q = gemm.quantize(x, qm)
    assert q.shape == x.shape and q.dtype == np.int8
    np.testing.assert_array_equal(q, ref_quantize(x, qm))


def test_quantize_non_contiguous():
    x = np.arange(-40, 40, dtype=np.float32).reshape(8, 10) / 3
    np.testing.assert_array_equal(gemm.quantize(x[:, ::3], 2.0), ref_quantize(x[:, ::3], 2.0))
    np.testing.assert_array_equal(gemm.quantize(x.T, 2.0), ref_quantize(x.T, 2.0))


def test_per_column_quant_mult_clamps_like_scalar():
    """Bq = clamp(round(W * quant_mult), -127, 127): a finite W whose product with the multiplier
    overflows float32 clamps to +-127. The scalar multiplier does this; per-column multipliers
    must do the same (and W is finite, so 'contains NaN or infinity' would be false)."""
    w = np.array([[3e38, 1.0], [-3e38, 0.5]], np.float32)
    np.testing.assert_array_equal(gemm.prepare_b(w, 10.0).quantized(), [[127, 10], [-127, 5]])
    with np.errstate(over="ignore"):
        q = gemm.prepare_b(w, np.array([10.0, 20.0], np.float32)).quantized()
    np.testing.assert_array_equal(q, [[127, 20], [-127, 10]])
