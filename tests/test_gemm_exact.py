"""Exactness of the int32 GEMM on every CPU path: (A - 0) @ (B - 0) against a numpy reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import allows_min_in_b, backend_of, impl_for, ref, skip_unless_available
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dispatch
import gemm

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# Shapes: M in 1..70, K in 1..300, N in 1..200, with the awkward sizes (1, odd, around multiples
# of 4 / 8 / 16 / 64) sampled explicitly as well as uniformly.
M_ST = st.one_of(st.sampled_from([1, 2, 3, 5, 7, 8, 9, 13, 17, 64, 70]), st.integers(1, 70))
K_ST = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 7, 31, 33, 63, 65, 127, 255, 257, 299, 300]),
                 st.integers(1, 300))
N_ST = st.one_of(st.sampled_from([1, 3, 7, 9, 15, 17, 31, 33, 47, 63, 65, 127, 129, 199, 200]),
                 st.integers(1, 200))
# How the values are drawn: uniform over the range, only the extremes, or a mix of both.
MODE_ST = st.sampled_from(["uniform", "extremes", "sparse-extremes"])


def draw_int8(rng: np.random.Generator, shape, lo: int, hi: int, mode: str) -> np.ndarray:
    if mode == "uniform":
        return rng.integers(lo, hi + 1, shape, dtype=np.int8)
    extremes = np.array(sorted({lo, lo + 1, -1, 0, 1, hi - 1, hi}), np.int8)
    ext = rng.choice(extremes, shape).astype(np.int8)
    if mode == "extremes":
        return ext
    uni = rng.integers(lo, hi + 1, shape, dtype=np.int8)
    return np.where(rng.random(shape) < 0.5, ext, uni).astype(np.int8)


def b_low(path: str) -> int:
    """The smallest B value the path must multiply exactly."""
    return -128 if allows_min_in_b(path) else -127


# ---------------------------------------------------------------------------------------------
# Property tests.


@SETTINGS
@given(m=M_ST, k=K_ST, n=N_ST, mode=MODE_ST, threads=st.sampled_from([None, 1, 2]),
       seed=st.integers(0, 2**32 - 1))
@example(m=1, k=1, n=1, mode="uniform", threads=1, seed=0)
@example(m=1, k=300, n=200, mode="extremes", threads=None, seed=1)
@example(m=70, k=299, n=199, mode="extremes", threads=2, seed=2)
def test_int8_a_int8_b_matches_reference(cpu_path, m, k, n, mode, threads, seed):
    rng = np.random.default_rng(seed)
    a = draw_int8(rng, (m, k), -128, 127, mode)
    b = draw_int8(rng, (k, n), b_low(cpu_path), 127, mode)
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=threads)
    assert c.dtype == np.int32
    assert c.shape == (m, n)
    np.testing.assert_array_equal(c, ref(a, b))


@SETTINGS
@given(m=M_ST, k=K_ST, n=N_ST, mode=MODE_ST, seed=st.integers(0, 2**32 - 1))
@example(m=1, k=1, n=1, mode="uniform", seed=0)
def test_uint8_a_int8_b_matches_reference(cpu_path, m, k, n, mode, seed):
    rng = np.random.default_rng(seed)
    if mode == "uniform":
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    else:
        a = rng.choice(np.array([0, 1, 127, 128, 254, 255], np.uint8), (m, k)).astype(np.uint8)
    b = draw_int8(rng, (k, n), b_low(cpu_path), 127, mode)
    c = gemm.gemm_i8(a, gemm.prepare_b_quantized(b), backend=backend_of(cpu_path), threads=1)
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, ref(a, b))


# ---------------------------------------------------------------------------------------------
# Extreme values.

M_X, K_X, N_X = 7, 299, 37   # ragged in every dimension


@pytest.mark.parametrize(
    "a_val,b_val",
    [(127, 127), (-127, 127), (127, -127), (-127, -127), (-128, 127), (-128, -127), (0, -127),
     (-128, 0), (-128, -128), (127, -128), (-127, -128)],
    ids=lambda v: str(v),
)
def test_constant_extreme_values(cpu_path, a_val, b_val):
    a = np.full((M_X, K_X), a_val, np.int8)
    b = np.full((K_X, N_X), b_val, np.int8)
    if b_val == -128 and not allows_min_in_b(cpu_path):
        with pytest.raises(ValueError, match="B"):   # the sign-trick paths reject it by contract
            gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=1)
        return
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=1)
    np.testing.assert_array_equal(c, np.full((M_X, N_X), a_val * b_val * K_X, np.int32))


def test_alternating_sign_extremes(cpu_path):
    """Pairs of (-128, 127) in A against (+-127) in B: the pair sums that saturate a naive
    vpmaddubsw (|sum| up to 2*128*127)."""
    k = 256
    a = np.tile(np.array([-128, 127, -128, -128], np.int8), (5, k // 4))
    a[1] = -128
    a[2] = 127
    b = np.tile(np.array([[-127], [127], [127], [-127]], np.int8), (k // 4, 19))
    b[:, 3] = -127
    b[:, 4] = 127
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=1)
    np.testing.assert_array_equal(c, ref(a, b))


def test_uint8_extremes(cpu_path):
    a = np.full((6, 300), 255, np.uint8)
    a[1] = 0
    a[2, ::2] = 128
    lo = b_low(cpu_path)
    b = np.full((300, 21), lo, np.int8)
    b[:, 1] = 127
    b[::3, 2] = 0
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=1)
    np.testing.assert_array_equal(c, ref(a, b))


def test_min_in_a_allowed_on_every_path(cpu_path):
    rng = np.random.default_rng(5)
    a = np.full((9, 65), -128, np.int8)
    b = rng.integers(-127, 128, (65, 40), dtype=np.int8)
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c, ref(a, b))


def test_min_in_b(cpu_path):
    rng = np.random.default_rng(6)
    a = rng.integers(-128, 128, (5, 33), dtype=np.int8)
    b = rng.integers(-128, 128, (33, 17), dtype=np.int8)
    b[3, 4] = -128
    if allows_min_in_b(cpu_path):
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend=backend_of(cpu_path)), ref(a, b))
    else:
        with pytest.raises(ValueError, match="B"):
            gemm.gemm_i8(a, b, backend=backend_of(cpu_path))
        with pytest.raises(ValueError, match="B"):
            gemm.gemm_i8(a, gemm.prepare_b_quantized(b), backend=backend_of(cpu_path))


@pytest.mark.parametrize("k", [1, 2, 4, 7, 64, 257])
def test_avx2_i16_pair_sum_edges(k):
    """cpu:avx2-i16's vpmaddwd adds two int16 products in 32 bits, so its largest pair sums --
    (-128)(-128) + (-128)(-128) = 32768 and, for uint8 A, 255(-128) + 255(-128) = -65280 --
    must come out exact, not wrapped at 16 bits."""
    skip_unless_available("avx2-i16")
    a = np.full((5, k), -128, np.int8)
    a[1] = 127
    a[2, ::2] = -128
    a[2, 1::2] = 127
    b = np.full((k, 11), -128, np.int8)
    b[:, 1] = 127
    b[::2, 2] = -128
    b[1::2, 2] = 127
    c = gemm.gemm_i8(a, b, backend="cpu:avx2-i16", threads=1)
    np.testing.assert_array_equal(c, ref(a, b))
    assert c[0, 0] == 128 * 128 * k
    au = np.full((3, k), 255, np.uint8)
    au[1] = 0
    cu = gemm.gemm_i8(au, b, backend="cpu:avx2-i16", threads=1)
    np.testing.assert_array_equal(cu, ref(au, b))
    assert cu[0, 0] == -255 * 128 * k


def test_b_allows_min_flags_match_contract():
    """The registered paths declare the -128-in-B ability the API documents."""
    for path, cpu_path in gemm.cpu.PATHS.items():
        assert cpu_path.b_allows_min == allows_min_in_b(path), path


# ---------------------------------------------------------------------------------------------
# Sizes and threads.


def test_large_n(cpu_path):
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (3, 64), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (64, 32000), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    c = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))
    np.testing.assert_array_equal(c, ref(a, b))


@pytest.mark.parametrize("shape", [(64, 256, 1024), (600, 64, 64), (5, 512, 1000)],
                         ids=lambda s: "x".join(map(str, s)))
def test_threads_1_and_2_agree_above_serial_threshold(cpu_path, shape):
    m, k, n = shape
    assert m * k * n > 1 << 21  # above the driver's serial threshold
    rng = np.random.default_rng(8)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    expected = ref(a, b)
    c1 = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path), threads=1)
    c2 = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path), threads=2)
    np.testing.assert_array_equal(c1, expected)
    np.testing.assert_array_equal(c2, expected)
    _, params = dispatch.select("gemm_i8", (m, k, n), a.dtype, backend=backend_of(cpu_path),
                                threads=2)
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert params["threads"] == 2, "the parallel driver was expected to run"


@pytest.mark.parametrize("threads,m_block_tiles,p_block",
                         [(2, 1, 1), (2, 2, 3), (2, 3, 1000), (1, 1, 1 << 30), (1, 3, 1 << 30)])
def test_driver_ragged_blocks(cpu_path, threads, m_block_tiles, p_block):
    """Force the parallel or serial driver (the private `_params` override the autotuner uses)
    with blocks that do not divide M or the panel count."""
    rng = np.random.default_rng(9)
    m, k, n = 29, 45, 211
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
    tile = impl_for(cpu_path).entry.default_tile
    params = {"threads": threads, "m_block": m_block_tiles * tile.mr, "p_block": p_block}
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), _params=params)
    np.testing.assert_array_equal(c, ref(a, b))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("float_out", [False, True])
def test_streaming_stores_are_exact_and_need_aligned_rows(cpu_path, threads, float_out):
    """c_stores="streaming" writes C with non-temporal stores into aligned rows (gemm_i8's own
    results, gemm.aligned_empty) and falls back to ordinary stores where C is not aligned for
    them (a misaligned start, or rows whose stride is not a multiple of 64 bytes): the product
    is the same bits either way, with partial last panels and rows past the last whole tile."""
    from gemm.cpu import driver

    rng = np.random.default_rng(12)
    k = 45
    cases = {"aligned rows": 211 + 13, "odd row stride": 211}   # 224 * 4 bytes = 14 * 64
    for name, n in cases.items():
        m = 29
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
        pb = gemm.prepare_b_quantized(b)
        bias = rng.standard_normal(n).astype(np.float32)
        kwargs = dict(backend=backend_of(cpu_path), threads=threads)
        if float_out:
            kwargs.update(out_scale=rng.uniform(0.001, 0.01, n).astype(np.float32), bias=bias)
        dtype = np.float32 if float_out else np.int32
        plain = gemm.gemm_i8(a, pb, _params={"streaming": False, "threads": threads}, **kwargs)
        if not float_out:
            np.testing.assert_array_equal(plain, ref(a, b), err_msg=name)
        aligned = gemm.aligned_empty((m, n), dtype)
        assert driver.can_stream_into(aligned) == (name == "aligned rows")
        shifted = np.empty(m * n + 1, dtype)[1:].reshape(m, n)   # 4 bytes past numpy's start
        assert not driver.can_stream_into(shifted)
        for out in (aligned, shifted):
            out.fill(-1)
            got = gemm.gemm_i8(a, pb, out=out, _params={"streaming": True, "threads": threads},
                               **kwargs)
            assert got is out
            np.testing.assert_array_equal(out, plain, err_msg=name)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("float_out", [False, True])
def test_prefetching_the_next_panel_is_exact(cpu_path, threads, float_out):
    """b_prefetch="next_panel" adds prefetches to the micro-kernel's loop for the first tile of
    rows of each panel: the same bits with and without, over several panels (a partial last one),
    rows past the last whole tile, row blocks and blocks of panels."""
    rng = np.random.default_rng(14)
    m, k, n = 29, 131, 389
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    kwargs = dict(backend=backend_of(cpu_path), threads=threads)
    if float_out:
        kwargs.update(out_scale=rng.uniform(0.001, 0.01, n).astype(np.float32),
                      bias=rng.standard_normal(n).astype(np.float32))
    plain = gemm.gemm_i8(a, pb, _params={"prefetch_b": False}, **kwargs)
    if not float_out:
        np.testing.assert_array_equal(plain, ref(a, b))
    mr = impl_for(cpu_path).entry.default_tile.mr
    for blocks in ({}, {"m_block": 2 * mr, "p_block": 1 << 30}, {"m_block": 1 << 30, "p_block": 2}):
        got = gemm.gemm_i8(a, pb, _params={"prefetch_b": True, **blocks}, **kwargs)
        np.testing.assert_array_equal(got, plain, err_msg=str(blocks))


@pytest.mark.parametrize("a_kind", ["int8", "uint8, zero points", "float32", "float32 a_scale"])
def test_a_packed_per_thread_is_exact(cpu_path, a_kind):
    """a_packing="per_thread": each thread packs (and quantizes) its own copy of A before its
    first block of panels: the same bits as A packed once by the caller, for every kind of A
    the packing converts, and a NaN in float32 A still refused. Two A alternate, so that no
    buffer left over from the previous call holds what this one needs."""
    rng = np.random.default_rng(15)
    m, k, n = 23, 133, 389
    b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
    kwargs = dict(backend=backend_of(cpu_path), threads=2)
    if a_kind == "int8":
        a_pair = [rng.integers(-128, 128, (m, k), dtype=np.int8) for _ in range(2)]
        pb = gemm.prepare_b_quantized(b)
    elif a_kind == "uint8, zero points":
        a_pair = [rng.integers(0, 256, (m, k), dtype=np.uint8) for _ in range(2)]
        pb = gemm.prepare_b_quantized(b)
        kwargs.update(a_zero_point=131, b_zero_point=-3)   # the zero point of B reads rowsum
    else:
        a_pair = [(rng.standard_normal((m, k)) * 3).astype(np.float32) for _ in range(2)]
        pb = gemm.prepare_b_quantized(b, quant_mult=40.0)
        kwargs.update({"a_quant_mult": 30.0} if a_kind == "float32" else
                      {"a_scale": np.float32(0.02), "a_zero_point": 128,
                       "out_scale": np.float32(0.5)})
    panel_blocks = {"threads": 2, "m_block": 1 << 30, "p_block": 2}
    shared = [gemm.gemm_i8(a, pb, _params={**panel_blocks, "a_per_thread": False}, **kwargs)
              for a in a_pair]
    if a_kind == "int8":
        for a, c in zip(a_pair, shared, strict=True):
            np.testing.assert_array_equal(c, ref(a, b))
    for p_block in (1, 2, 3):
        for a, want in zip(a_pair, shared, strict=True):
            got = gemm.gemm_i8(a, pb, _params={**panel_blocks, "p_block": p_block,
                                               "a_per_thread": True}, **kwargs)
            np.testing.assert_array_equal(got, want, err_msg=f"p_block={p_block}")
    if a_kind.startswith("float32"):
        a = a_pair[0]
        a[m - 1, k // 2] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            gemm.gemm_i8(a, pb, _params={**panel_blocks, "a_per_thread": True}, **kwargs)


def test_aligned_empty():
    from gemm.cpu.driver import STREAMING_ALIGNMENT
    for shape, dtype in [((3, 5), np.float32), ((0, 7), np.int32), ((1000, 64), np.int32),
                         ((17,), np.int8)]:
        x = gemm.aligned_empty(shape, dtype)
        assert x.shape == shape and x.dtype == dtype and x.flags.c_contiguous
        assert x.flags.writeable
        assert x.size == 0 or x.ctypes.data % STREAMING_ALIGNMENT == 0
    rng = np.random.default_rng(13)
    a = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    # A result gemm_i8 allocates for a call that streams C is aligned for it (whatever the
    # result's size: a tuned configuration may stream a small C).
    pb = gemm.prepare_b_quantized(rng.integers(-127, 128, (32, 48), np.int8))
    for _ in range(20):   # np.empty alone is 64-byte aligned about one time in four
        c = gemm.gemm_i8(a, pb, _params={"streaming": True})
        assert c.ctypes.data % STREAMING_ALIGNMENT == 0


def test_every_candidate_tile_is_exact(cpu_path):
    """Each register tile a path offers the autotuner computes the same exact product."""
    rng = np.random.default_rng(10)
    m, k, n = 13, 67, 101   # not a multiple of any MR or NR
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (k, n), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    expected = ref(a, b)
    for tile in impl_for(cpu_path).entry.tiles:
        c = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path), threads=1, _params={"tile": tile})
        np.testing.assert_array_equal(c, expected, err_msg=str(tile))


# ---------------------------------------------------------------------------------------------
# Layouts, out=, PreparedB reuse.


def test_non_contiguous_a(cpu_path):
    rng = np.random.default_rng(11)
    base = rng.integers(-128, 128, (9, 2 * 37), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (37, 23), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    views = {
        "strided columns": base[:, ::2],
        "fortran": np.asfortranarray(base[:, :37]),
        "reversed rows": base[::-1, 1::2],
        "transposed view": np.ascontiguousarray(base[:, :37].T).T,
    }
    for name, a in views.items():
        assert a.shape == (9, 37)
        c = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))
        np.testing.assert_array_equal(c, ref(a, b), err_msg=name)
    au = base.view(np.uint8)[:, ::2]
    np.testing.assert_array_equal(gemm.gemm_i8(au, pb, backend=backend_of(cpu_path)), ref(au, b))


def test_non_contiguous_b(cpu_path):
    rng = np.random.default_rng(12)
    a = rng.integers(-128, 128, (4, 30), dtype=np.int8)
    base = rng.integers(b_low(cpu_path), 128, (30, 50), dtype=np.int8)
    for b in (base[:, ::2], np.asfortranarray(base), base[::-1]):
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend=backend_of(cpu_path)), ref(a, b))


def test_out_written_in_place(cpu_path):
    rng = np.random.default_rng(13)
    a = rng.integers(-128, 128, (6, 50), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (50, 27), dtype=np.int8)
    out = np.full((6, 27), 12345, np.int32)
    c = gemm.gemm_i8(a, b, out=out, backend=backend_of(cpu_path))
    assert c is out
    np.testing.assert_array_equal(out, ref(a, b))
    # A second call into the same buffer overwrites it completely.
    a2 = rng.integers(-128, 128, (6, 50), dtype=np.int8)
    assert gemm.gemm_i8(a2, b, out=out, backend=backend_of(cpu_path)) is out
    np.testing.assert_array_equal(out, ref(a2, b))


def test_prepared_b_reused_and_equal_to_raw(cpu_path):
    rng = np.random.default_rng(14)
    a = rng.integers(-128, 128, (11, 77), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (77, 45), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    c_first = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))
    c_second = gemm.gemm_i8(a, pb, backend=backend_of(cpu_path))
    c_raw = gemm.gemm_i8(a, b, backend=backend_of(cpu_path))
    c_t = gemm.gemm_i8(a, gemm.prepare_b_quantized_transposed(np.ascontiguousarray(b.T)),
                       backend=backend_of(cpu_path))
    expected = ref(a, b)
    for c in (c_first, c_second, c_raw, c_t):
        np.testing.assert_array_equal(c, expected)
    assert c_first is not c_second


def test_prepared_b_shared_across_paths():
    """One PreparedB multiplied on every available path (it packs per tile width on demand)."""
    from conftest import available_paths

    rng = np.random.default_rng(15)
    a = rng.integers(-128, 128, (5, 70), dtype=np.int8)
    b = rng.integers(-127, 128, (70, 66), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    expected = ref(a, b)
    for path in available_paths() * 2:
        np.testing.assert_array_equal(gemm.gemm_i8(a, pb, backend=backend_of(path)), expected,
                                      err_msg=path)


def test_prepared_b_attributes():
    rng = np.random.default_rng(16)
    b = rng.integers(-128, 128, (13, 7), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    assert (pb.k, pb.n) == (13, 7)
    assert pb.shape == (13, 7)
    assert pb.quant_mult is None
    q = pb.quantized()
    assert q.dtype == np.int8 and q.shape == (13, 7)
    np.testing.assert_array_equal(q, b)
    np.testing.assert_array_equal(pb.col_sums, b.astype(np.int64).sum(axis=0))
    q[0, 0] = 99 if b[0, 0] != 99 else 98   # quantized() is a copy
    np.testing.assert_array_equal(pb.quantized(), b)


def test_default_backend_is_exact():
    rng = np.random.default_rng(17)
    a = rng.integers(-128, 128, (3, 10), dtype=np.int8)
    b = rng.integers(-127, 128, (10, 4), dtype=np.int8)
    for backend in (None, "cpu"):
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend=backend), ref(a, b))


@pytest.mark.parametrize("a_val,b_val", [(127, 127), (-128, -128), (-128, 127), (127, -127)],
                         ids=lambda v: str(v))
def test_large_k_near_int32_limit(cpu_path, a_val, b_val):
    """README: accumulation wraps modulo 2^32, so the int32 result is exact whenever the true
    result fits, which every K < 131072 guarantees. K = 131071 with the extreme values."""
    if b_val == -128 and not allows_min_in_b(cpu_path):
        pytest.skip(f"cpu:{cpu_path} rejects -128 in B by contract")
    k = 131071
    a = np.full((2, k), a_val, np.int8)
    a[1, ::2] = 0
    b = np.full((k, 3), b_val, np.int8)
    b[1::3, 2] = 1
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=1)
    expected = a.astype(np.int64) @ b.astype(np.int64)
    assert np.abs(expected).max() < 2**31
    np.testing.assert_array_equal(c, expected.astype(np.int32))


def test_more_threads_than_cores(cpu_path):
    rng = np.random.default_rng(18)
    a = rng.integers(-128, 128, (64, 256), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (256, 160), dtype=np.int8)
    c = gemm.gemm_i8(a, b, backend=backend_of(cpu_path), threads=64)
    np.testing.assert_array_equal(c, ref(a, b))


def test_read_only_inputs(cpu_path):
    """Weights and activations often come read-only (np.load(mmap_mode='r'), frombuffer)."""
    rng = np.random.default_rng(19)
    a = rng.integers(-128, 128, (4, 21), dtype=np.int8)
    b = rng.integers(b_low(cpu_path), 128, (21, 10), dtype=np.int8)
    a.flags.writeable = False
    b.flags.writeable = False
    np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend=backend_of(cpu_path)), ref(a, b))
    af = rng.standard_normal((4, 21)).astype(np.float32)
    w = rng.standard_normal((21, 10)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    expected = gemm.gemm_i8(af, gemm.prepare_b(w, 30.0), a_quant_mult=20.0, bias=bias,
                            backend=backend_of(cpu_path))
    for x in (af, w, bias):
        x.flags.writeable = False
    np.testing.assert_array_equal(
        gemm.gemm_i8(af, gemm.prepare_b(w, 30.0), a_quant_mult=20.0, bias=bias,
                     backend=backend_of(cpu_path)), expected)


def test_concurrent_calls_from_python_threads():
    """The kernels release the GIL (nogil); concurrent single-threaded calls sharing one
    PreparedB must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    from conftest import available_paths

    rng = np.random.default_rng(20)
    b = rng.integers(-127, 128, (90, 75), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    jobs = []
    for i in range(16):
        a = rng.integers(-128, 128, (1 + i % 9, 90), dtype=np.int8)
        jobs.append((a, available_paths()[i % len(available_paths())]))

    def run(job):
        a, path = job
        return gemm.gemm_i8(a, pb, backend=backend_of(path), threads=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    for (a, path), c in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(c, ref(a, b), err_msg=path)


# ---------------------------------------------------------------------------------------------
# Float A quantized inside the GEMM (a_scale): ONNX QuantizeLinear to uint8, then the product.


@SETTINGS
@given(m=M_ST, k=K_ST, n=N_ST, threads=st.sampled_from([1, 2]), zero_point=st.integers(0, 255),
       seed=st.integers(0, 2**32 - 1))
@example(m=1, k=1, n=1, threads=1, zero_point=0, seed=0)
@example(m=70, k=299, n=199, threads=2, zero_point=255, seed=1)
def test_a_scale_equals_quantize_linear_then_uint8_product(cpu_path, m, k, n, threads, zero_point,
                                                             seed):
    """gemm_i8(x, b, a_scale=s, a_zero_point=z) is exactly (QuantizeLinear(x, s, z) - z) @ B,
    whether a row block packs its own rows (1 thread, row blocks) or A is packed first (blocks
    of panels); x holds ties (k + 0.5) * s and values that saturate at 0 and 255."""
    import ops

    rng = np.random.default_rng(seed)
    scale = np.float32(rng.uniform(0.01, 0.2))
    x = (rng.standard_normal((m, k)) * 100 * scale).astype(np.float32)
    ties = rng.random((m, k)) < 0.2
    x[ties] = ((rng.integers(-300, 300, (m, k)) + np.float32(0.5)) * scale)[ties]
    b = draw_int8(rng, (k, n), b_low(cpu_path), 127, "uniform")
    q = ops.quantize_linear(x, scale, np.uint8(zero_point))
    expected = ref(q, b) - np.int32(zero_point) * b.astype(np.int32).sum(axis=0)
    pb = gemm.prepare_b_quantized(b)
    blocks = [None, {"threads": threads, "m_block": 1 << 30, "p_block": 1}]
    for params in blocks if threads > 1 else blocks[:1]:
        c = gemm.gemm_i8(x, pb, a_scale=scale, a_zero_point=zero_point,
                         backend=backend_of(cpu_path), threads=threads, _params=params)
        assert c.dtype == np.int32
        np.testing.assert_array_equal(c, expected, err_msg=str(params))


def test_a_scale_float_output_equals_uint8_a_with_out_scale(cpu_path):
    import ops

    rng = np.random.default_rng(11)
    x = rng.standard_normal((33, 70)).astype(np.float32)
    b = rng.integers(b_low(cpu_path), 128, (70, 45), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    q, scale, zero_point = ops.dynamic_quantize_linear(x)
    out_scale = rng.uniform(0.001, 0.01, 45).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    kwargs = dict(a_zero_point=int(zero_point), b_zero_point=3, out_scale=out_scale, bias=bias,
                  relu=True, backend=backend_of(cpu_path), threads=2)
    np.testing.assert_array_equal(gemm.gemm_i8(x, pb, a_scale=scale, **kwargs),
                                  gemm.gemm_i8(q, pb, **kwargs))


def test_a_scale_rejects_nan_and_bad_arguments():
    rng = np.random.default_rng(12)
    pb = gemm.prepare_b_quantized(rng.integers(-127, 128, (16, 8), dtype=np.int8))
    x = rng.standard_normal((40, 16)).astype(np.float32)
    with pytest.raises(TypeError, match="a_scale"):
        gemm.gemm_i8(x.astype(np.int8), pb, a_scale=0.1)
    with pytest.raises(ValueError, match="a_scale"):
        gemm.gemm_i8(x, pb, a_scale=0.0)
    with pytest.raises(ValueError, match="a_scale"):
        gemm.gemm_i8(x, pb, a_scale=0.1, a_quant_mult=10.0)
    with pytest.raises(ValueError, match="a_zero_point"):
        gemm.gemm_i8(x, pb, a_scale=0.1, a_zero_point=256)
    x[37, 5] = np.nan
    for threads in (1, 2):
        with pytest.raises(ValueError, match="NaN"):
            gemm.gemm_i8(x, pb, a_scale=0.1, threads=threads)
