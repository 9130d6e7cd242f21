"""GpuArray: an n-dimensional array living in GPU memory, for chaining GPU kernels.

Contract: a GpuArray is C-contiguous data of `dtype` and `shape` at the start of a storage
buffer, padded to a multiple of 4 bytes (WGSL addresses storage in 32-bit words, so int8 data
is read four to a u32 by the shaders). It is made from numpy (`GpuArray.from_numpy`, one upload)
or by a kernel (`GpuArray.empty`), read back with `.numpy()` (one download), and otherwise never
leaves the GPU. Its buffer returns to dispatch.gpu's pool when the array is dropped.
`reshape` gives a view: the same buffer under another shape (it keeps the array it views alive,
so the buffer returns to the pool only when both are gone).
"""

from __future__ import annotations

import math

import numpy as np

from . import gpu

DTYPES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int32, np.uint32, np.float32))


class GpuArray:
    __slots__ = ("shape", "dtype", "buffer", "_generation", "_base", "__weakref__")

    def __init__(self, shape, dtype, buffer=None):
        dtype = np.dtype(dtype)
        if dtype not in DTYPES:
            names = ", ".join(d.name for d in DTYPES)
            raise TypeError(f"dtype: expected one of {names}, got {dtype}")
        self.shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in self.shape):
            raise ValueError(f"shape: expected non-negative sizes, got {self.shape}")
        self.dtype = dtype
        if buffer is not None and buffer.size < self.nbytes:
            raise ValueError(f"buffer: holds {buffer.size} bytes, the array needs {self.nbytes}")
        self._generation = None  # set once alloc() succeeds: only pooled buffers go back
        self._base = None        # the array a view shares its buffer with
        self.buffer = buffer if buffer is not None else gpu.alloc(self.nbytes)
        if buffer is None:
            self._generation = gpu.generation()

    @classmethod
    def empty(cls, shape, dtype) -> GpuArray:
        return cls(shape, dtype)

    @classmethod
    def from_numpy(cls, a: np.ndarray) -> GpuArray:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"a: expected a numpy array, got {type(a).__name__}")
        arr = cls(a.shape, a.dtype)
        if a.size:
            gpu.upload(arr.buffer, a)
        return arr

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def reshape(self, *shape) -> GpuArray:
        """A view of the same data under another shape (numpy's rules: one -1 is inferred)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) > 1 or any(s < -1 for s in shape):
            raise ValueError(f"shape: expected sizes >= 0 and at most one -1, got {shape}")
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"shape: cannot reshape {self.shape} into {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"shape: cannot reshape {self.shape} ({self.size} values) into {shape}")
        if shape == self.shape:
            return self
        view = GpuArray(shape, self.dtype, buffer=self.buffer)
        view._base = self if self._base is None else self._base
        return view

    def numpy(self, out: np.ndarray | None = None) -> np.ndarray:
        """The values as a numpy array (waits for the kernels that write this array), written into
        `out` (a C-contiguous array of the same shape and dtype) when given. Without `out`, a
        large array's memory is the GPU's read-back buffer itself, with no copy (see
        dispatch.gpu.download): an ordinary writable array to its user."""
        if out is None:
            if not self.size:
                return np.empty(self.shape, self.dtype)
            return gpu.download(self.buffer, self.nbytes).view(self.dtype).reshape(self.shape)
        if out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous {self.dtype.name} array of shape "
                             f"{self.shape}")
        if self.size:
            gpu.download(self.buffer, self.nbytes, out)
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"GpuArray(shape={self.shape}, dtype={self.dtype.name})"

    def __del__(self):
        if getattr(self, "_generation", None) is None:
            return  # a buffer the caller owns, or construction failed
        try:
            gpu.release(self.buffer, self._generation)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


def asarray(a) -> GpuArray:
    """a if it is already a GpuArray, else an upload of the numpy array a."""
    return a if isinstance(a, GpuArray) else GpuArray.from_numpy(np.asarray(a))
