"""Zero points (ONNX MatMulInteger): C = (A - za) @ (B - zb[None, :]) exactly, as int32."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import allows_min_in_b, backend_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gemm


def zp_ref(a, b, za, zb):
    zb = np.broadcast_to(np.asarray(zb, np.int64), (b.shape[1],))
    return ((a.astype(np.int64) - za) @ (b.astype(np.int64) - zb[None, :])).astype(np.int32)


def _b(rng, path, k, n):
    return rng.integers(-128 if allows_min_in_b(path) else -127, 128, (k, n), dtype=np.int8)


A_KINDS = {
    "int8": (np.int8, -128, 127),
    "uint8": (np.uint8, 0, 255),
}


@pytest.mark.parametrize("a_kind", list(A_KINDS))
@pytest.mark.parametrize("za_case", ["zero", "mid", "low", "high"])
@pytest.mark.parametrize("zb_case", ["zero", "scalar", "scalar min", "vector", "vector with zeros"])
def test_zero_points(cpu_path, a_kind, za_case, zb_case):
    dtype, lo, hi = A_KINDS[a_kind]
    rng = np.random.default_rng(zlib.crc32(f"{a_kind}/{za_case}/{zb_case}".encode()))
    m, k, n = 7, 45, 37
    a = rng.integers(lo, hi + 1, (m, k), dtype=dtype)
    a[0, :5] = lo
    a[1, :5] = hi
    b = _b(rng, cpu_path, k, n)
    za = {"zero": 0, "mid": (lo + hi + 1) // 2, "low": lo, "high": hi}[za_case]
    zb = {
        "zero": 0,
        "scalar": 3,
        "scalar min": -128,
        "vector": rng.integers(-128, 128, n).astype(np.int8),
        "vector with zeros": np.where(rng.random(n) < 0.5, 0, rng.integers(-50, 50, n)).astype(np.int32),
    }[zb_case]
    c = gemm.gemm_i8(a, b, a_zero_point=za, b_zero_point=zb, backend=backend_of(cpu_path))
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, zp_ref(a, b, za, zb))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 30), k=st.integers(1, 150), n=st.integers(1, 90),
       unsigned=st.booleans(), per_column=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_zero_points_property(cpu_path, m, k, n, unsigned, per_column, threads, seed):
    rng = np.random.default_rng(seed)
    dtype, lo, hi = A_KINDS["uint8" if unsigned else "int8"]
    a = rng.integers(lo, hi + 1, (m, k), dtype=dtype)
    b = _b(rng, cpu_path, k, n)
    za = int(rng.integers(lo, hi + 1))
    zb = rng.integers(-128, 128, n) if per_column else int(rng.integers(-128, 128))
    c = gemm.gemm_i8(a, gemm.prepare_b_quantized(b), a_zero_point=za, b_zero_point=zb,
                     backend=backend_of(cpu_path), threads=threads)
    np.testing.assert_array_equal(c, zp_ref(a, b, za, zb))


def test_zero_points_parallel_driver(cpu_path):
    rng = np.random.default_rng(3)
    m, k, n = 64, 256, 200
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = _b(rng, cpu_path, k, n)
    zb = rng.integers(-128, 128, n)
    for threads in (1, 2):
        c = gemm.gemm_i8(a, b, a_zero_point=128, b_zero_point=zb, backend=backend_of(cpu_path),
                         threads=threads)
        np.testing.assert_array_equal(c, zp_ref(a, b, 128, zb))


def test_zero_points_with_shortlist(cpu_path):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (5, 30), dtype=np.uint8)
    b = _b(rng, cpu_path, 30, 50)
    ids = [49, 0, 7, 7]
    zb = rng.integers(-128, 128, 4)
    pb = gemm.prepare_b_quantized(b).select_columns(ids)
    c = gemm.gemm_i8(a, pb, a_zero_point=3, b_zero_point=zb, backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c, zp_ref(a, b[:, ids], 3, zb))


def test_numpy_integer_zero_points():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (3, 9), dtype=np.int8)
    b = rng.integers(-127, 128, (9, 4), dtype=np.int8)
    c = gemm.gemm_i8(a, b, a_zero_point=np.int8(-5), b_zero_point=np.int16(7))
    np.testing.assert_array_equal(c, zp_ref(a, b, -5, 7))


@pytest.mark.parametrize("a_kind", list(A_KINDS))
def test_zero_points_with_float_output(cpu_path, a_kind):
    """With a_quant_mult, the zero-point-corrected integer product is what gets unquantized."""
    dtype, lo, hi = A_KINDS[a_kind]
    rng = np.random.default_rng(6)
    m, k, n = 6, 40, 27
    a = rng.integers(lo, hi + 1, (m, k), dtype=dtype)
    w = rng.standard_normal((k, n)).astype(np.float32)
    qb = rng.uniform(20, 60, n).astype(np.float32)
    pb = gemm.prepare_b(w, qb)
    bias = rng.standard_normal(n).astype(np.float32)
    za, zb = (lo + hi + 1) // 2 - 3, rng.integers(-20, 20, n)
    c = gemm.gemm_i8(a, pb, a_quant_mult=17.0, bias=bias, a_zero_point=za, b_zero_point=zb,
                     backend=backend_of(cpu_path))
    acc = zp_ref(a, pb.quantized(), za, zb).astype(np.float64)
    expected = acc / 17.0 / qb.astype(np.float64) + bias
    np.testing.assert_allclose(c, expected, rtol=1e-5,
                               atol=1e-5 * float(np.abs(expected).max()))


def test_a_zero_point_of_every_call_keeps_no_memory():
    """A dynamically quantized A brings a zero point of its own to each call (0-255 for uint8).
    The weight keeps nothing per zero point: memory does not grow with the zero points seen,
    and every call is exact."""
    import tracemalloc

    rng = np.random.default_rng(11)
    m, k, n = 2, 64, 4096
    b_ref = rng.integers(-127, 128, (k, n), dtype=np.int8)
    b = gemm.prepare_b_quantized(b_ref)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    out = np.empty((m, n), np.int32)
    gemm.gemm_i8(a, b, out=out, a_zero_point=0)          # compile and plan first
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for za in range(256):
            gemm.gemm_i8(a, b, out=out, a_zero_point=za)
            if za % 51 == 0:
                np.testing.assert_array_equal(out, zp_ref(a, b_ref, za, 0))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A vector per zero point would be 256 x 16 KB = 4 MB.
    assert grown < 256 << 10, f"{grown} bytes kept after 256 zero points"
