"""Bad inputs raise the right exception type, and the message names the argument."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL_CPU_PATHS, cpu_impls

import gemm

M, K, N = 3, 8, 5


@pytest.fixture(scope="module")
def a8():
    return np.arange(M * K, dtype=np.int8).reshape(M, K) - 10


@pytest.fixture(scope="module")
def af():
    return np.linspace(-1, 1, M * K, dtype=np.float32).reshape(M, K)


@pytest.fixture(scope="module")
def b8():
    return (np.arange(K * N, dtype=np.int16).reshape(K, N) % 50 - 25).astype(np.int8)


@pytest.fixture(scope="module")
def pbf():
    return gemm.prepare_b(np.linspace(-1, 1, K * N, dtype=np.float32).reshape(K, N), 50.0)


# ---------------------------------------------------------------------------------------------
# A


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.int32, np.float16, np.bool_])
def test_a_wrong_dtype(dtype, b8):
    with pytest.raises(TypeError, match=r"^A\b"):
        gemm.gemm_i8(np.zeros((M, K), dtype), b8)


@pytest.mark.parametrize("shape", [(K,), (1, M, K), ()], ids=["1-D", "3-D", "0-D"])
def test_a_wrong_ndim(shape, b8):
    with pytest.raises(ValueError, match=r"^A\b"):
        gemm.gemm_i8(np.zeros(shape, np.int8), b8)


@pytest.mark.parametrize("a", [[[1, 2], [3, 4]], (1, 2), 3, None], ids=["list", "tuple", "int", "None"])
def test_a_not_an_array(a, b8):
    with pytest.raises(TypeError, match=r"^A\b"):
        gemm.gemm_i8(a, b8)


@pytest.mark.parametrize("shape", [(0, K), (M, 0)])
def test_a_empty(shape):
    with pytest.raises(ValueError, match=r"^A\b"):
        gemm.gemm_i8(np.zeros(shape, np.int8), np.zeros((shape[1] or 1, N), np.int8))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_a_not_finite_on_every_path(cpu_path, bad, af, pbf):
    """Each path packs (and quantizes) A in its own encoding, int16 for cpu:avx2-i16 included;
    every one of them notices NaN/inf."""
    a = af.copy()
    a[0, K // 2] = bad
    with pytest.raises(ValueError, match=r"^A\b"):
        gemm.gemm_i8(a, pbf, a_quant_mult=10.0, backend=f"cpu:{cpu_path}")


def test_bad_arguments_on_every_path(cpu_path, a8, b8, af, pbf):
    backend = f"cpu:{cpu_path}"
    with pytest.raises(ValueError, match="B"):
        gemm.gemm_i8(a8, b8[:-1], backend=backend)
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((M, N), np.float32), backend=backend)
    with pytest.raises(ValueError, match="bias"):
        gemm.gemm_i8(af, pbf, a_quant_mult=10.0, bias=np.zeros(N + 1, np.float32),
                     backend=backend)
    with pytest.raises(ValueError, match="b_zero_point"):
        gemm.gemm_i8(a8, b8, b_zero_point=np.zeros(N + 2, np.int32), backend=backend)


def test_float_a_needs_a_quant_mult(af, pbf):
    with pytest.raises(ValueError, match="a_quant_mult"):
        gemm.gemm_i8(af, pbf)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_a_not_finite(bad, af, pbf):
    a = af.copy()
    a[M - 1, K - 1] = bad
    with pytest.raises(ValueError, match=r"^A\b"):
        gemm.gemm_i8(a, pbf, a_quant_mult=10.0)
    with pytest.raises(ValueError, match=r"^A\b"):
        gemm.quantize(a, 10.0)


def test_quantize_bad_input():
    with pytest.raises(TypeError, match=r"^A\b"):
        gemm.quantize(np.zeros(3, np.float64), 1.0)
    with pytest.raises(TypeError, match=r"^A\b"):
        gemm.quantize([1.0, 2.0], 1.0)
    for qm in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="quant_mult"):
            gemm.quantize(np.zeros(3, np.float32), qm)


# ---------------------------------------------------------------------------------------------
# B


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_b_wrong_dtype(dtype, a8):
    with pytest.raises(TypeError, match=r"^B\b"):
        gemm.gemm_i8(a8, np.zeros((K, N), dtype))


@pytest.mark.parametrize("b", [[[1] * N] * K, None, 3], ids=["list", "None", "int"])
def test_b_not_an_array(b, a8):
    with pytest.raises(TypeError, match=r"^B\b"):
        gemm.gemm_i8(a8, b)


@pytest.mark.parametrize("shape", [(K,), (1, K, N)], ids=["1-D", "3-D"])
def test_b_wrong_ndim(shape, a8):
    with pytest.raises(ValueError, match=r"^B\b"):
        gemm.gemm_i8(a8, np.zeros(shape, np.int8))


@pytest.mark.parametrize("kb", [K - 1, K + 1, 1])
def test_mismatched_k(kb, a8):
    with pytest.raises(ValueError, match=r"^B\b"):
        gemm.gemm_i8(a8, np.zeros((kb, N), np.int8))
    with pytest.raises(ValueError, match=r"^B\b"):
        gemm.gemm_i8(a8, gemm.prepare_b_quantized(np.zeros((kb, N), np.int8)))


def test_float_output_needs_b_quant_mult(a8, b8):
    with pytest.raises(ValueError, match=r"^B\b"):
        gemm.gemm_i8(a8, b8, a_quant_mult=10.0)
    with pytest.raises(ValueError, match=r"^B\b"):
        gemm.gemm_i8(a8.astype(np.float32), gemm.prepare_b_quantized(b8), a_quant_mult=10.0)


# ---------------------------------------------------------------------------------------------
# prepare_*


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_prepare_b_not_finite(bad):
    w = np.ones((K, N), np.float32)
    w[2, 3] = bad
    with pytest.raises(ValueError, match=r"^W\b"):
        gemm.prepare_b(w, 10.0)
    with pytest.raises(ValueError, match=r"^WT\b"):
        gemm.prepare_b_transposed(np.ascontiguousarray(w.T), 10.0)
    # Per-column multipliers take another code path.
    with pytest.raises(ValueError, match=r"^W\b"):
        gemm.prepare_b(w, np.linspace(1, 2, N, dtype=np.float32))


def test_quant_mult_is_accepted_exactly_where_float32_keeps_it_positive_and_finite():
    """A scalar quant_mult is used as float32: accepted where float32 holds it as a positive
    finite value, refused (ValueError naming the argument) on both sides of each edge."""
    import math

    from gemm.validate import check_quant_mult
    edges = (2.0 ** -150, 2.0 ** 128 - 2.0 ** 103)
    for edge in edges:
        for value in (math.nextafter(edge, 0.0), edge, math.nextafter(edge, math.inf)):
            with np.errstate(over="ignore"):
                as_f32 = np.float32(value)
            if 0 < as_f32 < np.inf:
                assert check_quant_mult(value, "quant_mult") == value
            else:
                with pytest.raises(ValueError, match="^quant_mult"):
                    check_quant_mult(value, "quant_mult")
    for value in (np.float32(3.0), 3, np.float64(1e-40), np.array(2.5, np.float32)):
        assert check_quant_mult(value, "quant_mult") == float(value)


@pytest.mark.parametrize("qm", [0, 0.0, -1.0, -1e-30, np.nan, np.inf, -np.inf],
                         ids=["0", "0.0", "-1", "tiny negative", "nan", "inf", "-inf"])
def test_prepare_b_bad_scalar_quant_mult(qm):
    w = np.ones((K, N), np.float32)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b(w, qm)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b_transposed(np.ascontiguousarray(w.T), qm)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b_quantized(np.ones((K, N), np.int8), quant_mult=qm)


@pytest.mark.parametrize("bad", [0.0, -2.0, np.nan, np.inf])
def test_prepare_b_bad_per_column_quant_mult(bad):
    qm = np.full(N, 3.0, np.float32)
    qm[N - 1] = bad
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b(np.ones((K, N), np.float32), qm)


@pytest.mark.parametrize("length", [N - 1, N + 1, 1, 0])
def test_prepare_b_per_column_quant_mult_wrong_length(length):
    qm = np.full(length, 3.0, np.float32)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b(np.ones((K, N), np.float32), qm)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b_quantized_transposed(np.ones((N, K), np.int8), quant_mult=qm)
    with pytest.raises(ValueError, match="quant_mult"):
        gemm.prepare_b(np.ones((K, N), np.float32), np.ones((N, 1), np.float32))


def test_prepare_b_quant_mult_not_a_number():
    with pytest.raises(TypeError, match="quant_mult"):
        gemm.prepare_b(np.ones((K, N), np.float32), "ten")


@pytest.mark.parametrize(
    "fn,arg,bad",
    [
        (gemm.prepare_b, "W", np.ones((K, N), np.float64)),
        (gemm.prepare_b, "W", np.ones((K, N), np.int8)),
        (gemm.prepare_b_transposed, "WT", np.ones((N, K), np.float64)),
        (gemm.prepare_b_quantized, "B", np.ones((K, N), np.float32)),
        (gemm.prepare_b_quantized_transposed, "WqT", np.ones((N, K), np.uint8)),
        (gemm.prepare_b, "W", [[1.0] * N] * K),
    ],
    ids=["prepare_b f64", "prepare_b int8", "transposed f64", "quantized f32", "quantized_t u8",
         "prepare_b list"],
)
def test_prepare_wrong_type(fn, arg, bad):
    kwargs = {"quant_mult": 1.0} if fn in (gemm.prepare_b, gemm.prepare_b_transposed) else {}
    with pytest.raises(TypeError, match=rf"^{arg}\b"):
        fn(bad, **kwargs)


@pytest.mark.parametrize(
    "fn,arg,bad",
    [
        (gemm.prepare_b, "W", np.ones(K, np.float32)),
        (gemm.prepare_b, "W", np.ones((0, N), np.float32)),
        (gemm.prepare_b_transposed, "WT", np.ones((N, K, 1), np.float32)),
        (gemm.prepare_b_quantized, "B", np.ones((K, 0), np.int8)),
    ],
    ids=["1-D", "K=0", "3-D", "N=0"],
)
def test_prepare_wrong_shape(fn, arg, bad):
    kwargs = {"quant_mult": 1.0} if fn in (gemm.prepare_b, gemm.prepare_b_transposed) else {}
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        fn(bad, **kwargs)


# ---------------------------------------------------------------------------------------------
# a_quant_mult, bias, relu, out


@pytest.mark.parametrize("qa", [0.0, -1.0, np.nan, np.inf], ids=["0", "-1", "nan", "inf"])
def test_bad_a_quant_mult(qa, af, pbf):
    with pytest.raises(ValueError, match="a_quant_mult"):
        gemm.gemm_i8(af, pbf, a_quant_mult=qa)


def test_a_quant_mult_must_be_scalar(af, pbf):
    with pytest.raises(ValueError, match="a_quant_mult"):
        gemm.gemm_i8(af, pbf, a_quant_mult=np.ones(M, np.float32))
    with pytest.raises(TypeError, match="a_quant_mult"):
        gemm.gemm_i8(af, pbf, a_quant_mult="x")


def test_bias_with_int_output(a8, b8):
    with pytest.raises(ValueError, match="bias"):
        gemm.gemm_i8(a8, b8, bias=np.zeros(N, np.float32))


def test_relu_with_int_output(a8, b8):
    with pytest.raises(ValueError, match="relu"):
        gemm.gemm_i8(a8, b8, relu=True)


@pytest.mark.parametrize("bias", [np.zeros(N + 1, np.float32), np.zeros((1, N), np.float32),
                                  np.zeros((N, 1), np.float32), np.zeros(0, np.float32)],
                         ids=["N+1", "1xN", "Nx1", "empty"])
def test_bias_wrong_shape(bias, af, pbf):
    with pytest.raises(ValueError, match="bias"):
        gemm.gemm_i8(af, pbf, a_quant_mult=10.0, bias=bias)


@pytest.mark.parametrize("bias", [np.zeros(N, np.float64), np.zeros(N, np.int32), [0.0] * N],
                         ids=["float64", "int32", "list"])
def test_bias_wrong_type(bias, af, pbf):
    with pytest.raises(TypeError, match="bias"):
        gemm.gemm_i8(af, pbf, a_quant_mult=10.0, bias=bias)


def test_out_wrong(a8, b8, af, pbf):
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((M, N + 1), np.int32))
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((N, M), np.int32))
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((M, N), np.float32))   # int output wants int32
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(af, pbf, a_quant_mult=10.0, out=np.empty((M, N), np.int32))
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((M, N), np.int64))
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(a8, b8, out=[[0] * N] * M)
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.empty((M, 2 * N), np.int32)[:, ::2])
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a8, b8, out=np.asfortranarray(np.empty((M, N), np.int32)))
    ro = np.empty((M, N), np.int32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a8, b8, out=ro)


# ---------------------------------------------------------------------------------------------
# backend, threads, zero points


@pytest.mark.parametrize("backend", ["cpu:nonsense", "tpu", "cpu:", "", "cpu:avx2:extra"])
def test_unknown_backend(backend, a8, b8):
    with pytest.raises(ValueError, match="backend"):
        gemm.gemm_i8(a8, b8, backend=backend)


def test_backend_not_a_string(a8, b8):
    with pytest.raises(TypeError, match="backend"):
        gemm.gemm_i8(a8, b8, backend=3)


def test_backend_missing_cpu_feature(a8, b8):
    """Requesting a path this CPU lacks raises RuntimeError naming the missing features."""
    missing = [(i, i.available()[1]) for i in cpu_impls() if not i.available()[0]]
    if not missing:
        pytest.skip(f"every registered CPU path ({', '.join(ALL_CPU_PATHS)}) is available here")
    for impl, reason in missing:
        features = reason.removeprefix("CPU lacks ").split(", ")
        with pytest.raises(RuntimeError, match=impl.path) as info:
            gemm.gemm_i8(a8, b8, backend=impl.qualified_name)
        for feature in features:
            assert feature in str(info.value)


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_threads(threads, a8, b8):
    with pytest.raises(ValueError, match="threads"):
        gemm.gemm_i8(a8, b8, threads=threads)


def test_bad_num_threads_env(i8gemm_env, a8, b8):
    for value in ("zero", "0", "-3", "1.5"):
        i8gemm_env("I8GEMM_NUM_THREADS", value)
        with pytest.raises(ValueError, match="I8GEMM_NUM_THREADS"):
            gemm.gemm_i8(a8, b8)


def test_num_threads_env_sets_threads(i8gemm_env, a8, b8):
    import dispatch

    i8gemm_env("I8GEMM_NUM_THREADS", "1")
    _, params = dispatch.select("gemm_i8", (512, 512, 512), np.dtype(np.int8))
    assert params["threads"] == 1
    np.testing.assert_array_equal(gemm.gemm_i8(a8, b8), a8.astype(np.int32) @ b8.astype(np.int32))
    # An explicit threads= argument wins over the environment.
    _, params = dispatch.select("gemm_i8", (512, 512, 512), np.dtype(np.int8), threads=2)
    assert params["threads"] == min(2, gemm.cpu.driver.max_threads())


@pytest.mark.parametrize("za", [128, -129, 1000])
def test_a_zero_point_out_of_range_int8(za, a8, b8):
    with pytest.raises(ValueError, match="a_zero_point"):
        gemm.gemm_i8(a8, b8, a_zero_point=za)


@pytest.mark.parametrize("za", [-1, 256])
def test_a_zero_point_out_of_range_uint8(za, a8, b8):
    with pytest.raises(ValueError, match="a_zero_point"):
        gemm.gemm_i8(a8.view(np.uint8), b8, a_zero_point=za)


@pytest.mark.parametrize("za", [1.5, "1", True])
def test_a_zero_point_not_an_integer(za, a8, b8):
    with pytest.raises(TypeError, match="a_zero_point"):
        gemm.gemm_i8(a8, b8, a_zero_point=za)


@pytest.mark.parametrize(
    "zb,exc",
    [(128, ValueError), (-129, ValueError), (np.full(N, 200), ValueError),
     (np.zeros(N + 1, np.int32), ValueError), (np.zeros((1, N), np.int32), ValueError),
     (np.zeros(N, np.float32), ValueError), (1.5, TypeError)],
    ids=["128", "-129", "vector 200", "N+1", "1xN", "float vector", "float scalar"],
)
def test_bad_b_zero_point(zb, exc, a8, b8):
    with pytest.raises(exc, match="b_zero_point"):
        gemm.gemm_i8(a8, b8, b_zero_point=zb)
