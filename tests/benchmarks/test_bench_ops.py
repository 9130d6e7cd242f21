"""pytest-benchmark suite for the ops kernels, each next to its numpy form.

Skipped in the normal test run (pyproject sets --benchmark-skip). Run it with:
    pytest tests/benchmarks/test_bench_ops.py --benchmark-only --benchmark-group-by=group
`i8gemm bench --ops` times the same contenders interleaved and prints the ratios, with the
memory-bound floor (a numpy copy of the same bytes).
"""

import numpy as np
import pytest

import ops
from ops.bench import (
    EPSILON,
    LOGITS_SHAPE,
    NORM_SHAPE,
    TOPK,
    numpy_layer_norm,
    numpy_logsoftmax,
    numpy_softmax,
    numpy_topk,
)


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(0).standard_normal(LOGITS_SHAPE, dtype=np.float32) * 4


@pytest.fixture(scope="module")
def hidden():
    rng = np.random.default_rng(1)
    return (rng.standard_normal(NORM_SHAPE, dtype=np.float32),
            rng.standard_normal(NORM_SHAPE[1], dtype=np.float32),
            rng.standard_normal(NORM_SHAPE[1], dtype=np.float32))


@pytest.mark.parametrize("impl", ["ops", "numpy", "copy_floor"])
def test_logsoftmax(benchmark, logits, impl):
    benchmark.group = "logsoftmax 64x32000"
    out = np.empty_like(logits)
    fn = {"ops": lambda: ops.logsoftmax(logits, out=out),
          "numpy": lambda: numpy_logsoftmax(logits),
          "copy_floor": lambda: np.copyto(out, logits)}[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["ops", "numpy"])
def test_log_softmax_topk(benchmark, logits, impl):
    benchmark.group = f"log_softmax_topk k={TOPK} 64x32000"
    fn = {"ops": lambda: ops.log_softmax_topk(logits, TOPK),
          "numpy": lambda: numpy_topk(logits, TOPK)}[impl]
    values, indices = benchmark(fn)
    assert indices.shape == (LOGITS_SHAPE[0], TOPK)


@pytest.mark.parametrize("impl", ["ops", "numpy"])
def test_softmax(benchmark, logits, impl):
    benchmark.group = "softmax 64x32000"
    out = np.empty_like(logits)
    fn = {"ops": lambda: ops.softmax(logits, out=out), "numpy": lambda: numpy_softmax(logits)}[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["ops", "numpy"])
def test_layer_norm(benchmark, hidden, impl):
    benchmark.group = "layer_norm 2048x512"
    x, w, b = hidden
    out = np.empty_like(x)
    fn = {"ops": lambda: ops.layer_norm(x, w, b, EPSILON, out=out),
          "numpy": lambda: numpy_layer_norm(x, w, b, EPSILON)}[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["ops", "numpy"])
def test_bias_add_gelu(benchmark, hidden, impl):
    benchmark.group = "bias_add + gelu(tanh) 2048x512"
    x, _, b = hidden
    out = np.empty_like(x)
    c = np.float32(np.sqrt(2 / np.pi))

    def numpy_form():
        y = x + b
        return 0.5 * y * (1 + np.tanh(c * (y + np.float32(0.044715) * y ** 3)))

    fn = {"ops": lambda: ops.bias_add(x, b, activation="gelu_tanh", out=out),
          "numpy": numpy_form}[impl]
    benchmark(fn)
