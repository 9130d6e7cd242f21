"""Argument checks shared by the ops front ends: each error names the argument and what was
expected. Arrays must already have passed backends.backend_for (so they have .shape/.dtype)."""

from __future__ import annotations

import numpy as np

F32 = np.dtype(np.float32)


def check_float32(x, argument: str):
    if x.dtype != F32:
        raise TypeError(f"{argument}: expected float32, got {x.dtype} (convert with "
                        f".astype(np.float32); ops never cast silently)")
    return x


def check_axis(axis, ndim: int, argument: str = "axis") -> int:
    """A whole number in [-ndim, ndim), returned in [0, ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{argument}: expected an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(
            f"{argument}: {axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def check_threads(threads) -> None:
    if threads is not None and (isinstance(threads, bool)
                                or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"threads: expected a whole number >= 1 or None, got {threads!r}")


def output(backend, out, shape, dtype, inputs=(), argument: str = "out"):
    """A new array from the backend, or the caller's `out` once checked."""
    if out is None:
        return backend.empty(tuple(shape), dtype)
    return backend.check_out(out, tuple(shape), dtype, argument, tuple(inputs))
