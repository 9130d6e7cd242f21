"""logsoftmax, softmax and log_softmax_topk: the public front ends (validate, then dispatch).

Numerics (float32 in, float32 out; y64 is the float64 result of the same formula on the same
float32 input, n the length of the axis, eps = 2**-24):
  logsoftmax  |y - y64| <= 4 eps (|y64| + ln n + 1)
  softmax     |y - y64| <= 8 eps y64 + eps
Special values as numpy's `x - max - log(sum(exp(x - max)))` and onnx's reference LogSoftmax/Softmax:
  -inf entries (masked logits) -> -inf (logsoftmax), 0 (softmax);
  a row that is all -inf, or holds +inf or NaN -> NaN everywhere in that row;
  an empty axis -> an empty result; a length-1 axis -> 0 (logsoftmax), 1 (softmax).
Stable for any finite magnitude (the max is subtracted first; +-1e4 is no special case).
"""

from __future__ import annotations

import numpy as np

from .backends import backend_for
from .validate import check_axis, check_float32, check_threads, output


def logsoftmax(x, axis: int = -1, *, out=None, threads: int | None = None):
    """log(softmax(x)) along `axis` (float32). `out`: a C-contiguous float32 array of x's shape
    (x itself works, for in place). `threads`: default I8GEMM_NUM_THREADS or all cores."""
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    if x.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    axis = check_axis(axis, x.ndim)
    result = output(backend, out, x.shape, np.float32, (x,))
    return backend.logsoftmax(x, axis, result, threads)


def softmax(x, axis: int = -1, *, float32_steps: bool = False, divide_by=None, out=None,
            threads: int | None = None):
    """exp(x - max) / sum(exp(x - max)) along `axis` (float32); `out` and `threads` as in
    logsoftmax.

    float32_steps=True (last axis only): bit for bit what onnx's reference evaluator computes --
    numpy's float32 exp and numpy's order of summation (ops/cpu/probabilities.py) -- for a graph
    runner whose next steps quantize the result (one ulp can move a value to the next integer
    step). Its accuracy is numpy's: exp within a few ulp, not the bound above.
    divide_by (float32_steps only): a number; the softmax of x / divide_by, the division in
    float32 as an ONNX Div node computes it (attention's scores / sqrt(head size)), in the same
    pass."""
    backend = backend_for(x=x, out=out)
    check_float32(x, "x")
    check_threads(threads)
    if x.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    axis = check_axis(axis, x.ndim)
    if float32_steps and axis != x.ndim - 1:
        raise ValueError("float32_steps: only over the last axis (numpy sums other axes in "
                         "another order)")
    if divide_by is not None:
        if not float32_steps:
            raise ValueError("divide_by: only with float32_steps=True")
        if isinstance(divide_by, bool) or not isinstance(divide_by, (int, float, np.number)) \
                or np.ndim(divide_by) != 0:
            raise TypeError(f"divide_by: expected a number, got {divide_by!r}")
        divide_by = np.float32(divide_by)
    result = output(backend, out, x.shape, np.float32, (x,))
    if float32_steps:
        return backend.softmax_float32_steps(x, result, threads, divide_by)
    return backend.softmax(x, axis, result, threads)


def log_softmax_topk(x, k: int, *, out=None, threads: int | None = None):
    """The k largest values of logsoftmax(x) over the last axis and their indices, in one pass:
    what beam search calls each step.

    Returns (values float32 (..., k), indices int64 (..., k); int32 for GPU arrays), sorted by
    value descending; equal values come in index order (lower index first). values[..., j] equals
    logsoftmax(x)[..., indices[..., j]] bit for bit. NaN ranks below every number (-inf included):
    a row holding NaN returns the indices of its k largest numbers (its values are all NaN, as its
    logsoftmax is). `out`: optional (values, indices) pair of C-contiguous arrays.
    """
    if out is not None and (not isinstance(out, tuple) or len(out) != 2):
        raise TypeError("out: expected a (values, indices) tuple of two arrays")
    out_v, out_i = out if out is not None else (None, None)
    backend = backend_for(x=x, out_values=out_v, out_indices=out_i)
    check_float32(x, "x")
    check_threads(threads)
    if x.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    n = x.shape[-1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an integer, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= {n} (the last axis of x), got {k}")
    shape = x.shape[:-1] + (int(k),)
    values = output(backend, out_v, shape, np.float32, (x,), "out[0]")
    indices = output(backend, out_i, shape, backend.INDEX_DTYPE, (x,), "out[1]")
    return backend.log_softmax_topk(x, int(k), values, indices, threads)


def replicates_numpy_exp() -> bool:
    """Whether ops' replica of numpy's float32 exp (ops/cpu/numpy_exp.py) is numpy's exp bit for
    bit here: float32_steps kernels that compute exp inside their own loop (ops.attention) are
    numpy's steps exactly only then. (ops.softmax(float32_steps=True) itself falls back to
    numpy's exp where it is not.) Checked once per process on a probe of values."""
    from .cpu.numpy_exp import matches_numpy
    return matches_numpy()
