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
from .quantize import ValueRange
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


def attention(q, kt, v, *, divide_by=None, with_range: bool = False, threads: int | None = None):
    """softmax(q @ kt / divide_by) @ v over the last two axes of 4-D float32 numpy arrays, in one
    pass per (batch, head) (CPU): attention's MatMul -> Div -> Softmax -> MatMul with each head's
    scores kept in cache.

    q (B, H, S, D), kt (B, H, D, T), v (B, H, T, E), any strides. Returns the (B, H, S, E) result
    as a view of a C-contiguous (B, S, H, E) array, so that its transpose to (B, S, H, E) -- what
    a transformer does next -- copies nothing; with with_range, (result, ops.ValueRange of it),
    each (batch, head)'s range taken while it is in cache (for a DynamicQuantizeLinear next).

    Numerics: each element of both products is a chain of fused multiply-adds in k order from
    +0.0; the division is float32, as an ONNX Div node's; each softmax row is
    ops.softmax(float32_steps=True)'s steps with ops' replica of numpy's exp (which is numpy's
    exp bit for bit where ops.replicates_numpy_exp() is true). So wherever numpy's BLAS adds in
    k order too -- OpenBLAS at attention's shapes, on this project's machines -- the result
    equals np.matmul -> / -> numpy's softmax steps -> np.matmul bit for bit; that is the BLAS's
    choice, so a caller that needs it (graph.Session) compares the two once per shape."""
    backend = backend_for(q=q, kt=kt, v=v)
    for name, x in (("q", q), ("kt", kt), ("v", v)):
        check_float32(x, name)
        if x.ndim != 4:
            raise ValueError(f"{name}: expected 4 dimensions (batch, heads, rows, columns), got "
                             f"shape {x.shape}")
    check_threads(threads)
    b, h, s, d = q.shape
    if kt.shape[:3] != (b, h, d):
        raise ValueError(f"kt: expected shape ({b}, {h}, {d}, T) for q of shape {q.shape}, got "
                         f"{kt.shape}")
    if v.shape[:3] != (b, h, kt.shape[3]):
        raise ValueError(f"v: expected shape ({b}, {h}, {kt.shape[3]}, E) for kt of shape "
                         f"{kt.shape}, got {v.shape}")
    if divide_by is not None:
        if isinstance(divide_by, bool) or not isinstance(divide_by, (int, float, np.number)) \
                or np.ndim(divide_by) != 0:
            raise TypeError(f"divide_by: expected a number, got {divide_by!r}")
        divide_by = np.float32(divide_by)
    if getattr(backend, "attention", None) is None:
        raise TypeError("q: attention takes numpy arrays (on the GPU: ops.matmul, ops.softmax, "
                        "ops.matmul)")
    if v.shape[3] and v.strides[3] != v.itemsize:
        v = np.ascontiguousarray(v)   # the tile loads whole rows of v
    if kt.shape[3] == 0 and b * h * s:
        raise ValueError("kt: no columns (T = 0): a softmax over no values is undefined")
    if 0 in (b, h, s, v.shape[3]):
        out = np.empty((b, s, h, v.shape[3]), np.float32).transpose(0, 2, 1, 3)
        found = backend.min_max(out, threads) if with_range else None
    else:
        out, found = backend.attention(q, kt, v, divide_by, with_range, threads)
    return (out, ValueRange(*found)) if with_range else out
