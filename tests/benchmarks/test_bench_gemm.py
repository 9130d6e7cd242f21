"""pytest-benchmark suite: the standard shapes, i8gemm against its baselines.

Skipped in the normal test run (pyproject sets --benchmark-skip). Run it with:
    pytest tests/benchmarks --benchmark-only --benchmark-group-by=param:shape
Each shape is a group: gemm_i8 int8 -> int32 next to onnxruntime MatMulInteger (u8 x s8), and
gemm_i8 float32 -> float32 (quantize + multiply + unquantize + bias) next to numpy A @ W + bias.
`i8gemm bench` measures the same contenders interleaved and prints the ratios.
"""

import numpy as np
import pytest

import gemm
from gemm.bench import SHORTLIST_COLUMNS, SHORTLIST_SHAPE, STANDARD_SHAPES, _ort_matmul_integer

SHAPE_IDS = [f"{m}x{k}x{n}" for m, k, n in STANDARD_SHAPES]


@pytest.fixture(scope="module", params=STANDARD_SHAPES, ids=SHAPE_IDS)
def problem(request):
    m, k, n = request.param
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    qa, qb = 127.0 / float(np.abs(a).max()), 127.0 / float(np.abs(w).max())
    pb = gemm.prepare_b(w, qb)
    return {"shape": request.param, "a": a, "w": w, "qa": qa, "pb": pb,
            "a_i8": gemm.quantize(a, qa), "bias": rng.standard_normal(n, dtype=np.float32)}


def test_gemm_i8_int32(benchmark, problem):
    benchmark.group = "x".join(map(str, problem["shape"]))
    c = benchmark(gemm.gemm_i8, problem["a_i8"], problem["pb"])
    assert c.dtype == np.int32


def test_onnxruntime_matmul_integer(benchmark, problem):
    m, k, n = problem["shape"]
    session = _ort_matmul_integer(k, n, threads=0)
    if session is None:
        pytest.skip("onnxruntime is not installed")
    benchmark.group = f"{m}x{k}x{n}"
    feeds = {"A": (problem["a_i8"].astype(np.int16) + 128).astype(np.uint8),
             "B": problem["pb"].quantized()}
    benchmark(session.run, None, feeds)


def test_gemm_i8_float(benchmark, problem):
    benchmark.group = "x".join(map(str, problem["shape"]))
    c = benchmark(gemm.gemm_i8, problem["a"], problem["pb"], a_quant_mult=problem["qa"],
                  bias=problem["bias"])
    assert c.dtype == np.float32


def test_numpy_float32(benchmark, problem):
    benchmark.group = "x".join(map(str, problem["shape"]))
    benchmark(lambda: problem["a"] @ problem["w"] + problem["bias"])


@pytest.mark.parametrize("selected", [None, SHORTLIST_COLUMNS], ids=["full", "shortlist"])
def test_shortlist(benchmark, selected):
    m, k, n = SHORTLIST_SHAPE
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    pb = gemm.prepare_b(rng.standard_normal((k, n), dtype=np.float32), 32.0)
    benchmark.group = "shortlist"
    if selected is None:
        benchmark(gemm.gemm_i8, a, pb, a_quant_mult=16.0)
    else:
        ids = np.sort(rng.choice(n, selected, replace=False))
        benchmark(lambda: gemm.gemm_i8(a, pb.select_columns(ids), a_quant_mult=16.0))
