"""Repeated GPU calls: the cached call plans and the parameter ring never serve stale data.

gemm_i8 on the GPU keeps one plan per kind of call (shapes, dtypes, flags, the same B object)
and queues many calls before submitting them; these tests change everything a repeated call may
change -- A's values, a_quant_mult, the bias, out=, B itself -- with many calls in flight, and
check every result against the CPU path. Skipped, with the reason, where wgpu finds no adapter.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from conftest import ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gemm
from dispatch import gpu
from gemm.wgsl import driver

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def need_gpu():
    why = gpu.unavailable_reason()
    if why:
        pytest.skip(f"no GPU adapter: {why}")


def rand_i8(rng, shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def close(gpu_result, cpu_result):
    # The GPU may fuse the multiply and the bias add (one rounding instead of two).
    np.testing.assert_allclose(gpu_result, cpu_result, rtol=1e-6,
                               atol=1e-6 * float(np.abs(cpu_result).max() + 1))


STEP = st.fixed_dictionaries({
    "a_on_gpu": st.booleans(),
    "qa": st.floats(2.0, 60.0, width=32),
    "bias": st.sampled_from(["none", "numpy", "gpu"]),
    "out": st.sampled_from(["none", "numpy", "gpu"]),
    "relu": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
})


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 12), k=st.integers(1, 70), n=st.integers(1, 40),
       steps=st.lists(STEP, min_size=2, max_size=45))
def test_a_sequence_of_calls_in_flight_gives_each_its_own_result(m, k, n, steps):
    """Calls of one shape with changing values are all queued before any is read back, so they
    share cached plans and ring slots; every result must be its own."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    pb = gemm.prepare_b(rng.standard_normal((k, n)).astype(np.float32), 25.0)
    gb = pb.to_gpu()
    pending, bias_host = [], rng.standard_normal(n).astype(np.float32)
    for step in steps:
        srng = np.random.default_rng(step["seed"])
        a = srng.standard_normal((m, k)).astype(np.float32)
        bias_host[:] = srng.standard_normal(n)  # the same numpy array, changed in place
        bias = {"none": None, "numpy": bias_host, "gpu": gemm.GpuArray.from_numpy(bias_host)}[step["bias"]]
        out = {"none": None, "numpy": np.empty((m, n), np.float32),
               "gpu": gemm.GpuArray((m, n), np.float32)}[step["out"]]
        a_in = gemm.GpuArray.from_numpy(a) if step["a_on_gpu"] else a
        c = gemm.gemm_i8(a_in, gb, a_quant_mult=float(step["qa"]), bias=bias, relu=step["relu"],
                         out=out, backend="gpu")
        if out is not None:
            assert c is out
        expected = gemm.gemm_i8(a, pb, a_quant_mult=float(step["qa"]),
                                bias=None if bias is None else bias_host.copy(), relu=step["relu"])
        pending.append((c, expected))
    for c, expected in pending:
        close(c.numpy() if isinstance(c, gemm.GpuArray) else c, expected)


def test_many_multipliers_in_one_submission():
    """More calls than the parameter ring holds, each with its own a_quant_mult, before one
    read-back: the ring must flush in between, never overwrite a queued block."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 40)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((40, 24)).astype(np.float32), 30.0)
    ga, gb = gemm.GpuArray.from_numpy(a), pb.to_gpu()
    qas = np.linspace(3.0, 50.0, gpu.MAX_PENDING + 7)
    outs = [gemm.gemm_i8(ga, gb, a_quant_mult=float(q)) for q in qas]
    for q, c in zip(qas, outs, strict=True):
        close(c.numpy(), gemm.gemm_i8(a, pb, a_quant_mult=float(q)))


def test_changed_a_and_int_results_stay_exact():
    rng = np.random.default_rng(2)
    b = gemm.prepare_b_quantized(rand_i8(rng, (33, 19)))
    ga = gemm.GpuArray((5, 33), np.int8)
    for _ in range(4):
        a = rand_i8(rng, (5, 33))
        # numpy A (uploaded into the plan's buffer) and GPU A (written in place) alike
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend="gpu"), ref(a, b.quantized()))
        gpu.upload(ga.buffer, a)
        np.testing.assert_array_equal(gemm.gemm_i8(ga, b).numpy(), ref(a, b.quantized()))


def test_numpy_a_into_gpu_out_twice_before_reading():
    """Two calls upload A into the same cached buffer while the first call's kernels may not have
    run: the second upload must wait for them."""
    rng = np.random.default_rng(3)
    b = gemm.prepare_b_quantized(rand_i8(rng, (20, 12)))
    a1, a2 = rand_i8(rng, (4, 20)), rand_i8(rng, (4, 20))
    g1, g2 = gemm.GpuArray((4, 12), np.int32), gemm.GpuArray((4, 12), np.int32)
    gemm.gemm_i8(a1, b, out=g1)
    gemm.gemm_i8(a2, b, out=g2)
    np.testing.assert_array_equal(g1.numpy(), ref(a1, b.quantized()))
    np.testing.assert_array_equal(g2.numpy(), ref(a2, b.quantized()))


def test_a_new_b_of_the_same_shape_is_used():
    """Each B is a new object (Python may reuse a dead one's id): never the old B's weights."""
    rng = np.random.default_rng(4)
    a = rand_i8(rng, (2, 30))
    for _ in range(6):
        bq = rand_i8(rng, (30, 9))
        for b in (gemm.prepare_b_quantized(bq), gemm.prepare_b_quantized(bq).to_gpu()):
            np.testing.assert_array_equal(gemm.gemm_i8(a, b, backend="gpu"), ref(a, bq))
        del b
        gc.collect()


def test_cached_calls_keep_their_checks():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 16)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((16, 8)).astype(np.float32), 20.0)
    out = np.empty((3, 8), np.float32)
    gemm.gemm_i8(a, pb, a_quant_mult=10.0, out=out, backend="gpu")  # now cached
    for bad in (-1.0, 0.0, float("nan"), float("inf"), 1e-60, -1e-60):
        with pytest.raises(ValueError, match="a_quant_mult"):
            gemm.gemm_i8(a, pb, a_quant_mult=bad, out=out, backend="gpu")
    with pytest.raises(TypeError, match="a_quant_mult"):
        gemm.gemm_i8(a, pb, a_quant_mult=object(), out=out, backend="gpu")
    with pytest.raises(ValueError, match="out: must be C-contiguous"):
        gemm.gemm_i8(a, pb, a_quant_mult=10.0, out=np.empty((8, 3), np.float32).T, backend="gpu")
    bad_a = a.copy()
    bad_a[1, 2] = np.nan
    with pytest.raises(ValueError, match="A: contains NaN"):
        gemm.gemm_i8(bad_a, pb, a_quant_mult=10.0, out=out, backend="gpu")
    # a 0-d array multiplier changed in place is read again
    qa = np.array(10.0)
    c1 = gemm.gemm_i8(a, pb, a_quant_mult=qa, backend="gpu")
    qa[()] = 5.0
    close(gemm.gemm_i8(a, pb, a_quant_mult=qa, backend="gpu"), gemm.gemm_i8(a, pb, a_quant_mult=5.0))
    close(c1, gemm.gemm_i8(a, pb, a_quant_mult=10.0))


def test_caches_hold_no_array_of_the_caller():
    """Arrays passed to cached calls die with the caller's last reference, B included (its plans
    and their temporaries go with it)."""
    rng = np.random.default_rng(6)
    pb = gemm.prepare_b(rng.standard_normal((24, 10)).astype(np.float32), 20.0)
    ga = gemm.GpuArray.from_numpy(rng.standard_normal((3, 24)).astype(np.float32))
    bias = gemm.GpuArray.from_numpy(rng.standard_normal(10).astype(np.float32))
    out = gemm.GpuArray((3, 10), np.float32)
    for _ in range(3):
        gemm.gemm_i8(ga, pb, a_quant_mult=4.0, bias=bias, out=out)
    out.numpy()
    refs = [weakref.ref(x) for x in (ga, bias, out, pb, pb.to_gpu())]
    plans = len(driver._CALLS)
    del ga, bias, out, pb
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert len(driver._CALLS) == plans - 1


def test_dropped_buffers_leave_the_bind_group_cache(monkeypatch):
    """A buffer the pool does not keep is not kept alive by a cached bind group either."""
    rng = np.random.default_rng(7)
    b = gemm.prepare_b_quantized(rand_i8(rng, (8, 8))).to_gpu()
    out = gemm.GpuArray((2, 8), np.int32)
    gemm.gemm_i8(gemm.GpuArray.from_numpy(rand_i8(rng, (2, 8))), b, out=out)
    out.numpy()
    buffer = out.buffer
    assert buffer in gpu._BIND_GROUPS_OF
    monkeypatch.setattr(gpu, "_POOL_KEEP_BYTES", 0)  # the pool is full: released buffers go
    del out
    gc.collect()
    assert buffer not in gpu._BIND_GROUPS_OF
    assert not any(buffer in key[1] for key in gpu._BIND_GROUPS)


def test_transfers_per_numpy_call():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((2, 12)).astype(np.float32)
    pb = gemm.prepare_b(rng.standard_normal((12, 6)).astype(np.float32), 20.0)
    bias = rng.standard_normal(6).astype(np.float32)
    gemm.gemm_i8(a, pb, a_quant_mult=3.0, bias=bias, backend="gpu")
    before = dict(gpu.TRANSFERS)
    for _ in range(3):
        gemm.gemm_i8(a, pb, a_quant_mult=3.0, bias=bias, backend="gpu")
    assert gpu.TRANSFERS["upload"] - before.get("upload", 0) == 6  # A and the bias, each call
    assert gpu.TRANSFERS["download"] - before.get("download", 0) == 3  # C


def test_kernel_timing_runs_the_planned_dispatches():
    """bench and sweep time a call's dispatches outside the ring (their parameter blocks in
    buffers of their own); the timed list must still compute the right thing."""
    rng = np.random.default_rng(9)
    a, bq = rand_i8(rng, (6, 40)), rand_i8(rng, (40, 30))
    plan = driver.build(gemm.GpuArray.from_numpy(a), gemm.prepare_b_quantized(bq).to_gpu())
    seconds, how = gpu.time_dispatches(plan.dispatches, repeats=2, min_seconds=0.0)
    assert seconds > 0 and how in ("timestamps", "wall")
    np.testing.assert_array_equal(plan.c.numpy(), ref(a, bq))


def test_parameter_blocks_are_checked():
    program = gpu.pipeline(gemm.wgsl.kernels.gather_b_source(), "rrrrwwwp")
    with pytest.raises(ValueError, match="params: expected a parameter block"):
        gpu.enqueue(program, None, (1, 1, 1), np.zeros(65, np.uint32))
    with pytest.raises(ValueError, match="bindings: a parameter block 'p' must be the last"):
        gpu.pipeline(gemm.wgsl.kernels.gather_b_source(), "rrrrwwpw")


def test_cached_temporaries_are_bounded(monkeypatch):
    rng = np.random.default_rng(10)
    pb = gemm.prepare_b_quantized(rand_i8(rng, (16, 8)))
    monkeypatch.setattr(driver, "MAX_CALL_BYTES", 1)
    for m in (1, 2, 3):
        a = rand_i8(rng, (m, 16))
        np.testing.assert_array_equal(gemm.gemm_i8(a, pb, backend="gpu"), ref(a, pb.quantized()))
        assert len(driver._CALLS) == 1  # each new one evicts the older: the newest always stays
