"""Prepared B: the weight matrix quantized once, kept with its column sums, packed per path.

A PreparedB holds B's int8 columns (B transposed, N x K, each row padded with zeros to a multiple
of 4 so k-groups never straddle the end), their int32 sums (for the shift and zero-point
corrections), the per-column quantization multipliers, and one packed copy per (panel layout,
register-tile width) a path has asked for: "i8" panels [k4][NR][4 int8] for most paths, "i16"
panels [k4][2][NR][2 int16] (B widened once) for cpu:avx2-i16. Keeping the plain columns beside
the packed panels costs one more copy of B but makes shortlisting cheap: `select_columns`
gathers whole contiguous columns and packs only those (in every layout the parent holds),
instead of picking 4-byte pieces out of every panel.
"""

from __future__ import annotations

import numpy as np

import dispatch

from .cpu.driver import (
    PARALLEL_PACK_COLUMNS,
    CpuPath,
    pack_b_panels,
    pack_b_panels_parallel,
    quantize_into,
    resolve_threads,
)
from .validate import check_quant_mult


class PreparedB:
    """B (K x N) quantized to int8 and ready for `gemm_i8`. Build it with the prepare_* functions."""

    __slots__ = ("k", "n", "_cols", "_gather", "_kp", "col_sums", "quant_mult",
                 "inv_quant_mult", "has_min", "_packed", "_gpu", "_cpu_plans")

    def __init__(self, columns: np.ndarray | None, k: int, quant_mult: np.ndarray | None,
                 col_sums: np.ndarray | None = None, has_min: bool | None = None,
                 gather: tuple[np.ndarray, np.ndarray] | None = None):
        """columns: (N, k4*4) int8, C-contiguous, zero padded past k. Or columns=None and
        gather=(source columns, ids): the rows ids of source, copied only when first needed
        (a shortlist usually needs only its packed panels, which are packed straight from the
        source)."""
        self.k = k
        self._cols = columns
        self._gather = gather
        self.n = columns.shape[0] if columns is not None else gather[1].shape[0]
        self._kp = (columns if columns is not None else gather[0]).shape[1]
        self.col_sums = (columns.sum(axis=1, dtype=np.int32) if col_sums is None else col_sums)
        self.quant_mult = quant_mult
        self.inv_quant_mult = (None if quant_mult is None
                               else (np.float32(1.0) / quant_mult).astype(np.float32))
        self.has_min = bool((self._columns == -128).any()) if has_min is None else has_min
        self._packed: dict[tuple[str, int], np.ndarray] = {}   # (layout, nr) -> panels
        self._gpu = None  # the GPU copy (gemm.wgsl.prepared.GpuPreparedB), made by to_gpu()
        self._cpu_plans = None  # calls made with this B, kept to run again (gemm/cpu/plan.py)

    @property
    def _columns(self) -> np.ndarray:
        if self._cols is None:
            source, ids = self._gather
            self._cols = np.take(source, ids, axis=0)
            self._gather = None
        return self._cols

    # -- pickling ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """The weight without what belongs to this process: the kept plans of its calls (the
        decisions of this machine and tuning store: another process, perhaps on another CPU,
        makes its own) and the GPU copy (uploaded again by to_gpu())."""
        state = {name: getattr(self, name) for name in self.__slots__}
        state["_cpu_plans"] = None
        state["_gpu"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            # Names of earlier versions' caches (their "_colterm", vectors per A zero point
            # that the kernels no longer take) are left behind.
            if name in self.__slots__:
                setattr(self, name, value)

    # -- what users look at ------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.k, self.n)

    @property
    def k4(self) -> int:
        return self._kp // 4

    def quantized(self) -> np.ndarray:
        """B as a K x N int8 array (a copy)."""
        return np.ascontiguousarray(self._columns[:, : self.k].T)

    def __repr__(self) -> str:
        per_col = self.quant_mult is not None and self.quant_mult.size > 1
        scale = "per-column" if per_col else ("scalar" if self.quant_mult is not None else "none")
        return f"PreparedB(K={self.k}, N={self.n}, quant_mult={scale})"

    # -- shortlisting --------------------------------------------------------------------------

    def select_columns(self, ids) -> PreparedB:
        """A PreparedB of the columns `ids` (any count, any order, repeats allowed), without
        re-quantizing. Out-of-range ids raise ValueError."""
        ids = _check_ids(ids, self.n)
        child = PreparedB(
            None,
            self.k,
            None if self.quant_mult is None else self.quant_mult[ids],
            col_sums=self.col_sums[ids],
            has_min=False if not self.has_min else None,
            gather=(self._columns, ids),
        )
        for layout, nr in self._packed:
            if layout == "i8":  # packed straight from this B's columns: no copy of the selection
                child._packed[layout, nr] = _pack(self._columns, nr, ids)
            else:
                child._packed[layout, nr] = _PACKERS[layout](child._columns, nr)
        if self._gpu is not None:  # gathered on the GPU too: no upload of the selected weights
            child._gpu = self._gpu.select_columns(ids)
        return child

    # -- the GPU copy ----------------------------------------------------------------------------

    def to_gpu(self):
        """This B in GPU memory (a gemm.wgsl.GpuPreparedB), uploaded on the first call and kept.
        RuntimeError when there is no GPU."""
        if self._gpu is None:
            from .wgsl.prepared import upload

            self._gpu = upload(self)
        return self._gpu

    # -- what the CPU paths use ---------------------------------------------------------------

    def packed(self, path: CpuPath, nr: int) -> np.ndarray:
        """The panels of `nr` columns, in the path's layout, that its micro-kernel reads (built
        on first use), as a flat int8 array."""
        if self.has_min and not path.b_allows_min:
            raise ValueError(
                f"B: contains -128, which the cpu:{path.name} path cannot multiply exactly "
                "(its vpmaddubsw sign trick negates B); quantize B to [-127, 127] or use "
                "another path")
        key = (path.b_layout, nr)
        panels = self._packed.get(key)
        if panels is None:
            panels = self._packed[key] = _PACKERS[path.b_layout](self._columns, nr)
        return panels


def _pack(columns: np.ndarray, nr: int, ids: np.ndarray | None = None) -> np.ndarray:
    """int8 panels [panel][k4][nr][4 int8] of the columns `ids` (default: all)."""
    if ids is None:
        ids = np.arange(columns.shape[0], dtype=np.intp)
    n, kp = ids.shape[0], columns.shape[1]
    panels = -(-n // nr)
    # Only the last panel's padding columns need zeros; the rest is overwritten (np.zeros would
    # fill the whole array first, a second pass over a shortlist's panels).
    out = np.empty((panels, kp // 4, nr), np.uint32)
    out[-1, :, n - (panels - 1) * nr:] = 0
    threads = resolve_threads(None)
    if n >= PARALLEL_PACK_COLUMNS and threads > 1 and panels > 1:
        dispatch.cpu.use_threads(min(threads, panels))
        pack_b_panels_parallel(columns.view(np.uint32), ids, nr, out)
    else:
        pack_b_panels(columns.view(np.uint32), ids, nr, out)
    return out.view(np.int8).reshape(-1)


def _pack_i16(columns: np.ndarray, nr: int) -> np.ndarray:
    """int16 panels [panel][k4][2 halves][nr][2 int16]: half h holds k = 4*k4 + 2h + (0, 1), so
    one vector load gives vpmaddwd its pairs of k for a run of columns."""
    n, kp = columns.shape
    panels = -(-n // nr)
    wide = np.zeros((panels * nr, kp), np.int16)   # padding columns stay zero
    wide[:n] = columns
    # (panel, column, k4, half, pair) -> (panel, k4, half, column, pair)
    grouped = wide.reshape(panels, nr, kp // 4, 2, 2).transpose(0, 2, 3, 1, 4)
    return np.ascontiguousarray(grouped).view(np.int8).reshape(-1)


_PACKERS = {"i8": _pack, "i16": _pack_i16}


def _check_ids(ids, n: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids: expected a 1-D sequence of column indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids: expected integer column indices, got dtype {arr.dtype}")
    arr = arr.astype(np.intp, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise ValueError(f"ids: column index {bad} is out of range for B with N={n} columns")
    return arr


def _columns_from_int8(bt: np.ndarray) -> np.ndarray:
    """N x K int8 -> N x k4*4 int8, zero padded, C-contiguous."""
    n, k = bt.shape
    kp = -(-k // 4) * 4
    cols = np.zeros((n, kp), np.int8)
    cols[:, :k] = bt
    return cols


def _quant_mult_vector(quant_mult, n: int, argument: str = "quant_mult") -> np.ndarray:
    qm = check_quant_mult(quant_mult, argument, n)
    return np.broadcast_to(np.float32(qm), (n,)).astype(np.float32) if np.ndim(qm) == 0 else qm


def _quantize_columns(wt: np.ndarray, quant_mult, argument: str) -> PreparedB:
    """wt: N x K float32 -> PreparedB."""
    n, k = wt.shape
    qm = _quant_mult_vector(quant_mult, n)
    cols = np.zeros((n, -(-k // 4) * 4), np.int8)
    # Rows of wt are B's columns, so per-column multipliers are per-row ones here.
    if not quantize_into(wt, qm, cols[:, :k]):
        raise ValueError(f"{argument}: contains NaN or infinity")
    return PreparedB(cols, k, qm)


def _check_2d(x, argument: str, dtypes: tuple, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{argument}: expected a numpy array ({what}), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{argument}: expected a 2-D array ({what}), got shape {x.shape}")
    if x.dtype not in dtypes:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{argument}: expected dtype {names}, got {x.dtype}")
    if 0 in x.shape:
        raise ValueError(f"{argument}: expected both dimensions >= 1, got shape {x.shape}")
    return x


def prepare_b(w: np.ndarray, quant_mult) -> PreparedB:
    """W: K x N float32 -> PreparedB. quant_mult: a positive scalar or N per-column values;
    Bq = clamp(round_half_even(W * quant_mult), -127, 127)."""
    w = _check_2d(w, "W", (np.float32,), "K x N")
    return _quantize_columns(np.ascontiguousarray(w.T), quant_mult, "W")


def prepare_b_transposed(wt: np.ndarray, quant_mult) -> PreparedB:
    """WT: N x K float32 (B transposed, as most checkpoints store it) -> PreparedB."""
    wt = _check_2d(wt, "WT", (np.float32,), "N x K")
    return _quantize_columns(np.ascontiguousarray(wt), quant_mult, "WT")


def prepare_b_quantized_transposed(wqt: np.ndarray, quant_mult=None) -> PreparedB:
    """WqT: N x K int8, already quantized -> PreparedB. quant_mult (scalar or per column) is
    needed only for float output."""
    wqt = _check_2d(wqt, "WqT", (np.int8,), "N x K")
    qm = None if quant_mult is None else _quant_mult_vector(quant_mult, wqt.shape[0])
    return PreparedB(_columns_from_int8(wqt), wqt.shape[1], qm)


def prepare_b_quantized(bq: np.ndarray, quant_mult=None) -> PreparedB:
    """Bq: K x N int8, already quantized -> PreparedB (what gemm_i8 does with a plain int8 B)."""
    bq = _check_2d(bq, "B", (np.int8,), "K x N")
    qm = None if quant_mult is None else _quant_mult_vector(quant_mult, bq.shape[1])
    return PreparedB(_columns_from_int8(bq.T), bq.shape[0], qm)
