"""The CPU backend's arrays are numpy arrays: allocation and the check of a caller's `out=`."""

from __future__ import annotations

import numpy as np
from numba import njit


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def check_out(out, shape: tuple[int, ...], dtype, argument: str = "out",
              inputs: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """`out` must be a writable C-contiguous numpy array of exactly this shape and dtype (never
    cast silently). It may be one of `inputs` itself (in place) but not overlap one partly."""
    if type(out) is not np.ndarray:
        raise TypeError(f"{argument}: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"{argument}: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{argument}: expected shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{argument}: must be C-contiguous and writable")
    for a in inputs:
        if a is not out and np.may_share_memory(a, out) and not _same_memory(a, out):
            raise ValueError(f"{argument}: overlaps an input without being it; pass the input "
                             "itself for an in-place result, or a separate array")
    return out


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Views of the very same elements in the same order (e.g. x and x.reshape(...))."""
    return (a.flags.c_contiguous and a.size == b.size and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


@njit(inline="always")
def out_is_x(x, out):
    """Inside a kernel: whether `out` is `x` itself, for an `out` that check_out let through (x
    itself or apart from it). Asked there because numpy's __array_interface__ or .ctypes took
    ~1 us per array of a small call."""
    return x.ctypes.data == out.ctypes.data
