"""The ops CPU kernels share work between threads in blocks taken from a shared counter: every
block is computed exactly once, and the result never depends on the thread count, the block
size or whether `out` is the input itself (each row, slab or run of values is still computed by
the same serial code)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ops
from ops.cpu import quantize as cpu_quantize
from ops.cpu import threads as cpu_threads

THREADS = min(2, numba.config.NUMBA_NUM_THREADS)


def _in_place(f, x, threads):
    y = x.copy()
    assert f(y, out=y, threads=threads) is y
    return y


@settings(max_examples=200, deadline=None)
@given(units=st.integers(0, 5000), unit_values=st.integers(0, 70000), threads=st.integers(1, 16))
def test_split_covers_every_unit_in_blocks_of_bounded_size(units, unit_values, threads):
    workers, block = cpu_threads.split(units, unit_values, threads)
    assert 1 <= workers <= max(threads, 1) and block >= 1
    blocks = -(-units // block)
    if units == 0:
        return
    assert workers <= blocks
    if threads > 1 and units > 1:
        # Small enough that each thread gets about BLOCKS_PER_THREAD blocks (up to rounding)...
        fair = -(-units // (threads * cpu_threads.BLOCKS_PER_THREAD))
        assert block <= fair
        # ...and otherwise big enough that taking one from the counter costs nothing.
        assert block == fair or block * max(unit_values, 1) >= cpu_threads.BLOCK_VALUES
    else:
        assert (workers, block) == (1, units)


@pytest.mark.skipif(THREADS < 2, reason="numba has a single thread here")
@pytest.mark.parametrize("block_values", [1, 7, 1 << 14])
def test_tiny_blocks_and_many_threads_give_the_serial_result(monkeypatch, block_values):
    """Blocks from one unit up, and small arrays made to run in parallel: bit for bit the serial
    result, for every kernel that splits its work."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((37, 515)) * 6).astype(np.float32)
    x[3, 100] = -np.inf
    x[5] = -np.inf
    x[8, 7] = np.nan
    x3 = rng.standard_normal((9, 13, 11)).astype(np.float32)
    w = rng.standard_normal(515).astype(np.float32)
    b = rng.standard_normal(515).astype(np.float32)
    r = rng.standard_normal((37, 515)).astype(np.float32)
    q = rng.integers(-128, 128, (37, 515), dtype=np.int8)
    scale = (rng.random(13) + 0.1).astype(np.float32)
    zp = rng.integers(-5, 5, 13).astype(np.int8)
    finite = np.nan_to_num(x, neginf=-3.0)
    calls = {
        "logsoftmax": lambda t: ops.logsoftmax(x, threads=t),
        "softmax": lambda t: ops.softmax(x, threads=t),
        "logsoftmax axis 1": lambda t: ops.logsoftmax(x3, axis=1, threads=t),
        "softmax axis 0": lambda t: ops.softmax(x3, axis=0, threads=t),
        "softmax float32_steps": lambda t: ops.softmax(x, float32_steps=True, threads=t),
        "log_softmax_topk": lambda t: ops.log_softmax_topk(x, 5, threads=t),
        "layer_norm": lambda t: ops.layer_norm(x, w, b, threads=t),
        "layer_norm residual": lambda t: ops.layer_norm(finite, w, None, residual=r, threads=t),
        "layer_norm float32_steps": lambda t: ops.layer_norm(finite, w, b, residual=r,
                                                             float32_steps=True, threads=t),
        "bias_add": lambda t: ops.bias_add(x, b, residual=r, activation="gelu_tanh", threads=t),
        "exp": lambda t: ops.exp(x, threads=t),
        "add rows": lambda t: ops.add(x, b, threads=t),
        "mul same": lambda t: ops.mul(x, r, threads=t),
        "quantize per tensor": lambda t: ops.quantize_linear(finite, np.float32(0.05), np.int8(1),
                                                             threads=t),
        "quantize axis 1": lambda t: ops.quantize_linear(x3, scale, zp, axis=1, threads=t),
        "dequantize axis 1": lambda t: ops.dequantize_linear(q[:, :65].reshape(37, 13, 5), scale,
                                                             zp, axis=1, threads=t),
        "dequantize last axis": lambda t: ops.dequantize_linear(q[:, :13].copy(), scale, zp,
                                                                axis=1, threads=t),
        "dequantize per tensor": lambda t: ops.dequantize_linear(q, np.float32(0.5), np.int8(3),
                                                                 threads=t),
        "dynamic_quantize_linear": lambda t: ops.dynamic_quantize_linear(finite, threads=t),
        # In place (out is x) the kernels run their in-place loops: the same numbers.
        "logsoftmax in place": lambda t: _in_place(ops.logsoftmax, x, t),
        "softmax in place": lambda t: _in_place(ops.softmax, x, t),
        "layer_norm in place": lambda t: _in_place(lambda y, **kw: ops.layer_norm(y, w, b, **kw),
                                                   x, t),
    }
    serial = {name: f(1) for name, f in calls.items()}
    for name in ("logsoftmax", "softmax", "layer_norm"):
        np.testing.assert_array_equal(serial[name + " in place"], serial[name], err_msg=name)
    monkeypatch.setattr(cpu_threads, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(cpu_quantize, "MIN_MAX_PARALLEL_ELEMENTS", 1)
    monkeypatch.setattr(cpu_threads, "BLOCK_VALUES", block_values)
    for name, f in calls.items():
        got, want = f(THREADS), serial[name]
        for g, e in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,), strict=True):
            np.testing.assert_array_equal(g, e, err_msg=name)
