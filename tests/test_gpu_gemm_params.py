"""gemm_i8 on the GPU with out_scale, and with parameters that live in GPU memory.

out_scale: C = float32((A - za) @ (B - zb)) * s_j + bias_j, as the CPU path computes it (the
exact integer part, then one float multiply and one add; a GPU may fuse those into one
rounding, so float results are compared to the CPU's within 1 ulp of the product plus the
bias's). GPU-resident a_zero_point (DynamicQuantizeLinear's 0-d uint8 output), b_zero_point,
out_scale and bias give the same results as the host values, and make no host transfer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gemm
import ops
from dispatch import gpu
from dispatch.gpu_array import GpuArray

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def need_gpu():
    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")


def close_to_cpu(c, ref, scale, bias):
    """|c - ref| within one rounding of the product and one of the sum (a fused multiply-add
    may skip the first)."""
    eps = np.float32(2.0 ** -23)
    prod = np.abs(ref - (0 if bias is None else bias))
    bound = eps * (prod + np.abs(ref)) + np.float32(1e-30)
    assert np.all(np.abs(c - ref) <= bound), np.abs(c - ref).max()


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 70),
       unsigned=st.booleans(), per_column=st.booleans(), with_bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_out_scale_matches_the_cpu_path(m, k, n, unsigned, per_column, with_bias, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8) if unsigned else \
        rng.integers(-128, 128, (m, k)).astype(np.int8)
    za = int(rng.integers(0, 256)) if unsigned else int(rng.integers(-128, 128))
    b = rng.integers(-127, 128, (k, n)).astype(np.int8)
    zb = rng.integers(-5, 5, n).astype(np.int8) if per_column else 0
    scale = (rng.random(n).astype(np.float32) * 1e-3 if per_column
             else np.float32(rng.random() * 1e-3))
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    pb = gemm.prepare_b_quantized(b)
    kwargs = dict(a_zero_point=za, b_zero_point=zb, out_scale=scale, bias=bias)
    ref = gemm.gemm_i8(a, pb, backend="cpu", **kwargs)
    c = gemm.gemm_i8(a, pb, backend="gpu", **kwargs)
    assert isinstance(c, np.ndarray) and c.dtype == np.float32
    close_to_cpu(c, ref, scale, bias)


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("m", [3, 70])
def test_gpu_resident_parameters_need_no_transfer(per_column, m):
    rng = np.random.default_rng(m)
    k, n = 48, 36
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    zb = rng.integers(-3, 4, n).astype(np.int32) if per_column else 0
    w_scale = (rng.random(n) * 1e-2).astype(np.float32) if per_column else np.float32(0.004)
    bias = rng.standard_normal(n).astype(np.float32)
    pb = gemm.prepare_b_quantized(w)
    # The host reference: DynamicQuantizeLinear, then the fused chain on the CPU.
    xq, xs, xz = ops.dynamic_quantize_linear(x)
    ref = gemm.gemm_i8(xq, pb, a_zero_point=int(xz), b_zero_point=zb, out_scale=xs * w_scale,
                       bias=bias, backend="cpu")
    ref32 = gemm.gemm_i8(xq, pb, a_zero_point=int(xz), b_zero_point=zb, backend="cpu")

    gx = GpuArray.from_numpy(x)
    gpb = pb.to_gpu()
    g_ws = GpuArray.from_numpy(np.asarray(w_scale, np.float32))
    g_bias = GpuArray.from_numpy(bias)
    g_zb = GpuArray.from_numpy(np.broadcast_to(np.asarray(zb, np.int32), (n,)).copy())
    before = dict(gpu.TRANSFERS)
    gq, gs, gz = ops.dynamic_quantize_linear(gx)
    out_scale = ops.mul(gs, g_ws)                 # the model's Mul(x_scale, W_scale), on the GPU
    c = gemm.gemm_i8(gq, gpb, a_zero_point=gz, b_zero_point=g_zb, out_scale=out_scale, bias=g_bias)
    c32 = gemm.gemm_i8(gq, gpb, a_zero_point=gz, b_zero_point=g_zb)
    assert dict(gpu.TRANSFERS) == before, "GPU-resident parameters were read back or re-sent"
    assert isinstance(c, GpuArray) and isinstance(c32, GpuArray)
    np.testing.assert_array_equal(c32.numpy(), ref32)   # the integer part: exact
    close_to_cpu(c.numpy(), ref, xs * w_scale, bias)


def test_gpu_parameter_errors_name_the_argument():
    a = GpuArray.from_numpy(np.zeros((2, 8), np.uint8))
    pb = gemm.prepare_b_quantized(np.ones((8, 4), np.int8)).to_gpu()
    with pytest.raises(TypeError, match="a_zero_point"):
        gemm.gemm_i8(a, pb, a_zero_point=GpuArray.from_numpy(np.zeros(1, np.int32)))
    with pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a, pb, out_scale=GpuArray.from_numpy(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="b_zero_point"):
        gemm.gemm_i8(a, pb, b_zero_point=GpuArray.from_numpy(np.zeros(4, np.int8)))
    with pytest.raises(ValueError, match="out_scale"):
        gemm.gemm_i8(a, pb, out_scale=np.float32(np.inf), backend="gpu")
