"""B on the GPU: a PreparedB uploaded once, in the layout the WGSL kernels read.

GpuPreparedB holds, in GPU memory: B's int8 values packed four per u32 along K, K-major
(`packed[k4, n]` = B[4*k4 : 4*k4+4, n]), K padded with zeros to a multiple of tiles.K4_ALIGN
groups and N to a multiple of 4 columns; the int32 column sums; 1/quant_mult per column (when B
has multipliers). `select_columns` gathers columns with a shader: the selected weights never
pass through the host.
"""

from __future__ import annotations

import numpy as np

from dispatch import gpu
from dispatch.gpu_array import GpuArray

from ..prepared import PreparedB, _check_ids
from . import kernels
from .tiles import padded_k4


class GpuPreparedB:
    """A PreparedB in GPU memory. Make one with `PreparedB.to_gpu()`; multiply with gemm_i8."""

    __slots__ = ("k", "n", "k4", "np_", "packed", "col_sums", "inv_quant_mult", "quant_mult",
                 "_plans")

    def __init__(self, k: int, n: int, packed: GpuArray, col_sums: GpuArray,
                 inv_quant_mult: GpuArray | None, quant_mult: np.ndarray | None):
        self.k, self.n = k, n
        self.k4, self.np_ = packed.shape
        self.packed = packed
        self.col_sums = col_sums
        self.inv_quant_mult = inv_quant_mult
        self.quant_mult = quant_mult  # host copy (N values): cheap to keep, needed for checks
        self._plans = None  # calls made with this B, kept to run again (wgsl/driver.py)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.k, self.n)

    def __repr__(self) -> str:
        per_col = self.quant_mult is not None and self.quant_mult.size > 1
        scale = "per-column" if per_col else ("scalar" if self.quant_mult is not None else "none")
        return f"GpuPreparedB(K={self.k}, N={self.n}, quant_mult={scale})"

    def select_columns(self, ids) -> GpuPreparedB:
        """The columns `ids` (any count, any order, repeats allowed), gathered on the GPU; only
        the ids are uploaded. Out-of-range ids raise ValueError."""
        ids = _check_ids(ids, self.n)
        n = ids.size
        np_ = _round_up(max(n, 1), 4)
        packed = GpuArray((self.k4, np_), np.uint32)
        col_sums = GpuArray((n,), np.int32)
        inv = None if self.inv_quant_mult is None else GpuArray((n,), np.float32)
        if n:
            program = gpu.pipeline(kernels.gather_b_source(), "rrrrwwwu")
            params = gpu.uniform(np.array([n, np_, self.np_, self.k4], np.uint32).tobytes())
            gpu_ids = GpuArray.from_numpy(ids.astype(np.uint32))
            placeholder = dummy()
            gpu.run([(program, (self.packed.buffer, gpu_ids.buffer, self.col_sums.buffer,
                                (self.inv_quant_mult or placeholder).buffer, packed.buffer,
                                col_sums.buffer, (inv or placeholder).buffer, params),
                      (-(-np_ // 64), self.k4, 1))])
        qm = None if self.quant_mult is None else self.quant_mult[ids]
        return GpuPreparedB(self.k, n, packed, col_sums, inv, qm)


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


_DUMMY = {}
_ZEROS = {}


def dummy() -> GpuArray:
    """A small zero-filled array bound where a kernel's optional input is absent (made with its
    contents, so it is not counted as a transfer: it carries no data of the caller's)."""
    arr = _DUMMY.get(id(gpu.device()))
    if arr is None:
        import wgpu

        _DUMMY.clear()
        buffer = gpu.device().create_buffer_with_data(
            data=np.zeros(64, np.int32).tobytes(),
            usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
        arr = _DUMMY[id(gpu.device())] = GpuArray((4,), np.int32, buffer=buffer)
    return arr


def zeros(count: int) -> GpuArray:
    """At least `count` int32 zeros, bound read-only where a kernel reads values that are zero
    for the call (a direct A's row information); one per device, the largest asked for yet.
    (A pooled buffer holds whatever its last user left, and dummy() is also bound where a
    kernel may write: neither can stand in.)"""
    arr = _ZEROS.get(id(gpu.device()))
    if arr is None or arr.size < count:
        import wgpu

        _ZEROS.clear()
        size = max(64, 1 << (count - 1).bit_length())
        buffer = gpu.device().create_buffer_with_data(
            data=np.zeros(size, np.int32).tobytes(), usage=wgpu.BufferUsage.STORAGE)
        arr = _ZEROS[id(gpu.device())] = GpuArray((size,), np.int32, buffer=buffer)
    return arr


def upload(pb: PreparedB) -> GpuPreparedB:
    """Pack and upload a PreparedB (the host does the re-layout once, at prepare time)."""
    k4 = padded_k4(pb.k)   # as the tuning space pads it (split K's chunks)
    np_ = _round_up(pb.n, 4)
    packed = np.zeros((k4, np_), np.uint32)
    packed[: pb.k4, : pb.n] = pb._columns.view(np.uint32).T
    inv = None
    if pb.quant_mult is not None:
        inv = GpuArray.from_numpy(np.ascontiguousarray(pb.inv_quant_mult, np.float32))
    return GpuPreparedB(pb.k, pb.n, GpuArray.from_numpy(packed),
                        GpuArray.from_numpy(np.ascontiguousarray(pb.col_sums, np.int32)), inv,
                        pb.quant_mult)
