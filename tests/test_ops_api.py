"""The ops front ends: the public names, array-type dispatch (the seam for GPU arrays), and
refusal of inputs that are not numpy arrays."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import ops
from ops import backends

PUBLIC = ["add", "bias_add", "dequantize_linear", "dynamic_quantize_linear", "erf", "exp", "gelu",
          "layer_norm", "log_softmax_topk", "logsoftmax", "mul", "quantize_linear", "relu",
          "sigmoid", "softmax", "tanh"]


def test_public_api():
    for name in PUBLIC:
        assert callable(getattr(ops, name)), name


def test_importing_ops_leaves_the_backends_for_their_first_call():
    # The backends (and numba, which the CPU one imports) load when a call needs them: importing
    # numba would triple `import ops`'s time.
    import subprocess

    code = "import sys, ops; print(sorted(m for m in ('numba', 'ops.cpu', 'ops.wgsl') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("bad", [[1.0, 2.0], np.ma.masked_array(np.zeros(2, np.float32)),
                                 np.matrix(np.zeros((1, 2), np.float32))],
                         ids=["list", "masked", "matrix"])
def test_non_numpy_inputs_are_refused(bad):
    for f in (ops.logsoftmax, ops.relu, ops.dynamic_quantize_linear):
        with pytest.raises(TypeError, match="x: expected a numpy.ndarray"):
            f(bad)


class FakeDeviceArray:
    """Stands in for the GPU array type the WGSL layer will add."""

    def __init__(self, shape):
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)


def test_a_registered_array_type_routes_to_its_backend(monkeypatch):
    calls = []
    fake = types.ModuleType("fake_backend")
    fake.empty = lambda shape, dtype: FakeDeviceArray(shape)
    fake.check_out = lambda out, shape, dtype, argument, inputs: out

    def logsoftmax(x, axis, out, threads):
        calls.append((x, axis))
        return out

    fake.logsoftmax = logsoftmax
    monkeypatch.setitem(sys.modules, "fake_backend", fake)
    monkeypatch.setitem(backends._BACKENDS, FakeDeviceArray, "fake_backend")
    x = FakeDeviceArray((2, 5))
    result = ops.logsoftmax(x, axis=0)
    assert isinstance(result, FakeDeviceArray) and calls == [(x, 0)]
    with pytest.raises(TypeError, match="out: is a ndarray but x is not"):
        ops.logsoftmax(x, out=np.empty((2, 5), np.float32))


def test_non_contiguous_inputs_give_the_contiguous_results():
    rng = np.random.default_rng(9)
    base = rng.standard_normal((40, 60)).astype(np.float32)
    view = base[::2, 1::3]                       # strided, neither C nor F contiguous
    copy = np.ascontiguousarray(view)
    w = np.ones(view.shape[1], np.float32)
    for f in (ops.relu, ops.gelu, ops.logsoftmax, ops.softmax,
              lambda v: ops.layer_norm(v, w), lambda v: ops.add(v, v),
              lambda v: ops.bias_add(v, w, activation="tanh"),
              lambda v: ops.quantize_linear(v, np.float32(0.1), np.int8(0)),
              lambda v: ops.log_softmax_topk(v, 3)[1]):
        np.testing.assert_array_equal(f(view), f(copy))


def test_thread_setting_from_the_environment(i8gemm_env):
    x = np.random.default_rng(10).standard_normal((64, 4000)).astype(np.float32)
    expected = ops.logsoftmax(x, threads=1)
    i8gemm_env("I8GEMM_NUM_THREADS", "2")
    np.testing.assert_array_equal(ops.logsoftmax(x), expected)
    i8gemm_env("I8GEMM_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="I8GEMM_NUM_THREADS"):
        ops.logsoftmax(x)
