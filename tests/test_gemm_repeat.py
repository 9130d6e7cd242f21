"""Repeated calls with one PreparedB, as a decoder makes them step after step: a call like an
earlier one runs that call's kept plan (gemm/cpu/plan.py), and any difference from it -- shapes,
dtypes, options, arrays changed in place, settings re-read -- is honoured."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dispatch
import gemm
from gemm.cpu import driver
from gemm.cpu import plan as cpu_plan

K, N = 37, 50
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def weights(seed=0):
    rng = np.random.default_rng(seed)
    bq = rng.integers(-127, 128, (K, N), dtype=np.int8)
    qb = rng.uniform(5, 50, N).astype(np.float32)
    return bq, qb


# The kind of one call: (rows, A's kind, a_zero_point given, b_zero_point kind, out_scale kind,
# bias, relu, out given, threads). Kinds are drawn from a small pool, so that sequences repeat
# them; each call draws its own values (the multipliers, scales and zero points a decoder's
# steps or a dynamically quantized A bring), which a kept plan must not keep.
CALL_ST = st.tuples(
    st.sampled_from([1, 3, 8, 33]),
    st.sampled_from(["int8", "uint8", "float32", "float32 a_scale"]),
    st.booleans(),
    st.sampled_from(["none", "scalar", "vector"]),
    st.sampled_from(["none", "scalar", "vector"]),
    st.booleans(), st.booleans(), st.booleans(), st.sampled_from([1, 2]))


@st.composite
def kinds_pool(draw):
    """Six call kinds: one, and five that each differ from it in one field, so that a key
    missing a field the plan depends on shows as a wrong result."""
    base = draw(CALL_ST)
    pool = [base]
    for _ in range(5):
        field = draw(st.integers(0, len(base) - 1))
        pool.append(base[:field] + (draw(CALL_ST)[field],) + base[field + 1:])
    return pool


def call_arguments(call, rng):
    """The operands and keyword arguments of one call of a drawn kind, with values of its own."""
    m, a_kind, with_za, zb_kind, scale_kind, with_bias, relu, with_out, threads = call
    kwargs = {"threads": threads}
    za = int(rng.integers(1, 10)) if with_za else 0
    if a_kind == "int8":
        a = rng.integers(-128, 128, (m, K), dtype=np.int8)
        za = -za
    elif a_kind == "uint8":
        a = rng.integers(0, 256, (m, K), dtype=np.uint8)
    else:
        a = rng.normal(0, 1, (m, K)).astype(np.float32)
        if a_kind == "float32":
            za, zb_kind, scale_kind = 0, "none", "none"
            kwargs["a_quant_mult"] = float(rng.uniform(5, 50))
        else:
            kwargs["a_scale"] = np.float32(rng.uniform(0.01, 0.05))
    kwargs["a_zero_point"] = za
    if zb_kind == "scalar":
        kwargs["b_zero_point"] = int(rng.integers(-5, 6))
    elif zb_kind == "vector":
        kwargs["b_zero_point"] = rng.integers(-5, 6, N).astype(np.int32)
    if scale_kind == "scalar":
        kwargs["out_scale"] = np.float32(rng.uniform(0.001, 0.1))
    elif scale_kind == "vector":
        kwargs["out_scale"] = rng.uniform(0.001, 0.1, N).astype(np.float32)
    float_out = "a_quant_mult" in kwargs or "out_scale" in kwargs
    if float_out:
        if with_bias:
            kwargs["bias"] = rng.normal(0, 1, N).astype(np.float32)
        kwargs["relu"] = relu
    if with_out:
        kwargs["out"] = np.full((m, N), 7, np.float32 if float_out else np.int32)
    return a, kwargs


@SETTINGS
@given(calls=st.lists(st.sampled_from(range(6)), min_size=2, max_size=14),
       pool=kinds_pool(), seed=st.integers(0, 2**32 - 1))
def test_repeated_calls_on_one_weight_match_calls_on_a_fresh_one(calls, pool, seed):
    """Each call on a shared B (kept plans) equals the same call on a B prepared just for it
    (no plan kept), bit for bit; int32 results also equal numpy's product."""
    rng = np.random.default_rng(seed)
    bq, qb = weights()
    shared = gemm.prepare_b_quantized(bq, quant_mult=qb)
    for index in calls:
        a, kwargs = call_arguments(pool[index], rng)
        fresh_kwargs = {**kwargs, "out": None if "out" not in kwargs else kwargs["out"].copy()}
        got = gemm.gemm_i8(a, shared, **kwargs)
        expected = gemm.gemm_i8(a, gemm.prepare_b_quantized(bq, quant_mult=qb), **fresh_kwargs)
        np.testing.assert_array_equal(got, expected, err_msg=str(pool[index]))
        if got.dtype == np.int32 and a.dtype != np.float32:
            zb = kwargs.get("b_zero_point", 0)
            want = (a.astype(np.int32) - kwargs["a_zero_point"]) @ (bq.astype(np.int32) - zb)
            np.testing.assert_array_equal(got, want)


@pytest.fixture
def decisions(monkeypatch):
    """Counts dispatch.select's calls: a call that runs a kept plan decides nothing."""
    count = [0]
    select = dispatch.select

    def counting(*args, **kwargs):
        count[0] += 1
        return select(*args, **kwargs)

    monkeypatch.setattr(dispatch, "select", counting)
    return count


def test_a_repeated_call_runs_its_kept_plan(decisions):
    bq, _ = weights()
    b = gemm.prepare_b_quantized(bq)
    a = np.random.default_rng(1).integers(-128, 128, (4, K), dtype=np.int8)
    np.testing.assert_array_equal(gemm.gemm_i8(a, b, threads=1), ref(a, bq))
    assert decisions[0] == 1
    for _ in range(3):
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, threads=1), ref(a, bq))
    assert decisions[0] == 1
    gemm.gemm_i8(a[:3], b, threads=1)          # other rows: a plan of its own
    gemm.gemm_i8(a, b, threads=2)              # other threads
    gemm.gemm_i8(a.astype(np.uint8), b, threads=1)
    assert decisions[0] == 4
    dispatch.refresh()                          # settings re-read: every plan is made again
    gemm.gemm_i8(a, b, threads=1)
    assert decisions[0] == 5


def test_the_autotuners_decisions_are_not_kept(decisions, monkeypatch):
    """While the autotuner runs, select() decides provisionally: a call without a configuration
    of its own keeps no plan then."""
    bq, _ = weights()
    b = gemm.prepare_b_quantized(bq)
    a = np.ones((2, K), np.int8)
    monkeypatch.setattr(dispatch.registry, "_AUTOTUNING", True)
    gemm.gemm_i8(a, b, threads=1)
    gemm.gemm_i8(a, b, threads=1)
    assert decisions[0] == 2


def test_arrays_changed_in_place_between_calls_are_read_again():
    rng = np.random.default_rng(2)
    bq, qb = weights()
    b = gemm.prepare_b_quantized(bq, quant_mult=qb)
    a = rng.integers(0, 256, (3, K), dtype=np.uint8)
    zb = np.zeros(N, np.int32)
    scale = np.full(N, 0.5, np.float32)
    bias = np.zeros(N, np.float32)
    for step in range(3):
        zb[:] = rng.integers(-4, 5, N)
        scale[:] = rng.uniform(0.1, 1, N)
        bias[:] = rng.normal(0, 1, N)
        got = gemm.gemm_i8(a, b, a_zero_point=5, b_zero_point=zb, out_scale=scale, bias=bias)
        exact = (a.astype(np.int64) - 5) @ (bq.astype(np.int64) - zb)
        np.testing.assert_array_equal(
            got, exact.astype(np.float32) * scale + bias, err_msg=f"step {step}")


def test_a_repeated_call_is_checked_as_the_first_was():
    bq, qb = weights()
    b = gemm.prepare_b_quantized(bq, quant_mult=qb)
    a = np.zeros((2, K), np.uint8)
    gemm.gemm_i8(a, b, a_zero_point=1)
    gemm.gemm_i8(a, b, a_zero_point=1, out=np.empty((2, N), np.int32))
    with pytest.raises(TypeError, match="a_zero_point"):
        gemm.gemm_i8(a, b, a_zero_point=1.0)
    with pytest.raises(ValueError, match="a_zero_point"):
        gemm.gemm_i8(a, b, a_zero_point=256)
    with pytest.raises(ValueError, match="out"):
        gemm.gemm_i8(a, b, a_zero_point=1, out=np.empty((3, N), np.int32))
    with pytest.raises(TypeError, match="out"):
        gemm.gemm_i8(a, b, a_zero_point=1, out=np.empty((2, N), np.float32))
    bias = np.ones(N, np.float32)
    gemm.gemm_i8(a, b, out_scale=0.5, bias=bias)
    with pytest.raises(ValueError, match="bias"):
        gemm.gemm_i8(a, b, out_scale=0.5, bias=np.ones(N + 1, np.float32))
    with pytest.raises(TypeError, match="bias"):
        gemm.gemm_i8(a, b, out_scale=0.5, bias=bias.astype(np.float64))
    af = np.ones((2, K), np.float32)
    gemm.gemm_i8(af, b, a_quant_mult=10.0)
    af[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gemm.gemm_i8(af, b, a_quant_mult=10.0)
    gemm.gemm_i8(af[:1], b, a_scale=0.1)
    with pytest.raises(ValueError, match="NaN"):
        gemm.gemm_i8(af[1:], b, a_scale=0.1)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_kept_streaming_plan_checks_each_outs_alignment(threads):
    """Streaming stores need C aligned (driver.can_stream_into); a kept plan that streams into
    one `out` must not stream into the next if that one is not aligned."""
    m, k, n = 8, 64, 64
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    bq = rng.integers(-127, 128, (k, n), dtype=np.int8)
    b = gemm.prepare_b_quantized(bq)
    aligned = driver.aligned_empty((m, n), np.int32)
    unaligned = np.empty(m * n + 1, np.int32)[1:].reshape(m, n)
    assert driver.can_stream_into(aligned) and not driver.can_stream_into(unaligned)
    params = {"streaming": True, "threads": threads, "m_block": 8, "p_block": 1}
    for out in (aligned, unaligned, aligned, unaligned):
        out.fill(-1)
        gemm.gemm_i8(a, b, out=out, threads=threads, _params=params)
        np.testing.assert_array_equal(out, ref(a, bq))


def test_the_plans_kept_per_weight_are_bounded():
    bq, _ = weights()
    b = gemm.prepare_b_quantized(bq)
    rng = np.random.default_rng(4)
    for m in range(1, 2 * cpu_plan.PLANS_PER_WEIGHT + 1):
        a = rng.integers(-128, 128, (m, K), dtype=np.int8)
        np.testing.assert_array_equal(gemm.gemm_i8(a, b, threads=1), ref(a, bq))
    assert len(b._cpu_plans) == cpu_plan.PLANS_PER_WEIGHT


def test_a_pickled_weight_leaves_its_plans_behind():
    """A plan holds this machine's decisions (a path for this CPU, tiles of this tuning store);
    a weight pickled and loaded elsewhere must decide again there."""
    import pickle

    bq, _ = weights()
    b = gemm.prepare_b_quantized(bq)
    a = np.random.default_rng(5).integers(-128, 128, (3, K), dtype=np.int8)
    gemm.gemm_i8(a, b, threads=1)
    assert b._cpu_plans
    loaded = pickle.loads(pickle.dumps(b))
    assert loaded._cpu_plans is None
    np.testing.assert_array_equal(gemm.gemm_i8(a, loaded, threads=1), ref(a, bq))
    assert loaded.shape == b.shape and loaded.quant_mult is None
