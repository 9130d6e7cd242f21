"""Shared helpers for the gemm test suite.

- `cpu_path`: a fixture parametrized over every CPU path registered for "gemm_i8" (ids are the path
  names); a path this machine cannot run is skipped with the reason `Implementation.available()`
  gives, never reported as passed.
- `ref(A, B)`: the exact reference product A.astype(int32) @ B.astype(int32).
- `ref_quantize(x, qm)`: the quantization convention written out in numpy.
- Every test session uses its own empty tuning store (I8GEMM_TUNING_STORE), so entries a user
  tuned on this machine cannot change which parameters the tests see.
- `child_env(environ)`: an environment for a child Python that imports the project from this
  checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import dispatch
import gemm  # noqa: F401  (importing gemm registers the CPU paths with dispatch)

REPO = Path(__file__).resolve().parent.parent


def child_env(environ=None, **settings) -> dict:
    """`environ` (default: this process's environment) with `settings`, and this checkout first
    on PYTHONPATH, for a test's child Python process."""
    env = dict(os.environ if environ is None else environ, **settings)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# The paths that use the vpmaddubsw sign trick and therefore reject -128 in B (the API contract).
SIGN_TRICK_PATHS = frozenset({"avx2", "avx512bw"})
# The paths whose micro-kernel takes A as unsigned bytes (a + 128): vpdpbusd.
U8_PATHS = frozenset({"avxvnni", "avx512vnni"})
ALL_CPU_PATHS = ("generic", "avx2", "avx2-i16", "avxvnni", "avx512bw", "avx512vnni")
# The paths that run only when named: not their level's preferred path (for AVX2, avx2-i16 is).
NAMED_ONLY_PATHS = frozenset({"avx2"})


def cpu_impls() -> list[dispatch.Implementation]:
    """Every registered CPU implementation of gemm_i8, in ISA-level order."""
    impls = [i for i in dispatch.implementations("gemm_i8") if i.backend == "cpu"]
    return sorted(impls, key=lambda i: (i.level, i.path))


def cpu_path_names() -> list[str]:
    return [i.path for i in cpu_impls()]


def impl_for(path: str) -> dispatch.Implementation:
    for impl in cpu_impls():
        if impl.path == path:
            return impl
    raise LookupError(path)


def available_paths() -> list[str]:
    return [i.path for i in cpu_impls() if i.available()[0]]


def allows_min_in_b(path: str) -> bool:
    return path not in SIGN_TRICK_PATHS


def skip_unless_available(path: str) -> None:
    ok, reason = impl_for(path).available()
    if not ok:
        pytest.skip(f"cpu:{path} cannot run on this machine: {reason}")


@pytest.fixture(scope="session", params=cpu_path_names(), ids=cpu_path_names())
def cpu_path(request) -> str:
    """The name of one CPU path ('generic', 'avx2', 'avx2-i16', ...); unavailable paths are
    skipped."""
    skip_unless_available(request.param)
    return request.param


@pytest.fixture(scope="session", autouse=True)
def private_tuning_store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("I8GEMM_TUNING_STORE", str(tmp_path_factory.mktemp("store") / "tuning.json"))
    mp.delenv("I8GEMM_AUTOTUNE", raising=False)
    dispatch.refresh()
    yield
    mp.undo()
    dispatch.refresh()


@pytest.fixture(scope="session")
def rng_seed() -> int:
    return 20240601


def ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact reference: A.astype(int32) @ B.astype(int32)."""
    return a.astype(np.int32) @ b.astype(np.int32)


def ref_quantize(x: np.ndarray, quant_mult) -> np.ndarray:
    """clamp(round_half_even(x * quant_mult), -127, 127) as int8, computed in float32 like the API
    (quant_mult may be a scalar or anything broadcastable against x)."""
    scaled = np.asarray(x, np.float32) * np.asarray(quant_mult, np.float32)
    return np.clip(np.rint(scaled), -127, 127).astype(np.int8)


def backend_of(path: str) -> str:
    return f"cpu:{path}"


@pytest.fixture
def i8gemm_env():
    """set(name, value) sets (or, with None, unsets) an I8GEMM_* variable and makes dispatch
    re-read the settings; everything is restored and re-read after the test."""
    mp = pytest.MonkeyPatch()

    def set_(name: str, value: str | None) -> None:
        if value is None:
            mp.delenv(name, raising=False)
        else:
            mp.setenv(name, value)
        dispatch.refresh()

    yield set_
    mp.undo()
    dispatch.refresh()


def linear_model(k, n, seed):
    """An ONNX model y = x @ w + b (x: m x k float32), random weights: for quantize_dynamic."""
    from onnx import TensorProto, helper, numpy_helper

    from graph import transformer

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["y"], name="bias")]
    g = helper.make_graph(nodes, "linear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = transformer.IR_VERSION
    return model
