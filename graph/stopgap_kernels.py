"""Elementwise kernels the graph layer needs before ops/ provides them (numba, multi-threaded).

numpy has no erf, and a transformer's Gelu (x * 0.5 * (1 + erf(x / sqrt 2)), five ONNX nodes as
torch exports it) costs five numpy passes plus a Python-level erf. These kernels compute, per
element, exactly the float32 steps of the ONNX nodes they replace -- erf itself in float64
through libm, rounded to float32, as onnx's reference evaluator computes it -- in one pass over
memory on all threads. Exactness matters here more than it seems: the Gelu output is quantized
again (DynamicQuantizeLinear) before the next GEMM, so a 1-ulp difference can move a value to the
next uint8 step. (A float32 rational erf a few ulp off was tried: the encoder's output then
differed from the reference by 3e-4 relative instead of 0.)

They belong in ops/. The ops branch's `ops.gelu` computes 0.5 x (1 + erf(x / sqrt 2)) to within
2 eps of float64, which is accurate but not the five nodes' float32 steps; a chain-exact variant
(or a vectorized erf with a rounding-safety fallback) there would replace this module.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_CHUNK = 1 << 14   # elements per parallel work item


@njit(cache=True, parallel=True, nogil=True)
def _erf_kernel(x, out):
    n = x.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            out[i] = np.float32(math.erf(np.float64(x[i])))


@njit(cache=True, parallel=True, nogil=True)
def _gelu_kernel(x, pre, divide, add, post, out):
    n = x.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            v = x[i]
            t = v / pre if divide else v * pre               # Div(x, sqrt 2) or Mul(x, 1/sqrt 2)
            e = np.float32(math.erf(np.float64(t)))          # Erf
            out[i] = (v * (e + add)) * post                  # Add(., 1), Mul(x, .), Mul(., 0.5)


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf, each value libm's double erf rounded to float32."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    _erf_kernel(flat, out)
    return out.reshape(x.shape)


def gelu_chain(x: np.ndarray, pre: float, divide: bool, add: float, post: float) -> np.ndarray:
    """((x / pre or x * pre) -> erf -> + add -> x * . -> * post), each step in float32."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    f32 = np.float32
    _gelu_kernel(flat, f32(pre), divide, f32(add), f32(post), out)
    return out.reshape(x.shape)
