"""dispatch: ISA levels, feature detection, the registry, I8GEMM_CPU_PATH, select()."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    ALL_CPU_PATHS,
    NAMED_ONLY_PATHS,
    SIGN_TRICK_PATHS,
    available_paths,
    cpu_impls,
    impl_for,
    ref,
)

import dispatch
import gemm
from dispatch import IsaLevel
from gemm.cpu.simd import Tile


@pytest.fixture
def clean_env(i8gemm_env):
    """No I8GEMM_* variable set (whatever the calling shell had), restored afterwards."""
    i8gemm_env("I8GEMM_CPU_PATH", None)
    i8gemm_env("I8GEMM_NUM_THREADS", None)
    return i8gemm_env


def test_isa_levels_are_ordered():
    assert (IsaLevel.GENERIC < IsaLevel.AVX2 < IsaLevel.AVXVNNI < IsaLevel.AVX512BW
            < IsaLevel.AVX512VNNI)
    assert [lvl.name for lvl in sorted(IsaLevel)] == [
        "GENERIC", "AVX2", "AVXVNNI", "AVX512BW", "AVX512VNNI"]
    assert [lvl.path_name for lvl in sorted(IsaLevel)] == [
        "generic", "avx2", "avxvnni", "avx512bw", "avx512vnni"]


def test_every_level_has_one_preferred_cpu_path():
    impls = cpu_impls()
    assert sorted(i.path for i in impls) == sorted(ALL_CPU_PATHS)
    for impl in impls:
        assert impl.op == "gemm_i8"
        assert impl.qualified_name == f"cpu:{impl.path}"
        assert impl.entry.name == impl.path
        assert impl.preferred == impl.entry.preferred
        # Named "<level>" or "<level>-<variant>".
        assert impl.path.partition("-")[0] == impl.level.path_name
    preferred = [i for i in impls if i.preferred]
    assert sorted(i.level for i in preferred) == sorted(IsaLevel)
    assert {i.path for i in impls if not i.preferred} == NAMED_ONLY_PATHS


def test_a_second_preferred_path_for_a_level_is_refused():
    avx2 = impl_for("avx2")
    clash = dispatch.Implementation(op="gemm_i8", backend="cpu", path="avx2-clash",
                                    level=avx2.level, entry=avx2.entry)
    with pytest.raises(ValueError, match="preferred"):
        dispatch.register(clash)
    assert "avx2-clash" not in [i.path for i in cpu_impls()]


def test_availability_is_consistent():
    levels = dispatch.available_levels()
    assert IsaLevel.GENERIC in levels   # the portable path runs anywhere
    for impl in cpu_impls():
        ok, reason = impl.available()
        assert ok == (impl.level in levels), impl.path
        if ok:
            assert reason == ""
        else:
            assert reason.startswith("CPU lacks ") and len(reason) > len("CPU lacks ")
    feats = dispatch.host_features()
    if "avx512vnni" in [lvl.path_name for lvl in levels]:
        assert feats.get("avx512vnni") and feats.get("avx512bw")


def test_best_level_is_highest_available(clean_env):
    best = dispatch.best_level()
    assert best == max(dispatch.available_levels())
    assert best == max(i.level for i in cpu_impls() if i.available()[0])
    assert dispatch.resolve("gemm_i8").level == best
    assert dispatch.resolve("gemm_i8", "cpu").level == best


def test_forced_path_via_environment(clean_env):
    if "avx2" not in available_paths():
        pytest.skip("cpu:avx2 cannot run on this machine: " + dict(
            (i.path, i.available()[1]) for i in cpu_impls())["avx2"])
    clean_env("I8GEMM_CPU_PATH", "avx2")
    impl = dispatch.resolve("gemm_i8")
    assert impl.qualified_name == "cpu:avx2"
    assert dispatch.best_level() == IsaLevel.AVX2
    assert dispatch.select("gemm_i8", (3, 40, 30), np.dtype(np.int8))[0] is impl
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (3, 40), dtype=np.int8)
    b = rng.integers(-127, 128, (40, 30), dtype=np.int8)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b), ref(a, b))
    # avx2 really runs: it rejects -128 in B, which the default (VNNI or generic) would accept.
    b[0, 0] = -128
    with pytest.raises(ValueError, match="B"):
        gemm.gemm_i8(a, b)


def test_forced_path_every_available(clean_env, cpu_path):
    clean_env("I8GEMM_CPU_PATH", f"  {cpu_path.upper()} ")   # case and spaces do not matter
    assert dispatch.resolve("gemm_i8").path == cpu_path
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (5, 33), dtype=np.int8)
    b = rng.integers(-127, 128, (33, 17), dtype=np.int8)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b), ref(a, b))
    b[1, 1] = -128
    if cpu_path in SIGN_TRICK_PATHS:
        with pytest.raises(ValueError, match="B"):
            gemm.gemm_i8(a, b)
    else:
        np.testing.assert_array_equal(gemm.gemm_i8(a, b), ref(a, b))


def test_avx2_level_prefers_the_16_bit_path(clean_env, monkeypatch):
    """On a CPU whose best level is AVX2, the default is cpu:avx2-i16 (measured faster, and
    exact for -128 in B); the sign trick cpu:avx2 runs when named."""
    if "avx2" not in available_paths():
        pytest.skip("cpu:avx2 cannot run on this machine: " + impl_for("avx2").available()[1])
    # Pretend to be an AVX2-only CPU (no AVX-512, no AVX-VNNI).
    monkeypatch.setattr(dispatch.cpu, "host_features", lambda: {"avx2": True})
    dispatch.refresh()
    try:
        assert dispatch.available_levels() == [IsaLevel.GENERIC, IsaLevel.AVX2]
        assert dispatch.resolve("gemm_i8").path == "avx2-i16"
        assert dispatch.resolve("gemm_i8", "cpu").path == "avx2-i16"
        assert dispatch.resolve("gemm_i8", "cpu:avx2").path == "avx2"
        assert dispatch.resolve("gemm_i8", "cpu:AVX2-I16").path == "avx2-i16"
        rng = np.random.default_rng(2)
        a = rng.integers(-128, 128, (4, 21), dtype=np.int8)
        b = rng.integers(-128, 128, (21, 9), dtype=np.int8)
        b[0, 0] = -128
        np.testing.assert_array_equal(gemm.gemm_i8(a, b), ref(a, b))     # the default
        with pytest.raises(ValueError, match="B"):                         # the sign trick
            gemm.gemm_i8(a, b, backend="cpu:avx2")
        clean_env("I8GEMM_CPU_PATH", "avx2")
        assert dispatch.resolve("gemm_i8").path == "avx2"
        clean_env("I8GEMM_CPU_PATH", "avx2-i16")
        assert dispatch.resolve("gemm_i8").path == "avx2-i16"
        assert dispatch.best_level() == IsaLevel.AVX2
    finally:
        monkeypatch.undo()
        dispatch.refresh()


@pytest.mark.parametrize("name", ["avx2-bogus", "avx2-", "bogus-i16"])
def test_unknown_variant(clean_env, name):
    with pytest.raises(ValueError, match="backend") as info:
        dispatch.resolve("gemm_i8", f"cpu:{name}")
    assert "avx2-i16" in str(info.value)   # the message lists the paths that exist
    clean_env("I8GEMM_CPU_PATH", name)
    with pytest.raises(ValueError, match="I8GEMM_CPU_PATH"):
        dispatch.resolve("gemm_i8")


def test_info_lists_every_path():
    from dispatch import info

    text = info.report()
    for path in ALL_CPU_PATHS:
        assert f"cpu:{path} " in text, path


def test_backend_argument_beats_environment(clean_env):
    clean_env("I8GEMM_CPU_PATH", "generic")
    best = max(dispatch.available_levels())
    assert dispatch.resolve("gemm_i8", f"cpu:{best.path_name}").level == best
    assert dispatch.resolve("gemm_i8").path == "generic"


def test_bogus_forced_path(clean_env):
    clean_env("I8GEMM_CPU_PATH", "bogus")
    with pytest.raises(ValueError, match="I8GEMM_CPU_PATH"):
        dispatch.resolve("gemm_i8")
    with pytest.raises(ValueError, match="I8GEMM_CPU_PATH"):
        gemm.gemm_i8(np.ones((2, 3), np.int8), np.ones((3, 4), np.int8))


def test_forced_path_the_cpu_lacks(clean_env):
    missing = [(i, i.available()[1]) for i in cpu_impls() if not i.available()[0]]
    if not missing:
        pytest.skip("every registered CPU path is available on this machine")
    for impl, reason in missing:
        clean_env("I8GEMM_CPU_PATH", impl.path)
        with pytest.raises(RuntimeError, match="I8GEMM_CPU_PATH") as info:
            gemm.gemm_i8(np.ones((2, 3), np.int8), np.ones((3, 4), np.int8))
        for feature in reason.removeprefix("CPU lacks ").split(", "):
            assert feature in str(info.value)


def test_environment_read_once_until_refresh(clean_env):
    """The I8GEMM_* settings are read once; dispatch.refresh() re-reads them (documented)."""
    before = dispatch.resolve("gemm_i8")
    assert before.level == max(dispatch.available_levels())
    if before.path == "generic":
        pytest.skip("generic is the best path here; nothing to switch to")
    import os

    os.environ["I8GEMM_CPU_PATH"] = "generic"   # clean_env's monkeypatch restores it
    try:
        assert dispatch.resolve("gemm_i8") is before
        dispatch.refresh()
        assert dispatch.resolve("gemm_i8").path == "generic"
    finally:
        del os.environ["I8GEMM_CPU_PATH"]
        dispatch.refresh()


def test_select_remembers_decisions(clean_env):
    shape = (7, 123, 45)
    d1 = dispatch.select("gemm_i8", shape, np.dtype(np.int8))
    d2 = dispatch.select("gemm_i8", shape, np.dtype(np.int8))
    assert d1 is d2
    impl, params = d1
    assert set(params) >= {"tile", "threads", "m_block", "p_block"}
    assert params["tile"] in impl.entry.tiles
    assert params["threads"] == 1                       # 7*123*45 MACs: below the threshold
    other = dispatch.select("gemm_i8", (8, 123, 45), np.dtype(np.int8))
    assert other is not d1
    dispatch.refresh()
    d3 = dispatch.select("gemm_i8", shape, np.dtype(np.int8))
    assert d3 is not d1 and d3[0] is d1[0] and d3[1] == d1[1]


def test_select_threads_above_threshold(clean_env):
    impl, params = dispatch.select("gemm_i8", (64, 256, 1024), np.dtype(np.int8), threads=2)
    assert params["threads"] == min(2, gemm.cpu.driver.max_threads())
    _, p1 = dispatch.select("gemm_i8", (64, 256, 1024), np.dtype(np.int8), threads=1)
    assert p1["threads"] == 1


def test_every_cpu_path_declares_a_tuning_space():
    for impl in cpu_impls():
        space = impl.tuning_space
        assert set(space.params) == {"tile", "threads", "m_block", "p_block", "c_stores",
                                     "b_prefetch", "a_packing"}, impl.path
        tiles = [space.realize({"tile": name, "threads": 1, "m_block": "all", "p_block": "all",
                                "c_stores": "cached", "b_prefetch": "none",
                                "a_packing": "shared"})["tile"]
                 for name in space.params["tile"]]
        assert len(tiles) >= 1
        assert all(isinstance(t, Tile) and t.isa == impl.path for t in tiles)
        assert tiles == list(impl.entry.tiles)
        assert tiles[0] == impl.entry.default_tile
        assert len(set(tiles)) == len(tiles)
        assert impl.default_params((4, 256, 1024), threads=1)["tile"] == tiles[0]   # few rows


def test_many_rows_take_the_paths_tall_tile():
    """A path's many_rows_tile is the heuristic's choice from MANY_ROWS rows on, the default
    tile below; the blocking follows the tile (whole tiles of rows per block)."""
    from gemm.cpu.driver import MANY_ROWS
    tall = [impl for impl in cpu_impls() if impl.entry.many_rows_tile is not None]
    assert [impl.path for impl in tall] == ["avx512vnni"]
    for impl in tall:
        for threads in (1, 2):
            few = impl.default_params((MANY_ROWS - 1, 256, 1024), threads=threads)
            many = impl.default_params((MANY_ROWS, 256, 1024), threads=threads)
            assert few["tile"] == impl.entry.default_tile
            assert many["tile"] == impl.entry.many_rows_tile
            if many["m_block"] < MANY_ROWS:
                assert many["m_block"] % many["tile"].mr == 0


def test_few_rows_over_a_streamed_b_take_the_tall_tile():
    """A decoder's output layer (few rows, B of megabytes read from beyond the caches) takes the
    path's tall tile from STREAMED_B_TALL_ROWS rows on, below MANY_ROWS, and prefetches the next
    panel of B up to STREAMED_B_PREFETCH_ROWS rows; as few rows over a B that stays in a core's
    L2 keep the default tile and the hardware's prefetchers. The tall tile packs B in panels as wide as
    the default's, so a weight whose calls cross 8 rows (a beam whose hypotheses finish) keeps
    one packed copy."""
    from gemm.cpu import driver
    vocab_k, vocab_n = 512, 32000
    tall = [impl for impl in cpu_impls() if impl.entry.many_rows_tile is not None]
    assert driver.STREAMED_B_TALL_ROWS < driver.MANY_ROWS
    for impl in tall:
        default, many = impl.entry.default_tile, impl.entry.many_rows_tile
        assert many.nr == default.nr
        assert driver.packed_b_bytes(default, vocab_k, vocab_n) >= driver.STREAMED_B_BYTES
        # N such that packed B is just under the threshold: one panel fewer than enough.
        panel_bytes = driver.packed_b_bytes(default, vocab_k, default.nr)
        small_n = (driver.STREAMED_B_BYTES // panel_bytes - 1) * default.nr
        for threads in (1, 2):
            def tile(m, n=vocab_n, impl=impl, threads=threads):
                params = impl.default_params((m, vocab_k, n), threads=threads)
                if params["m_block"] < m:
                    assert params["m_block"] % params["tile"].mr == 0
                return params["tile"]

            assert tile(driver.STREAMED_B_TALL_ROWS - 1) == default
            assert tile(driver.STREAMED_B_TALL_ROWS) == many
            assert tile(driver.MANY_ROWS - 1) == many
            assert tile(driver.MANY_ROWS - 1, n=small_n) == default
            assert tile(driver.MANY_ROWS - 1, n=small_n + default.nr) == many
            assert tile(driver.MANY_ROWS, n=small_n) == many

            def prefetches(m, n=vocab_n, impl=impl, threads=threads):
                return impl.default_params((m, vocab_k, n), threads=threads)["prefetch_b"]

            assert not prefetches(driver.STREAMED_B_TALL_ROWS - 1)
            assert prefetches(driver.STREAMED_B_TALL_ROWS)
            assert prefetches(driver.STREAMED_B_PREFETCH_ROWS)
            assert not prefetches(driver.STREAMED_B_PREFETCH_ROWS + 1)
            assert not prefetches(driver.MANY_ROWS, n=small_n)
    for impl in cpu_impls():
        if impl.entry.many_rows_tile is None:
            params = impl.default_params((16, 512, 32000), threads=2)
            assert params["tile"] == impl.entry.default_tile
            assert not params["prefetch_b"]


@pytest.mark.parametrize("microarchitecture", ["znver4", "sapphirerapids"])
def test_heuristic_streams_only_large_results(monkeypatch, microarchitecture):
    """Where streaming pays (Zen), C of STREAMING_C_BYTES or more is stored non-temporally (it
    would not stay in the cache anyway), smaller C with ordinary stores (its reader finds it in
    the cache); elsewhere every C is stored as usual."""
    from gemm.cpu import driver
    monkeypatch.setattr(dispatch.cpu, "cpu_name", lambda: microarchitecture)
    streams = microarchitecture.startswith("znver")
    assert driver.streams_large_results() == streams
    rows = driver.STREAMING_C_BYTES // (4 * 1024)
    for impl in cpu_impls():
        for threads in (1, 2):
            assert impl.default_params((rows, 256, 1024), threads=threads)["streaming"] == streams
            assert not impl.default_params((rows - 1, 256, 1024), threads=threads)["streaming"]
            assert not impl.default_params((1, 512, 32000), threads=threads)["streaming"]


def test_streamed_results_take_long_row_blocks(monkeypatch):
    """Row blocks are kept short (a few rows over every panel) so that C is written in whole
    rows; streamed stores do not read C's lines, so with them a block takes many rows, which
    keeps each panel of B in L1 for longer: a few blocks per thread, or one block on one."""
    from gemm.cpu import driver
    shape = (2048, 256, 1024)   # packed B fits the row-block budget; C is 8 MB
    for microarchitecture in ("znver4", "sapphirerapids"):
        monkeypatch.setattr(dispatch.cpu, "cpu_name", lambda m=microarchitecture: m)
        for impl in cpu_impls():
            one = impl.default_params(shape, threads=1)
            two = impl.default_params(shape, threads=2)
            assert one["streaming"] == two["streaming"] == microarchitecture.startswith("znver")
            if one["streaming"]:
                assert one["m_block"] >= shape[0]
                assert shape[0] // (driver.BLOCKS_PER_THREAD * 2) <= two["m_block"] < shape[0]
            else:
                assert one["m_block"] < 64 and two["m_block"] < 64


def test_b_prefetch_is_searched_where_it_is_emitted():
    """The tuner tries prefetching the next panel only on the SIMD paths (the portable path's
    loops have no prefetch) and only where B has a next panel; the heuristic takes it only for
    a streamed B (test_few_rows_over_a_streamed_b_take_the_tall_tile)."""
    from gemm.cpu import driver
    for impl in cpu_impls():
        space = impl.tuning_space
        limits = space.limits(threads=2)
        nr = impl.entry.default_tile.nr
        for n, wide in ((nr, False), (nr + 1, True), (32000, True)):
            shape = (16, 512, n)
            config = {**space.default(shape, limits), "b_prefetch": "next_panel"}
            assert all(r(config, shape, limits) for r in space.restrictions)
            searched = all(p(config, shape, limits) for p in space.prune)
            assert searched == (wide and impl.path != "generic"), (impl.path, n)
            streamed = impl.entry.many_rows_tile is not None and driver.streams_b(
                impl.entry, 512, n)
            assert space.default(shape, limits)["b_prefetch"] == (
                "next_panel" if streamed else "none")
            assert space.realize(config)["prefetch_b"] is True


def test_copies_of_a_per_thread_are_searched_where_every_thread_reads_all_of_a():
    """Blocks of panels have every thread read the whole of A: there the tuner tries a packed
    copy per thread against the one the caller packs. Row blocks and one thread pack their own
    rows anyway, so there it is not searched; the heuristic shares A."""
    for impl in cpu_impls():
        space = impl.tuning_space
        limits = space.limits(threads=2)
        shape = (32, 512, 8 * impl.entry.default_tile.nr)
        base = {**space.default(shape, limits), "tile": space.params["tile"][0]}
        assert space.default(shape, limits)["a_packing"] == "shared"
        cases = {"panel blocks": ({"threads": 2, "m_block": "all", "p_block": 2}, True),
                 "row blocks": ({"threads": 2, "m_block": 16, "p_block": "all"}, False),
                 "one thread": ({"threads": 1, "m_block": "all", "p_block": "all"}, False)}
        for name, (blocks, shares_a) in cases.items():
            config = {**base, **blocks, "a_packing": "per_thread"}
            assert all(r(config, shape, limits) for r in space.restrictions), name
            assert all(p(config, shape, limits) for p in space.prune) == shares_a, (impl.path, name)
            assert space.realize(config)["a_per_thread"] is True
        bad = {**base, "a_packing": "twice"}
        assert not all(r(bad, shape, limits) for r in space.restrictions)


def test_tile_widths():
    lanes = {"generic": 8, "avx2": 8, "avx2-i16": 8, "avxvnni": 8, "avx512bw": 16,
             "avx512vnni": 16}
    for impl in cpu_impls():
        for t in impl.entry.tiles:
            assert t.nr == t.nv * lanes[impl.path]


# -- host copies for GPU transfers -------------------------------------------------------------


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_the_upload_copy_finds_a_special_value_in_any_part(special):
    """A numpy A's finiteness is checked while it is copied for its upload, in parts on several
    threads: a NaN or infinity anywhere is found, and finite data arrives whole."""
    from dispatch import hostcopy

    n = 3 * hostcopy.PART_BYTES // 4 + 5  # several parts where there are threads for them
    source = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    into = np.zeros(n, np.uint32)
    assert hostcopy.copy_if_finite(into, source.view(np.uint32))
    np.testing.assert_array_equal(into, source.view(np.uint32))
    for i in (0, n // 3, n // 2 + 1, n - 1):
        bad = source.copy()
        bad[i] = special
        assert not hostcopy.copy_if_finite(into, bad.view(np.uint32)), f"missed at {i}"
    raw = np.random.default_rng(1).integers(0, 256, 2 * hostcopy.PART_BYTES + 3, dtype=np.uint8)
    copied = np.zeros_like(raw)
    hostcopy.copy_bytes(copied, raw)
    np.testing.assert_array_equal(copied, raw)
