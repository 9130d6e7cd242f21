"""Data movement with numpy's (and ONNX's) semantics: transpose, concat, slice, expand (front ends).

For 32-bit element types (float32, int32, uint32), on numpy arrays (numpy) and on GPU arrays
(one strided-copy kernel, ops/wgsl/layout.py): the values are moved, never changed, so both
backends give identical results. The result is always a new C-contiguous array.
"""

from __future__ import annotations

import numpy as np

from .backends import backend_for

DTYPES = (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.uint32))
MAX_DIMS = 6


def _check(x, argument: str):
    if x.dtype not in DTYPES:
        raise TypeError(f"{argument}: expected float32, int32 or uint32, got {x.dtype}")
    if x.ndim > MAX_DIMS:
        raise ValueError(f"{argument}: at most {MAX_DIMS} dimensions, got {x.ndim}")


def transpose(x, perm=None):
    """np.transpose(x, perm) as a new array (perm None: the axes reversed)."""
    backend = backend_for(x=x)
    _check(x, "x")
    perm = tuple(range(x.ndim))[::-1] if perm is None else tuple(int(p) for p in perm)
    if sorted(p % x.ndim for p in perm) != list(range(x.ndim)) or len(perm) != x.ndim:
        raise ValueError(f"perm: expected a permutation of the {x.ndim} axes, got {perm}")
    return backend.transpose(x, tuple(p % x.ndim for p in perm))


def concat(arrays, axis: int):
    """np.concatenate(arrays, axis)."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("arrays: expected at least one array")
    backend = backend_for(**{f"arrays[{i}]": a for i, a in enumerate(arrays)})
    first = arrays[0]
    for i, a in enumerate(arrays):
        _check(a, f"arrays[{i}]")
        if a.dtype != first.dtype or a.ndim != first.ndim:
            raise ValueError(f"arrays[{i}]: expected {first.ndim} dims of {first.dtype}, got "
                             f"{a.ndim} of {a.dtype}")
    if first.ndim == 0:
        raise ValueError("arrays: 0-d arrays cannot be concatenated")
    axis = int(axis) % first.ndim
    for i, a in enumerate(arrays):
        if a.shape[:axis] != first.shape[:axis] or a.shape[axis + 1:] != first.shape[axis + 1:]:
            raise ValueError(f"arrays[{i}]: shape {a.shape} differs from {first.shape} off "
                             f"axis {axis}")
    return backend.concat(arrays, axis)


def slice_axes(x, starts, ends, axes=None, steps=None):
    """ONNX Slice: x[start:end:step] along each given axis (bounds clamped as Python does)."""
    backend = backend_for(x=x)
    _check(x, "x")
    starts, ends = list(starts), list(ends)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if int(step) == 0:
            raise ValueError("steps: a step of 0 is not allowed")
        index[int(axis) % x.ndim] = slice(int(start), int(end), int(step))
    return backend.slice_axes(x, tuple(index))


def expand(x, shape):
    """np.broadcast_to(x, broadcast(x.shape, shape)) as a new array (ONNX Expand)."""
    backend = backend_for(x=x)
    _check(x, "x")
    try:
        target = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
    except ValueError:
        raise ValueError(f"shape: {tuple(shape)} does not broadcast against x's {x.shape}") from None
    if len(target) > MAX_DIMS:
        raise ValueError(f"shape: at most {MAX_DIMS} dimensions, got {len(target)}")
    return backend.expand(x, target)
