"""The tuning store: round trip, keys, unusable files, concurrent writers, the lookup order,
select() reading it, fingerprints."""

from __future__ import annotations

import json
import multiprocessing
import time
import warnings

import numpy as np
import pytest

import dispatch
import gemm  # noqa: F401  (registers the CPU paths)
from dispatch import store as reader
from tuning import store as writer

OP = "gemm_i8"
INT8 = np.dtype(np.int8)


@pytest.fixture
def store_file(tmp_path, i8gemm_env):
    path = tmp_path / "tuning.json"
    i8gemm_env("I8GEMM_TUNING_STORE", str(path))
    i8gemm_env("I8GEMM_AUTOTUNE", None)
    return path


def impl_and_limits(threads=2):
    impl = dispatch.resolve(OP)
    return impl, impl.tuning_space.limits(threads=threads)


def entry(shape, config, *, threads=2, **override):
    impl, limits = impl_and_limits(threads)
    e = reader.lookup_key(OP, impl.qualified_name, impl.tuning_space, np.dtype(np.int8), limits,
                          shape)
    e.update(config=config, time_s=1e-3, default_time_s=2e-3,
             default_config=impl.tuning_space.default(shape, limits), candidate_hash="abc",
             shape=list(shape))
    e.update(override)
    return e


def config(tile="8x3", threads=2, m_block=16, p_block=4, c_stores="cached", b_prefetch="none",
           a_packing="shared"):
    return {"tile": tile, "threads": threads, "m_block": m_block, "p_block": p_block,
            "c_stores": c_stores, "b_prefetch": b_prefetch, "a_packing": a_packing}


def look(shape, threads=2, dtype=INT8):
    impl, limits = impl_and_limits(threads)
    return reader.lookup(OP, impl.qualified_name, impl.tuning_space, dtype, limits, shape)


# ---------------------------------------------------------------------------------------------
# Round trip and keys.


def test_round_trip(store_file):
    shape = (64, 256, 1024)
    e = entry(shape, config())
    writer.record([e])
    assert store_file.exists()
    entries = reader.read(store_file)
    assert list(entries.values()) == [e]
    assert look(shape) == (config(), "tuned")
    doc = json.loads(store_file.read_text())
    assert doc["format"] == "i8gemm-tuning-store" and doc["schema"] == 1
    assert not list(store_file.parent.glob("*.tmp")), "the temporary file was left behind"


def test_a_second_record_merges_and_replaces_per_key(store_file):
    writer.record([entry((64, 256, 1024), config()), entry((8, 256, 1024), config(m_block=8))])
    writer.record([entry((64, 256, 1024), config(tile="4x4"))])
    entries = reader.read(store_file)
    assert len(entries) == 2
    assert look((64, 256, 1024))[0]["tile"] == "4x4"
    assert look((8, 256, 1024))[0]["m_block"] == 8


@pytest.mark.parametrize("field,value", [("fingerprint", "cpu|Other CPU|other|0123456789ab"),
                                         ("version", "cpu-0"), ("limits", "threads=64"),
                                         ("implementation", "cpu:generic"), ("op", "other_op"),
                                         ("dtype", "float16")])
def test_an_entry_for_another_machine_or_version_is_never_used(store_file, field, value):
    shape = (64, 256, 1024)
    # Both the exact bucket and a neighbouring one: neither may be used.
    writer.record([entry(shape, config(), **{field: value}),
                   entry((32, 256, 1024), config(), **{field: value})])
    cfg, source = look(shape)
    assert source == "default"
    impl, limits = impl_and_limits()
    assert cfg == impl.tuning_space.default(shape, limits)


def test_entries_of_another_candidate_set_are_still_used(store_file):
    """The candidate hash marks an entry for re-tuning (a candidate was added) but a config that
    is still allowed stays better than nothing (Triton's key-changes-with-candidates failure)."""
    writer.record([entry((64, 256, 1024), config(), candidate_hash="from-an-older-space")])
    assert look((64, 256, 1024)) == (config(), "tuned")


def test_every_a_dtype_shares_the_int8_entry(store_file):
    writer.record([entry((64, 256, 1024), config())])
    for dtype in (np.int8, np.uint8, np.float32):
        assert look((64, 256, 1024), dtype=np.dtype(dtype)) == (config(), "tuned")


# ---------------------------------------------------------------------------------------------
# The lookup order: exact key -> same K, N nearest M bucket -> heuristic default.


def test_lookup_fallback_order(store_file):
    k, n = 256, 1024
    writer.record([entry((8, k, n), config(m_block=8)), entry((64, k, n), config(m_block=64))])
    assert reader.m_bucket(1) == 1 and reader.m_bucket(5) == 8 and reader.m_bucket(64) == 64
    assert look((8, k, n)) == (config(m_block=8), "tuned")
    assert look((5, k, n)) == (config(m_block=8), "tuned")         # bucket 8
    assert look((40, k, n)) == (config(m_block=64), "tuned")       # bucket 64
    assert look((16, k, n)) == (config(m_block=8), "nearest")      # 16: 8 is one step, 64 two
    assert look((200, k, n)) == (config(m_block=64), "nearest")    # 256: 64 is nearest
    assert look((2, k, n)) == (config(m_block=8), "nearest")
    assert look((32, k, n)) == (config(m_block=64), "nearest")     # 32: 64 is one step, 8 two
    impl, limits = impl_and_limits()
    assert look((8, k, n + 1)) == (impl.tuning_space.default((8, k, n + 1), limits), "default")
    assert look((8, k + 4, n))[1] == "default"


def test_lookup_ties_go_to_the_smaller_bucket(store_file):
    writer.record([entry((8, 64, 64), config(m_block=8)), entry((32, 64, 64), config(m_block=32))])
    assert look((16, 64, 64)) == (config(m_block=8), "nearest")


def test_lookup_skips_an_entry_whose_config_is_not_allowed(store_file):
    k, n = 256, 1024
    writer.record([entry((8, k, n), config(tile="99x9")),            # not a tile of this path
                   entry((64, k, n), config(m_block=64))])
    assert look((8, k, n)) == (config(m_block=64), "nearest")
    writer.record([entry((64, k, n), config(m_block=7))])             # not a multiple of MR
    assert look((8, k, n))[1] == "default"


# ---------------------------------------------------------------------------------------------
# select() reads the store.


def test_select_uses_the_store(store_file):
    shape = (64, 256, 1024)
    writer.record([entry(shape, config(tile="8x3", m_block=16, p_block=4))])
    impl, params = dispatch.select(OP, shape, np.dtype(np.int8), threads=2)
    assert dispatch.explain(OP, shape, np.dtype(np.int8), threads=2) == "tuned"
    assert (params["tile"].mr, params["tile"].nv) == (8, 3)
    assert params["m_block"] == 16 and params["p_block"] == 4
    assert dispatch.explain(OP, (100, 256, 1024), np.dtype(np.int8), threads=2) == "nearest"
    assert dispatch.explain(OP, shape, np.dtype(np.int8), threads=1) == "default"
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (64, 256), dtype=np.int8)
    b = rng.integers(-127, 128, (256, 1024), dtype=np.int8)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b, threads=2),
                                  a.astype(np.int32) @ b.astype(np.int32))


def test_select_from_the_store_is_a_cached_dictionary_lookup(store_file):
    """Sanity check of the per-call cost (no absolute timing asserted beyond a very loose
    bound): 10 000 decisions for a tuned shape complete and all return the one cached decision."""
    shape = (64, 256, 1024)
    writer.record([entry(shape, config())])
    first = dispatch.select(OP, shape, np.dtype(np.int8), threads=2)
    t0 = time.perf_counter()
    same = all(dispatch.select(OP, shape, np.dtype(np.int8), threads=2) is first
               for _ in range(10_000))
    elapsed = time.perf_counter() - t0
    assert same
    assert elapsed < 5.0, f"10k cached lookups took {elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------
# Unusable store files: ignored with one warning, replaced by the next write.

VALID = json.dumps({"format": "i8gemm-tuning-store", "schema": 1, "entries": []})
UNUSABLE = {
    "corrupt": "{this is not json",
    "truncated": json.dumps({"format": "i8gemm-tuning-store", "schema": 1,
                             "entries": [{"op": "gemm_i8", "k": 1}] * 3})[:70],
    "empty": "",
    "foreign-json": json.dumps({"name": "some other program's cache", "entries": []}),
    "foreign-list": json.dumps([1, 2, 3]),
    "future-schema": json.dumps({"format": "i8gemm-tuning-store", "schema": 99, "entries": []}),
    "binary": "\x00\x01\x02\xff",
}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_an_unusable_store_is_ignored_with_one_warning_and_replaced(store_file, kind):
    store_file.write_text(UNUSABLE[kind], encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="ignoring it"):
        assert reader.read(store_file) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reader.read(store_file) == {}                   # one warning, not one per read
        cfg, source = look((64, 256, 1024))                    # select still works
        assert source == "default"
    writer.record([entry((64, 256, 1024), config())])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(reader.read(store_file)) == 1
    assert look((64, 256, 1024)) == (config(), "tuned")


def test_a_missing_store_is_empty_without_warning(store_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reader.read(store_file) == {}
        assert look((64, 256, 1024))[1] == "default"


def test_malformed_entries_inside_a_valid_store_are_dropped(store_file):
    good = entry((64, 256, 1024), config())
    doc = {"format": "i8gemm-tuning-store", "schema": 1,
           "entries": [good, {"op": "gemm_i8"}, "junk", {**good, "k": -1}]}
    store_file.write_text(json.dumps(doc))
    assert list(reader.read(store_file).values()) == [good]


def test_clear_empties_the_store(store_file):
    writer.record([entry((64, 256, 1024), config()), entry((8, 256, 1024), config(m_block=8))])
    assert writer.clear() == 2
    assert reader.read(store_file) == {}
    assert look((64, 256, 1024))[1] == "default"


# ---------------------------------------------------------------------------------------------
# Two processes writing at once lose nothing.


def _write_many(path: str, worker: int, count: int) -> None:
    from tuning import store as w

    for i in range(count):
        w.record([{"op": "gemm_i8", "implementation": "cpu:test", "fingerprint": "fp",
                   "dtype": "int8", "limits": "threads=1", "version": "v", "k": worker + 1,
                   "n": i + 1, "m_bucket": 1, "config": {"i": i}}], path=path)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.json"
    count = 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(path), w, count)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entries = reader.read(path)
    assert len(entries) == 2 * count
    assert {(e["k"], e["n"]) for e in entries.values()} == {
        (w + 1, i + 1) for w in range(2) for i in range(count)}
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Fingerprints.


def test_cpu_fingerprint_names_the_cpu_and_its_features():
    fp = dispatch.cpu_fingerprint()
    kind, model, arch, features = fp.split("|")
    assert kind == "cpu"
    assert model == " ".join(dispatch.cpu_model().split()).replace("|", "/")
    assert arch == dispatch.cpu_name()
    assert len(features) == 12 and int(features, 16) >= 0


def test_gpu_fingerprint_names_adapter_driver_and_backend():
    info = {"vendor": "llvmpipe", "device": "llvmpipe (LLVM 15.0.6, 256 bits)",
            "description": "Mesa 22.3.6 (LLVM 15.0.6)", "adapter_type": "CPU",
            "backend_type": "Vulkan", "vendor_id": 65541, "device_id": 0}
    fp = dispatch.gpu_fingerprint(info)
    assert fp == "gpu|llvmpipe (LLVM 15.0.6, 256 bits)|Mesa 22.3.6 (LLVM 15.0.6)|Vulkan"
    newer_driver = dispatch.gpu_fingerprint({**info, "description": "Mesa 24.0 (LLVM 17)"})
    assert newer_driver != fp
    other_backend = dispatch.gpu_fingerprint({**info, "backend_type": "Metal"})
    assert other_backend != fp
