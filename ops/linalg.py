"""matmul: float32 matrix products with np.matmul's (and ONNX MatMul's) semantics (front end).

Batched: the last two axes are the matrices, the leading axes broadcast (numpy's rules); a 1-D
operand is a row (A) or a column (B) vector, its axis removed from the result. The CPU backend
is numpy's (BLAS); the GPU backend a tiled WGSL kernel (ops/wgsl/matmul.wgsl) that sums in
float32 in K order, so GPU and CPU results differ by float rounding:
|C - C64| <= K eps sum_k |A_ik| |B_kj| (eps = 2**-24) for both, C64 the exact product.
"""

from __future__ import annotations

import numpy as np

from .backends import backend_for
from .validate import check_float32, check_threads, output

MAX_BATCH_DIMS = 4


def matmul(a, b, *, out=None, threads: int | None = None):
    """a @ b (float32 arrays of at least one dimension)."""
    backend = backend_for(a=a, b=b, out=out)
    check_float32(a, "a")
    check_float32(b, "b")
    check_threads(threads)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"a, b: expected at least one dimension each, got shapes {a.shape} and "
                         f"{b.shape}")
    a2 = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    b2 = b.reshape(b.shape[0], 1) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"b: has {b2.shape[-2]} rows, but a has {a2.shape[-1]} columns "
                         f"(shapes {a.shape} and {b.shape})")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"b: batch shape {b.shape[:-2]} does not broadcast against a's "
                         f"{a.shape[:-2]}") from None
    if len(batch) > MAX_BATCH_DIMS:
        raise ValueError(f"a, b: at most {MAX_BATCH_DIMS} batch dimensions, got {len(batch)}")
    m, n = a2.shape[-2], b2.shape[-1]
    shape = (*batch, *((m,) if a.ndim > 1 else ()), *((n,) if b.ndim > 1 else ()))
    result = output(backend, out, shape, np.float32, (a, b))
    backend.matmul(a2, b2, result.reshape(*batch, m, n), threads)
    return result
