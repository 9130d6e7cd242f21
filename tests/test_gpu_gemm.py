"""The WGSL GPU path against the numpy int32 reference, on whatever adapter exists (lavapipe in CI).

Skipped, with the reason, where wgpu finds no adapter. Shapes stay small: on lavapipe every
invocation runs on the CPU.
"""

from __future__ import annotations

import dataclasses
import warnings
from unittest import mock

import numpy as np
import pytest
from conftest import REPO, child_env, ref, ref_quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dispatch
import gemm
from dispatch import gpu
from gemm.wgsl import driver as wgsl_driver
from gemm.wgsl import tiles

pytestmark = pytest.mark.gpu

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def need_gpu():
    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")


def rand_i8(rng, shape, lo=-128):
    return rng.integers(lo, 128, shape, dtype=np.int8)


# -- exactness --------------------------------------------------------------------------------


@SETTINGS
@given(m=st.integers(1, 40), k=st.integers(1, 150), n=st.integers(1, 200),
       seed=st.integers(0, 2**32 - 1))
def test_int8_product_is_exact(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rand_i8(rng, (m, k)), rand_i8(rng, (k, n))  # -128 included in both
    c = gemm.gemm_i8(a, b, backend="gpu")
    assert isinstance(c, np.ndarray) and c.dtype == np.int32 and c.shape == (m, n)
    np.testing.assert_array_equal(c, ref(a, b))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 513, 70), (8, 7, 9), (9, 33, 129),
                                   (3, 64, 5000), (130, 65, 131), (1, 2048, 300)])
def test_edge_shapes_are_exact(shape):
    m, k, n = shape
    rng = np.random.default_rng(m * k * n)
    a, b = rand_i8(rng, (m, k)), rand_i8(rng, (k, n))
    np.testing.assert_array_equal(gemm.gemm_i8(a, gemm.prepare_b_quantized(b), backend="gpu"),
                                  ref(a, b))


def test_extreme_values_over_long_k():
    # All -128 x -128: every dot4I8Packed lane at its largest; the sum needs all 32 bits' range.
    k = 4096
    a = np.full((3, k), -128, np.int8)
    b = np.full((k, 5), -128, np.int8)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend="gpu"), ref(a, b))


# Every kernel shape the tuner may pick must be exact, not only the defaults.
CONFIGS = [tiles.Tiled(16, 64, 4, 4, 4), tiles.Tiled(32, 128, 8, 4, 8), tiles.Tiled(64, 64, 16, 8, 8),
           tiles.Tiled(128, 128, 8, 8, 8), tiles.Tiled(64, 32, 8, 16, 4), tiles.Tiled(64, 64, 16, 4, 16),
           tiles.Tiled(16, 64, 4, 4, 4, ks=2), tiles.Tiled(32, 128, 8, 4, 8, ks=16),
           tiles.SmallM(16, 2), tiles.SmallM(32, 1), tiles.SmallM(8, 16), tiles.SmallM(64, 4),
           tiles.Tiled(16, 64, 4, 4, 4, direct=True), tiles.Tiled(64, 64, 16, 8, 8, direct=True),
           tiles.Tiled(32, 128, 8, 4, 8, ks=2, direct=True), tiles.SmallM(16, 2, direct=True),
           tiles.SmallM(8, 16, direct=True)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_each_configuration_is_exact(cfg):
    rng = np.random.default_rng(7)
    m = 5 if cfg.kernel == "small_m" else 21
    if cfg.why_invalid(gemm.wgsl.driver.limits()) is not None:
        pytest.skip(f"{cfg} is invalid on this adapter: {cfg.why_invalid(gemm.wgsl.driver.limits())}")
    for k in (75, 76):  # a direct configuration reads A's rows where K is a multiple of 4
        a, b = rand_i8(rng, (m, k)), rand_i8(rng, (k, 150))
        c = gemm.gemm_i8(a, b, backend="gpu", _params={"config": cfg})
        np.testing.assert_array_equal(c, ref(a, b))


DIRECT = [tiles.Tiled(16, 64, 8, 4, 4, direct=True), tiles.Tiled(16, 64, 8, 4, 4, ks=4, direct=True),
          tiles.SmallM(32, 4, direct=True)]


@pytest.mark.parametrize("cfg", DIRECT, ids=tiles.config_name)
def test_direct_a_is_exact_and_leaves_calls_it_cannot_serve_to_packing(cfg, monkeypatch):
    # Direct A: the GEMM reads int8 A's rows itself, one dispatch in all (two with split K's
    # reduction). Calls it cannot serve (uint8 or float A, zero points, K not a multiple of 4)
    # run the packed twin and must give the same results. Each call follows a uint8 call, so the
    # pooled buffers it may be given hold a non-zero offset of A (read as zeros it must not be).
    m = 5 if cfg.kernel == "small_m" else 19
    packed = {"config": dataclasses.replace(cfg, direct=False)}
    rng = np.random.default_rng(11)
    submitted = []
    real_bound = gpu.bound
    monkeypatch.setattr(gpu, "bound", lambda d: submitted.append(len(d)) or real_bound(d))
    for k in (4, 100, 1000, 1024, 7, 150):
        a, b = rand_i8(rng, (m, k)), rand_i8(rng, (k, 37))
        pb = gemm.prepare_b_quantized(b, quant_mult=np.float32(8))
        for a_in in (a, dispatch.gpu_array.GpuArray.from_numpy(a)):
            gemm.gemm_i8(a.view(np.uint8), pb, backend="gpu", _params=packed)
            submitted.clear()
            c = gemm.gemm_i8(a_in, pb, backend="gpu", _params={"config": cfg})
            np.testing.assert_array_equal(np.asarray(c), ref(a, b))
            splits = tiles.k_splits(tiles.padded_k4(k), cfg.ks) if cfg.kernel == "tiled" else 1
            assert submitted == [(1 if k % 4 == 0 else 2) + (splits > 1)], (k, submitted)
        zb = rng.integers(-128, 128, 37).astype(np.int32)
        u = rng.integers(0, 256, (m, k), dtype=np.uint8)
        af = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        for a_in, kwargs in ((a, {"a_zero_point": 3}), (a, {"b_zero_point": zb}), (u, {}),
                             (af, {"a_quant_mult": np.float32(10)})):
            np.testing.assert_array_equal(
                gemm.gemm_i8(a_in, pb, backend="gpu", _params={"config": cfg}, **kwargs),
                gemm.gemm_i8(a_in, pb, backend="gpu", _params=packed, **kwargs))


SPLITS = [tiles.Tiled(16, 64, 8, 4, 4, ks=ks) for ks in tiles.K_SPLITS[1:]]


@pytest.mark.parametrize("cfg", SPLITS, ids=tiles.config_name)
def test_split_k_gives_the_unsplit_results_bit_for_bit(cfg):
    # Every epilogue feature runs after the parts are added: zero points, per-column scales,
    # bias, relu, NaN rows of a GPU-resident float A, out_scale. K = 1000 pads to 256 groups
    # of four, which every split of K_SPLITS cuts evenly; K = 300 pads to 80, cut into a short
    # last part (ks 2: 48 + 32) or into fewer parts than asked (ks 4: 32 + 32 + 16).
    unsplit = {"config": tiles.Tiled(16, 64, 8, 4, 4)}
    split = {"config": cfg}
    rng = np.random.default_rng(cfg.ks)
    for k in (1000, 300, 60):  # 60: one part of 16 groups, whatever ks asks
        m, n = 19, 70
        a, b = rand_i8(rng, (m, k)), rand_i8(rng, (k, n))
        zb = rng.integers(-128, 128, n).astype(np.int32)
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend="gpu", _params=split), ref(a, b))
        for kwargs in ({"a_zero_point": 3, "b_zero_point": zb},
                       {"out_scale": rng.uniform(0.5, 2, n).astype(np.float32)}):
            np.testing.assert_array_equal(
                gemm.gemm_i8(a, b, backend="gpu", _params=split, **kwargs),
                gemm.gemm_i8(a, b, backend="gpu", _params=unsplit, **kwargs))
        af = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        af[5, 7] = np.nan
        pb = gemm.prepare_b(rng.standard_normal((k, n)).astype(np.float32),
                            rng.uniform(5, 60, n).astype(np.float32))
        bias = rng.standard_normal(n).astype(np.float32)
        a_gpu = dispatch.gpu_array.GpuArray.from_numpy(af)
        results = [gemm.gemm_i8(a_gpu, pb, a_quant_mult=np.float32(20), bias=bias, relu=True,
                                backend="gpu", _params=params).numpy() for params in (split, unsplit)]
        np.testing.assert_array_equal(results[0], results[1])
        assert np.isnan(results[0][5]).all() and not np.isnan(np.delete(results[0], 5, 0)).any()


def test_split_k_parts_cover_k_without_an_empty_part():
    for k4 in range(tiles.K4_ALIGN, 40 * tiles.K4_ALIGN, tiles.K4_ALIGN):
        for ks in tiles.K_SPLITS:
            chunk, parts = tiles.k_chunk(k4, ks), tiles.k_splits(k4, ks)
            assert chunk % tiles.K4_ALIGN == 0 and 1 <= parts <= ks
            assert (parts - 1) * chunk < k4 <= parts * chunk, (k4, ks)


def test_split_k_parts_must_fit_the_adapters_storage_binding():
    space = dispatch.resolve("gemm_i8", "gpu").tuning_space
    limits = {"max-storage-buffer-binding-size": 1 << 27}  # WebGPU's default: 128 MiB
    split = {"config": "tiled:256x256x8:16x16:k16"}
    # 15 x 15 tiles of 256 x 256, K cut in 16: 16 parts of 3840 x 3840 int32 = 900 MiB
    assert not space.allows(split, (3840, 4096, 3840), limits)
    assert space.allows(split, (3840, 4096, 3840), {"max-storage-buffer-binding-size": 1 << 30})
    assert space.allows({"config": "tiled:256x256x8:16x16"}, (3840, 4096, 3840), limits)
    assert all(tiles.parts_fit(c, (3840, 4096, 3840), limits)
               for c in tiles.space((3840, 4096, 3840), limits) if c.kernel == "tiled")


def test_config_names_round_trip_and_reject_nonsense():
    for cfg in (tiles.Tiled(16, 64, 4, 4, 4), tiles.Tiled(64, 128, 8, 8, 8, ks=8), tiles.SmallM(32, 4),
                tiles.Tiled(16, 64, 4, 4, 4, direct=True), tiles.Tiled(64, 128, 8, 8, 8, ks=8, direct=True),
                tiles.SmallM(32, 4, direct=True)):
        assert tiles.parse_config(tiles.config_name(cfg)) == cfg
    assert tiles.config_name(tiles.Tiled(16, 64, 4, 4, 4)) == "tiled:16x64x4:4x4"  # stored names stay valid
    for bad in ("tiled:16x64x4:4x4:k1", "tiled:16x64x4:4x4:x8", "tiled:16x64x4", "small_m:8",
                "tiled:16x64x4:4x4:direct:direct", "small_m:8x4:k2", "tiled:16x64x4:4x4:direct:k2"):
        with pytest.raises(ValueError, match="config"):
            tiles.parse_config(bad)
    assert "ks must be" in tiles.Tiled(16, 64, 4, 4, 4, ks=3).why_invalid({})


def test_space_and_defaults_are_valid():
    limits = gemm.wgsl.driver.limits()
    for shape in [(1, 512, 512), (8, 512, 2048), (64, 512, 32000), (4096, 4096, 4096)]:
        cfgs = tiles.space(shape, limits)
        assert cfgs and all(c.why_invalid(limits) is None for c in cfgs if c.kernel == "tiled")
        default = tiles.default_config(shape, limits)
        assert default.kernel == ("small_m" if shape[0] <= tiles.SMALL_M_DEFAULT_MAX else "tiled")
        assert tiles.useful(default, shape)


def test_the_default_splits_k_only_for_few_tiles_over_a_long_k():
    limits = {}  # WebGPU's default limits
    assert tiles.default_config((128, 1024, 1024), limits).ks == 2    # 128 tiles of 16 x 64
    assert tiles.default_config((64, 512, 2048), limits).ks == 1      # K too short to pay
    assert tiles.default_config((1024, 1024, 1024), limits).ks == 1   # tiles enough
    assert tiles.default_config((16, 4096, 64), limits).ks == 4       # one tile: the most parts


# -- zero points ---------------------------------------------------------------------------------


@SETTINGS
@given(m=st.integers(1, 20), k=st.integers(1, 90), n=st.integers(1, 70),
       unsigned=st.booleans(), per_column=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_zero_points_match_the_expansion(m, k, n, unsigned, per_column, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8) if unsigned else rand_i8(rng, (m, k))
    b = rand_i8(rng, (k, n))
    za = int(rng.integers(0, 256)) if unsigned else int(rng.integers(-128, 128))
    zb = rng.integers(-128, 128, n).astype(np.int32) if per_column else int(rng.integers(-128, 128))
    expected = ((a.astype(np.int64) - za) @ (b.astype(np.int64) - np.asarray(zb))).astype(np.int32)
    c = gemm.gemm_i8(a, b, a_zero_point=za, b_zero_point=zb, backend="gpu")
    np.testing.assert_array_equal(c, expected)
    # the same as the CPU path, bit for bit
    np.testing.assert_array_equal(c, gemm.gemm_i8(a, b, a_zero_point=za, b_zero_point=zb))


# -- the float epilogue -------------------------------------------------------------------------


@SETTINGS
@given(m=st.integers(1, 24), k=st.integers(1, 120), n=st.integers(1, 90), per_column=st.booleans(),
       with_bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_float_output_matches_the_cpu_path(m, k, n, per_column, with_bias, relu, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    qa = np.float32(rng.uniform(5, 40))
    qb = rng.uniform(5, 60, n).astype(np.float32) if per_column else np.float32(30.0)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    pb = gemm.prepare_b(w, qb)
    c = gemm.gemm_i8(a, pb, a_quant_mult=qa, bias=bias, relu=relu, backend="gpu")
    c_cpu = gemm.gemm_i8(a, pb, a_quant_mult=qa, bias=bias, relu=relu)
    assert c.dtype == np.float32 and c.shape == (m, n)
    # The GPU may fuse the multiply and the bias add (one rounding instead of two).
    np.testing.assert_allclose(c, c_cpu, rtol=1e-6, atol=1e-6 * float(np.abs(c_cpu).max() + 1))
    # int8 A with a_quant_mult: taken as already quantized
    aq = gemm.quantize(a, qa)
    np.testing.assert_array_equal(
        gemm.gemm_i8(aq, pb, a_quant_mult=qa, bias=bias, relu=relu, backend="gpu"), c)


@SETTINGS
@given(m=st.integers(1, 12), k=st.integers(1, 80), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_gpu_quantization_is_the_cpu_convention(m, k, n, seed):
    """Ties and saturation: with qa a power of two, qb = 1 and no bias, C = (Aq @ Bq) / qa is
    exact in float32, so any quantization difference would show. All three ways A is
    quantized: a numpy A by the GPU, or on the host during its upload (large A), and a
    GPU-resident A by the GPU."""
    rng = np.random.default_rng(seed)
    qa = np.float32(2.0 ** rng.integers(-2, 6))
    a = ((rng.integers(-140, 140, (m, k)) + 0.5) / qa).astype(np.float32)  # x * qa = n + 0.5
    a[0, 0] = np.float32(1e30)  # clamps
    b = rand_i8(rng, (k, n), lo=-127)
    pb = gemm.prepare_b_quantized(b, quant_mult=1.0)
    expected = ref(ref_quantize(a, qa), b).astype(np.float32) * (np.float32(1) / qa)
    for host_from in (1 << 40, 0):
        with mock.patch.object(wgsl_driver, "HOST_QUANTIZED_A_BYTES", host_from):
            np.testing.assert_array_equal(gemm.gemm_i8(a, pb, a_quant_mult=qa, backend="gpu"),
                                          expected)
    on_gpu = gemm.gemm_i8(gemm.GpuArray.from_numpy(a), pb, a_quant_mult=qa)
    np.testing.assert_array_equal(on_gpu.numpy(), expected)


def test_a_large_numpy_a_is_quantized_in_parts_on_its_way_up():
    """A float32 A of megabytes is quantized by several threads straight into the upload's
    staging memory: the same int8 values as gemm.quantize, and NaN or infinity in any part is
    still the error it is for a small A (the call after it is unharmed)."""
    rng = np.random.default_rng(21)
    a = (rng.standard_normal((640, 1100)) * 4).astype(np.float32)  # 2.8 MB: several parts
    gb = gemm.prepare_b(rng.standard_normal((1100, 8)).astype(np.float32), 40.0).to_gpu()
    qa = 25.0
    expected = gemm.gemm_i8(gemm.quantize(a, qa), gb, a_quant_mult=qa)
    # The first call plans, the calls after it run the kept plan: both quantize A in parts.
    for _ in range(2):
        np.testing.assert_array_equal(gemm.gemm_i8(a, gb, a_quant_mult=qa), expected)
    for row, value in ((639, np.inf), (0, np.nan), (333, -np.inf)):
        bad = a.copy()
        bad[row, 7] = value
        with pytest.raises(ValueError, match="A: contains NaN or infinity"):
            gemm.gemm_i8(bad, gb, a_quant_mult=qa)
    np.testing.assert_array_equal(gemm.gemm_i8(a, gb, a_quant_mult=qa), expected)


def test_nan_in_numpy_a_is_an_error_and_in_gpu_a_gives_nan_rows():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 10)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((10, 6)).astype(np.float32), 20.0)
    a[2, 3] = np.nan
    with pytest.raises(ValueError, match="A: contains NaN"):
        gemm.gemm_i8(a, pb, a_quant_mult=10.0, backend="gpu")
    a[1, 0] = np.inf
    c = gemm.gemm_i8(gemm.GpuArray.from_numpy(a), pb, a_quant_mult=10.0).numpy()
    assert np.isnan(c[1]).all() and np.isnan(c[2]).all()
    assert np.isfinite(c[[0, 3]]).all()


# -- GPU arrays, chaining, shortlisting ------------------------------------------------------


def test_chained_calls_make_no_host_transfers():
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((48, 64)).astype(np.float32)
    w2 = rng.standard_normal((64, 24)).astype(np.float32)
    pb1, pb2 = gemm.prepare_b(w1, 40.0).to_gpu(), gemm.prepare_b(w2, 40.0).to_gpu()
    bias = gemm.GpuArray.from_numpy(rng.standard_normal(64).astype(np.float32))
    a_host = rng.standard_normal((10, 48)).astype(np.float32)
    a = gemm.GpuArray.from_numpy(a_host)
    h = gemm.GpuArray((10, 64), np.float32)
    before = dict(gpu.TRANSFERS)
    for _ in range(3):
        gemm.gemm_i8(a, pb1, a_quant_mult=20.0, bias=bias, relu=True, out=h)
        y = gemm.gemm_i8(h, pb2, a_quant_mult=20.0)
    assert dict(gpu.TRANSFERS) == before, "a chain of GPU calls copied data to or from the host"
    assert isinstance(y, gemm.GpuArray) and y.shape == (10, 24) and y.dtype == np.float32
    h_cpu = gemm.gemm_i8(a_host, gemm.prepare_b(w1, 40.0), a_quant_mult=20.0, bias=bias.numpy(),
                         relu=True)
    np.testing.assert_allclose(h.numpy(), h_cpu, rtol=1e-5, atol=1e-5)
    y_cpu = gemm.gemm_i8(h.numpy(), gemm.prepare_b(w2, 40.0), a_quant_mult=20.0)
    np.testing.assert_allclose(y.numpy(), y_cpu, rtol=1e-5, atol=1e-4)


def test_repeated_calls_reuse_their_plan_and_see_new_contents(monkeypatch):
    """A decoder's step: the same GPU arrays with new contents. The plan is made once, every
    result is the new product, and a change of any argument is a new plan."""
    from gemm.wgsl import driver

    builds = []
    real_build = driver.build
    monkeypatch.setattr(driver, "build", lambda *a, **kw: builds.append(1) or real_build(*a, **kw))
    rng = np.random.default_rng(12)
    b = rand_i8(rng, (37, 45))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    a_gpu, out = gemm.GpuArray((5, 37), np.int8), gemm.GpuArray((5, 45), np.int32)
    zb = gemm.GpuArray.from_numpy(rng.integers(-3, 4, 45).astype(np.int32))
    for step in range(4):
        a = rand_i8(rng, (5, 37))
        gpu.upload(a_gpu.buffer, a)
        assert gemm.gemm_i8(a_gpu, gb, out=out) is out
        np.testing.assert_array_equal(out.numpy(), ref(a, b))
        assert len(builds) == 1 + step, f"step {step} planned the call again"
        gemm.gemm_i8(a_gpu, gb, out=out, a_zero_point=step, b_zero_point=zb)
        expected = (a.astype(np.int32) - step) @ (b.astype(np.int32) - zb.numpy())
        np.testing.assert_array_equal(out.numpy(), expected)
    assert len(builds) == 1 + 4, "each new a_zero_point value is its own plan"
    dispatch.refresh()  # tuning decisions may have changed: plans made on them are not reused
    gemm.gemm_i8(a_gpu, gb, out=out)
    assert len(builds) == 6


def test_the_tuners_repeated_calls_take_the_users_path(monkeypatch):
    """The autotuner times gemm_i8(..., backend="gpu:wgsl", _params=config) called again and
    again: it must run the kept plan as a user's repeated call does, with no more host work
    (no planning, no backend resolution), or small calls time the host instead of the kernels."""
    from gemm.wgsl import driver

    rng = np.random.default_rng(13)
    b = rand_i8(rng, (64, 40))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    a_gpu, out = gemm.GpuArray((6, 64), np.int8), gemm.GpuArray((6, 40), np.int32)
    params = {"config": tiles.Tiled(16, 64, 8, 4, 4)}
    gemm.gemm_i8(a_gpu, gb, out=out, backend="gpu:wgsl", _params=params)
    calls = []
    real_build, real_resolve = driver.build, dispatch.resolve
    monkeypatch.setattr(driver, "build",
                        lambda *a, **kw: calls.append("build") or real_build(*a, **kw))
    monkeypatch.setattr(dispatch, "resolve",
                        lambda *a, **kw: calls.append("resolve") or real_resolve(*a, **kw))
    for backend in ("gpu:wgsl", "gpu", None):
        a = rand_i8(rng, (6, 64))
        gpu.upload(a_gpu.buffer, a)
        assert gemm.gemm_i8(a_gpu, gb, out=out, backend=backend, _params=params) is out
        np.testing.assert_array_equal(out.numpy(), ref(a, b))
    assert calls == []
    # another configuration is another plan
    gemm.gemm_i8(a_gpu, gb, out=out, backend="gpu:wgsl",
                 _params={"config": tiles.Tiled(16, 64, 4, 4, 4)})
    assert "build" in calls


@pytest.mark.parametrize("staged_from", [4, 1 << 40], ids=["staging-buffers", "write-buffer"])
def test_repeated_calls_with_numpy_arrays_reuse_their_plan(monkeypatch, staged_from):
    """A pipeline passing numpy A (and numpy out, or none) to a GPU weight every step: planned
    once per shape, each call uploads its own A and returns its own product, a NaN in a later A
    is still an error, and results returned without `out` are never the same array."""
    from gemm.wgsl import driver

    monkeypatch.setattr(gpu, "STAGED_UPLOAD_BYTES", staged_from)
    builds = []
    real_build = driver.build
    monkeypatch.setattr(driver, "build", lambda *a, **kw: builds.append(1) or real_build(*a, **kw))
    rng = np.random.default_rng(14)
    w = rng.standard_normal((33, 21)).astype(np.float32)
    gb = gemm.prepare_b(w, 30.0).to_gpu()
    bias_host = rng.standard_normal(21).astype(np.float32)
    bias = gemm.GpuArray.from_numpy(bias_host)
    out = np.empty((3, 21), np.float32)
    before = dict(gpu.TRANSFERS)
    results = []
    for _ in range(4):
        a = rng.standard_normal((3, 33)).astype(np.float32)
        expected = gemm.gemm_i8(a, gemm.prepare_b(w, 30.0), a_quant_mult=20.0, bias=bias_host)
        assert gemm.gemm_i8(a, gb, a_quant_mult=20.0, bias=bias, out=out) is out
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        results.append(gemm.gemm_i8(a, gb, a_quant_mult=20.0, bias=bias))
        np.testing.assert_array_equal(results[-1], out)
    assert len(builds) == 2, "a repeated call with numpy arrays of the same shapes planned again"
    assert len({id(r) for r in results}) == 4 and not np.shares_memory(results[0], results[1])
    assert gpu.TRANSFERS["upload"] - before.get("upload", 0) == 8
    assert gpu.TRANSFERS["download"] - before.get("download", 0) == 8
    a[1, 2] = np.nan
    with pytest.raises(ValueError, match="A: contains NaN"):
        gemm.gemm_i8(a, gb, a_quant_mult=20.0, bias=bias, out=out)
    a_i8 = rand_i8(rng, (2, 33))  # another shape and dtype: a plan of its own
    b_i8 = rand_i8(rng, (33, 21))
    gb_i8 = gemm.prepare_b_quantized(b_i8).to_gpu()
    for _ in range(2):
        np.testing.assert_array_equal(gemm.gemm_i8(a_i8, gb_i8), ref(a_i8, b_i8))
    assert len(builds) == 3


@pytest.mark.parametrize("staged_from", [4, 1 << 40], ids=["staging-buffers", "write-buffer"])
def test_uploads_land_between_the_calls_queued_around_them(monkeypatch, staged_from):
    """New contents uploaded into an array that queued, not yet submitted, calls still read:
    each call sees what was uploaded before it, whichever way the upload goes (more uploads
    in flight than the staging pool keeps per size, too)."""
    monkeypatch.setattr(gpu, "STAGED_UPLOAD_BYTES", staged_from)
    rng = np.random.default_rng(15)
    b = rand_i8(rng, (40, 24))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    a_gpu = gemm.GpuArray((6, 40), np.int8)
    steps = [(rand_i8(rng, (6, 40)), gemm.GpuArray((6, 24), np.int32))
             for _ in range(gpu.WRITE_STAGING_PER_SIZE + 2)]
    for a, out in steps:
        gpu.upload(a_gpu.buffer, a)
        gemm.gemm_i8(a_gpu, gb, out=out)
    for a, out in steps:
        np.testing.assert_array_equal(out.numpy(), ref(a, b))


@pytest.mark.parametrize("mapped_from", [4, 1 << 40], ids=["mapped-results", "copied-results"])
def test_results_read_back_into_new_arrays_stay_independent(monkeypatch, mapped_from):
    """A numpy result may be the GPU's mapped read-back memory itself (no copy out): every result
    kept by the caller still holds its own values after later calls, is writable, a view
    outlives the array it was taken from, and the read-back memory of dropped results is reused
    rather than piling up."""
    import gc

    if gpu._native() is None:
        pytest.skip("this wgpu-py exposes no wgpu-native functions: results are always copied")
    monkeypatch.setattr(gpu, "MAPPED_RESULT_BYTES", mapped_from)
    rng = np.random.default_rng(17)
    b = rand_i8(rng, (40, 24))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    calls = [rand_i8(rng, (5, 40)) for _ in range(6)]
    kept = [gemm.gemm_i8(a, gb) for a in calls]
    for a, result in zip(calls, kept, strict=True):
        np.testing.assert_array_equal(result, ref(a, b))
        assert result.flags.writeable and result.flags.c_contiguous
    kept[0][0, 0] += 1  # the caller's to change
    assert kept[0][0, 0] == ref(calls[0], b)[0, 0] + 1
    column = kept[1][:, 3]
    del kept[1]
    gc.collect()
    for a in calls:
        gemm.gemm_i8(a, gb)
    np.testing.assert_array_equal(column, ref(calls[1], b)[:, 3])
    del kept, column
    gc.collect()
    dev = gpu.device()
    made = []
    create_buffer = dev.create_buffer
    monkeypatch.setattr(dev, "create_buffer", lambda **kw: made.append(kw) or create_buffer(**kw))
    for a in calls * 3:
        np.testing.assert_array_equal(gemm.gemm_i8(a, gb), ref(a, b))
    assert len(made) <= 1, f"{len(made)} new buffers for 18 results, each dropped at once"


def test_a_kept_plan_holds_no_array_and_never_serves_a_new_one():
    """A plan kept for a call must not keep the caller's arrays alive, and an array made later
    (perhaps at the same address, with a pooled buffer) gets its own plan and its own result."""
    import gc
    import weakref

    rng = np.random.default_rng(13)
    b = rand_i8(rng, (16, 24))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    for _ in range(3):
        a = rand_i8(rng, (2, 16))
        out = gemm.GpuArray((2, 24), np.int32)
        gemm.gemm_i8(gemm.GpuArray.from_numpy(a), gb, out=out)
        np.testing.assert_array_equal(out.numpy(), ref(a, b))
        gone = weakref.ref(out)
        del out
        gc.collect()
        assert gone() is None, "a kept plan held the output array alive"


# Run in a child process: with the bug, wgpu-native aborts the process that binds the buffer.
ARRAY_IN_A_CYCLE = r"""
import gc
import numpy as np
import gemm

rng = np.random.default_rng(3)
a, b = (rng.integers(-128, 128, s, dtype=np.int8) for s in ((4, 32), (32, 250)))
gb = gemm.prepare_b_quantized(b).to_gpu()
first = gemm.GpuArray((4, 250), np.int32)
del first                 # its buffer goes back to the pool...
gc.collect()              # ...and, older than what follows, to the collector's oldest generation

class Holder:
    pass

holder = Holder()
holder.out = gemm.GpuArray((4, 250), np.int32)   # the pooled buffer
holder.me = holder        # a reference cycle: only the collector frees it
del holder
gc.collect()              # the cycle's finalizers run in the collector's order
out = gemm.GpuArray((4, 250), np.int32)          # the buffer the dead array returned
gemm.gemm_i8(gemm.GpuArray.from_numpy(a), gb, out=out)
assert (out.numpy() == a.astype(np.int32) @ b.astype(np.int32)).all()
print("exact")
"""


def test_an_array_freed_in_a_reference_cycle_returns_a_live_buffer():
    """A GpuArray that dies in a reference cycle returns a buffer the next array of its size
    can use. (The collector may finalize wgpu-py's buffer before the array that pools it; the
    next array of that size then got a dead buffer, and binding it aborted the process.)"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", ARRAY_IN_A_CYCLE], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "exact" in proc.stdout, proc.stderr[-3000:]


def test_gpu_array_round_trip_and_int_out():
    rng = np.random.default_rng(6)
    for dtype in (np.int8, np.uint8, np.int32, np.float32):
        x = rng.integers(0, 100, (3, 5)).astype(dtype)
        g = gemm.GpuArray.from_numpy(x)
        assert g.shape == (3, 5) and g.dtype == dtype
        np.testing.assert_array_equal(g.numpy(), x)
    a, b = rand_i8(rng, (7, 13)), rand_i8(rng, (13, 11))
    out = gemm.GpuArray((7, 11), np.int32)
    assert gemm.gemm_i8(a, b, out=out) is out
    np.testing.assert_array_equal(out.numpy(), ref(a, b))


def test_shortlisting_gathers_on_the_gpu():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((70, 300)).astype(np.float32)
    qb = rng.uniform(10, 50, 300).astype(np.float32)
    pb = gemm.prepare_b(w, qb)
    gpb = pb.to_gpu()
    assert pb.to_gpu() is gpb  # uploaded once
    ids = np.array([299, 0, 5, 5, 150, 7, 298])
    a = rng.standard_normal((6, 70)).astype(np.float32)
    before = dict(gpu.TRANSFERS)
    short = gpb.select_columns(ids)
    assert dict(gpu.TRANSFERS)["upload"] == before.get("upload", 0) + 1  # the ids only
    assert dict(gpu.TRANSFERS).get("download", 0) == before.get("download", 0)
    c = gemm.gemm_i8(a, short, a_quant_mult=12.0)
    np.testing.assert_allclose(c, gemm.gemm_i8(a, pb.select_columns(ids), a_quant_mult=12.0),
                               rtol=1e-6, atol=1e-5)
    # a PreparedB with a GPU copy shortlists on both sides
    assert pb.select_columns(ids)._gpu is not None
    aq = gemm.quantize(a, 12.0)
    np.testing.assert_array_equal(gemm.gemm_i8(aq, short), ref(aq, pb.quantized()[:, ids]))
    with pytest.raises(ValueError, match="ids"):
        gpb.select_columns([300])


# -- errors and fallback -----------------------------------------------------------------------


def test_argument_errors_name_the_argument():
    rng = np.random.default_rng(9)
    a, b = rand_i8(rng, (4, 8)), rand_i8(rng, (8, 6))
    ga = gemm.GpuArray.from_numpy(a)
    with pytest.raises(ValueError, match="out: expected shape"):
        gemm.gemm_i8(ga, b, out=gemm.GpuArray((4, 5), np.int32))
    with pytest.raises(TypeError, match="out: expected a int32"):
        gemm.gemm_i8(ga, b, out=gemm.GpuArray((4, 6), np.float32))
    with pytest.raises(ValueError, match="backend='cpu'"):
        gemm.gemm_i8(ga, b, backend="cpu")
    with pytest.raises(ValueError, match="B: has K=8"):
        gemm.gemm_i8(gemm.GpuArray.from_numpy(rand_i8(rng, (4, 9))), b)
    pb = gemm.prepare_b(rng.standard_normal((8, 6)).astype(np.float32), 10.0)
    with pytest.raises(TypeError, match="bias"):
        gemm.gemm_i8(ga, pb, a_quant_mult=2.0, bias=gemm.GpuArray((6,), np.int32))


def test_disabled_gpu_is_an_error_for_gpu_and_a_warning_for_auto(i8gemm_env):
    rng = np.random.default_rng(10)
    a, b = rand_i8(rng, (3, 9)), rand_i8(rng, (9, 4))
    i8gemm_env("I8GEMM_GPU", "off")
    with pytest.raises(RuntimeError, match="I8GEMM_GPU=off"):
        gemm.gemm_i8(a, b, backend="gpu")
    with pytest.raises(RuntimeError, match="I8GEMM_GPU=off"):
        dispatch.resolve("gemm_i8", "gpu")
    dispatch.registry._WARNED.clear()
    with pytest.warns(RuntimeWarning, match="running on the CPU.*I8GEMM_GPU=off"):
        c = gemm.gemm_i8(a, b, backend="auto")
    np.testing.assert_array_equal(c, ref(a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per reason, not one per call
        gemm.gemm_i8(a, b, backend="auto")
    i8gemm_env("I8GEMM_GPU", None)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend="auto"), ref(a, b))


def test_unknown_adapter_name_is_reported(i8gemm_env):
    i8gemm_env("I8GEMM_GPU", "no-such-adapter-xyz")
    with pytest.raises(RuntimeError, match="no adapter matches I8GEMM_GPU='no-such-adapter-xyz'"):
        gemm.gemm_i8(np.ones((1, 4), np.int8), np.ones((4, 1), np.int8), backend="gpu")


def test_info_lists_the_adapters():
    from dispatch import info

    text = info.report()
    name = gpu.describe(gpu.adapter())["name"]
    assert name in text and "dot4I8Packed" in text


def test_an_invalid_submission_raises_and_the_device_goes_on():
    """Work wgpu rejects (here a dispatch beyond the adapter's workgroup limit) is raised as a
    validation error when it is submitted, never submitted as is (wgpu-native would abort the
    process), and the device stays usable."""
    import wgpu

    from gemm.wgsl import driver

    rng = np.random.default_rng(16)
    a, b = rand_i8(rng, (4, 16)), rand_i8(rng, (16, 8))
    gb = gemm.prepare_b_quantized(b).to_gpu()
    program, buffers, _ = driver.build(a, gb).dispatches[1]
    too_many = gpu.limit("max-compute-workgroups-per-dimension") + 1
    gpu.run([(program, buffers, (too_many, 1, 1))])
    with pytest.raises(wgpu.GPUValidationError, match="dispatch"):
        gpu.synchronize()
    assert gpu.unavailable_reason() is None
    np.testing.assert_array_equal(gemm.gemm_i8(a, gb), ref(a, b))
