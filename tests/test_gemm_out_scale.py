"""gemm_i8(..., out_scale=s): float32 C = float32((A - za) @ (B - zb)) * s_j + bias_j in one pass,
bit-identical to ONNX's MatMulInteger -> Cast -> Mul(scale) -> Add(bias) chain in numpy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import allows_min_in_b, backend_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gemm


def chain_ref(a, b, za, zb, scale, bias):
    acc = (a.astype(np.int64) - za) @ (b.astype(np.int64) - np.asarray(zb, np.int64))
    c = acc.astype(np.int32).astype(np.float32) * np.asarray(scale, np.float32)
    return c + bias if bias is not None else c


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), k=st.integers(1, 300), n=st.integers(1, 70),
       unsigned=st.booleans(), per_column=st.booleans(), with_bias=st.booleans(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_out_scale_matches_onnx_chain(cpu_path, m, k, n, unsigned, per_column, with_bias, threads,
                                      seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8) if unsigned else \
        rng.integers(-128, 128, (m, k)).astype(np.int8)
    za = int(rng.integers(0, 256)) if unsigned else int(rng.integers(-128, 128))
    b = rng.integers(-128 if allows_min_in_b(cpu_path) else -127, 128, (k, n)).astype(np.int8)
    zb = rng.integers(-5, 5, n).astype(np.int8) if per_column else 0
    scale = (rng.random(n).astype(np.float32) * 1e-3 if per_column
             else np.float32(rng.random() * 1e-3))
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    c = gemm.gemm_i8(a, gemm.prepare_b_quantized(b), a_zero_point=za, b_zero_point=zb,
                     out_scale=scale, bias=bias, backend=backend_of(cpu_path), threads=threads)
    assert c.dtype == np.float32
    np.testing.assert_array_equal(c, chain_ref(a, b, za, zb, scale, bias))


def test_out_scale_errors():
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 4), np.int8)
    with pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a, b, out_scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a, b, out_scale=np.float32(np.nan))
    with pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a.astype(np.float32), gemm.prepare_b(b.astype(np.float32), 1.0),
                     a_quant_mult=1.0, out_scale=1.0)
    with pytest.raises(ValueError, match="a_quant_mult"):
        gemm.gemm_i8(a.astype(np.float32), b, out_scale=1.0)
    with pytest.raises(TypeError, match="out_scale"):
        gemm.gemm_i8(a, b, out_scale="x")


@pytest.mark.parametrize("scale", [2, np.float64(0.1), np.array(0.25, np.float32), 1e-40, 3e38,
                                   -7.5e-3, 0.0], ids=repr)
def test_a_scalar_out_scale_gives_the_bits_of_its_vector(cpu_path, scale):
    """A scalar out_scale (a dynamically quantized GEMM's x_scale * w_scale) gives exactly the
    bits of the N-vector of its float32 value, also where the product overflows or is
    subnormal."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (5, 70)).astype(np.uint8)
    b = gemm.prepare_b_quantized(rng.integers(-127, 128, (70, 37)).astype(np.int8))
    bias = rng.standard_normal(37).astype(np.float32)
    kwargs = dict(a_zero_point=3, bias=bias, backend=backend_of(cpu_path))
    vector = np.full(37, np.asarray(scale, np.float64), np.float32)
    with np.errstate(over="ignore"):
        expected = gemm.gemm_i8(a, b, out_scale=vector, **kwargs)
        got = gemm.gemm_i8(a, b, out_scale=scale, **kwargs)
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("scale", [float("inf"), -np.inf, np.float32(np.nan), 1e300],
                         ids=repr)
def test_a_scalar_out_scale_must_be_finite_in_float32(scale):
    a = np.zeros((2, 3), np.int8)
    b = np.zeros((3, 4), np.int8)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a, b, out_scale=scale)
