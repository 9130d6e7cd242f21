"""Kept plans of CPU GEMM calls: a repeated call runs what the first one worked out.

A translation decoder multiplies the same weights step after step with the same few rows, and
at 1 x 512 x 512 the kernel takes ~4.5 us while gemm_i8's checks and decisions took ~5 us more.
What gemm_i8 works out for a call (the path and its parameters, the packed panels of B, how A is
packed, which compiled kernel runs) depends only on B and on the call's shapes, dtypes, threads
and on which options it gives, so it is kept as a `CpuPlan` on the PreparedB, under a key of
exactly those (`repeat_key`), and a later call with the same key runs the plan at once.

The options' values are not in the key: a decoder quantizes each step's A with a multiplier of
its own, and a dynamically quantized A comes with a scale and zero point of its own. Each call's
values (`OptionValues`: a_quant_mult or a_scale, the zero points, the output scales) are checked
and turned into the epilogue's values on every call, kept plan or not (gemm/api.py's
_option_values). A, `out` (its shape and dtype are in the key; its alignment for streaming
stores is checked per call) and `bias` (shape and dtype in the key) are the call's own.

A plan is made only by a call that passed every check, and a call with the same key would pass
the same ones: they depend only on what the key holds. `dispatch.refresh()` (new settings, a new
tuning store) changes the key's epoch, so plans made before it are not run again. gemm_i8 runs
every call through a CpuPlan, kept or not: a kept plan runs the same code as the first call.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import NamedTuple

import numpy as np

import dispatch
from dispatch.space import hashable_config

from . import driver

# Plans kept per PreparedB. A beam search's rows change as hypotheses finish (M from the beam
# size down to 1), and a model may call one weight with and without `out`; beyond this many the
# oldest is dropped.
PLANS_PER_WEIGHT = 16


def repeat_key(a, out, bias, relu, a_quant_mult, out_scale, a_scale, backend, threads,
               _params) -> tuple | None:
    """The key under which a call's plan is kept, or None for a call that is not kept (an
    `out` that is not C-contiguous and writable, a `relu` that is not a bool). The caller has
    checked that A is a numpy array and B a PreparedB. Of the options with values, the key holds
    whether a_quant_mult, out_scale and a_scale are given (they decide the output's dtype and
    how A is packed); the zero points are the call's values alone (OptionValues)."""
    if (threads is not None and type(threads) is not int) or type(relu) is not bool:
        return None
    if out is None:
        c = None
    elif type(out) is np.ndarray and out.flags.c_contiguous and out.flags.writeable:
        c = (out.shape, out.dtype.char)
    else:
        return None
    bias_kind = None if bias is None else (type(bias), getattr(bias, "shape", None),
                                           getattr(bias, "dtype", None))
    params = None
    if _params is not None:
        params = hashable_config(_params)
        if params is None:
            return None
    return (a.shape, a.dtype.char, c, bias_kind, relu, a_quant_mult is None, out_scale is None,
            a_scale is None, backend, threads, params, dispatch.registry.epoch())


class OptionValues(NamedTuple):
    """A call's option values, checked, as the kernels take them."""

    pack_mult: np.float32        # a_scale or a_quant_mult (0 for int8/uint8 A)
    a_zero_point: int
    zb: np.ndarray               # int32 N B zero points, or none
    inv_qa: np.float32
    inv_qb: np.ndarray           # float32 N output scales, or none


def kept(b, key) -> CpuPlan | None:
    plans = b._cpu_plans
    return None if plans is None else plans.get(key)


def keep(b, key, plan: CpuPlan) -> None:
    if b._cpu_plans is None:
        b._cpu_plans = collections.OrderedDict()
    b._cpu_plans[key] = plan
    while len(b._cpu_plans) > PLANS_PER_WEIGHT:
        b._cpu_plans.popitem(last=False)


def may_keep(_params) -> bool:
    """Whether a call's plan may be kept: not while the autotuner runs, whose decisions for
    calls without a configuration of their own are provisional (dispatch.select)."""
    return _params is not None or not dispatch.registry.autotuning()


@dataclasses.dataclass(frozen=True, slots=True)
class CpuPlan:
    """Everything of a gemm_i8 call on the CPU but A, C, the bias and the options' values: see
    the module docstring."""

    m: int
    n: int
    k: int
    k4: int
    tile: object                 # simd.Tile
    packed_dtype: np.dtype       # the path's A encoding
    out_dtype: np.dtype
    b_panels: np.ndarray
    col_sums: np.ndarray         # int32 N: B's column sums (the epilogue's A-shift correction)
    relu: bool
    streaming: bool              # wanted: done where C is aligned for it (can_stream_into)
    prefetch_b: bool
    m_block: int
    p_block: int
    threads: int
    pack_mode: int               # driver.PACK_*
    a_unsigned: bool             # A's values (after a_scale's quantization) are uint8
    a_shift: int                 # what packing adds to A's values (CpuPath.a_shift)
    packer: int                  # driver.A_BY_CALLER, A_IN_BLOCKS or A_PER_THREAD
    key: tuple                   # the compiled kernel's key (driver.call_compiled)
    nan_message: str
    # The kernel's arguments that are the same on every run, as it takes them: a small call's
    # host work is mostly Python, and each attribute read costs.
    _b_args: tuple = dataclasses.field(init=False)
    _cols_without_za: tuple = dataclasses.field(init=False)   # `cols` where A has no zero point
    _blocking_args: tuple = dataclasses.field(init=False)
    _kernel: tuple = dataclasses.field(init=False)

    def __post_init__(self):
        fixed = {
            "_b_args": (4 * self.k4, self.k4, self.m, self.b_panels, self.n),
            "_cols_without_za": (self.col_sums, np.int32(-self.a_shift), np.int32(0)),
            "_blocking_args": ((self.m_block,) if self.threads == 1
                               else (self.m_block, self.p_block, self.threads)),
            "_kernel": ((driver.run_serial, ("serial", *self.key)) if self.threads == 1
                        else (driver.run_parallel, ("parallel", *self.key))),
        }
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    def run(self, a: np.ndarray, out: np.ndarray | None, bias: np.ndarray,
            values: OptionValues) -> np.ndarray:
        m = self.m
        a_stride = 4 * self.k4
        if out is None:
            # Aligned only where C may be streamed: finding an array's address costs ~1 us.
            out = (driver.aligned_empty((m, self.n), self.out_dtype) if self.streaming
                   else np.empty((m, self.n), self.out_dtype))
        src = np.ascontiguousarray(a)
        packed_a = np.empty(m * a_stride, self.packed_dtype)
        rowsum = np.empty(m, np.int32)
        pack_mult, za, zb, inv_qa, inv_qb = values
        # driver's `cols`: -(shift + za) times B's column sums; K * za where B has zero points
        cols = (self._cols_without_za if za == 0 else
                (self.col_sums, np.int32(-(self.a_shift + za)), np.int32(self.k * za)))
        finite = True
        if self.packer == driver.A_BY_CALLER:
            finite = driver.call_compiled(
                driver.pack_rows, ("pack", src.dtype, self.packed_dtype), src, self.pack_mode,
                pack_mult, za, self.a_shift, 0, m, packed_a, a_stride, rowsum)
        pack = (src, self.pack_mode, pack_mult, za, self.a_shift, self.packer)
        kernel, key = self._kernel
        if self.threads > 1:
            dispatch.cpu.use_threads(self.threads)
        finite &= driver.call_compiled(
            kernel, key, self.tile, packed_a, *self._b_args, out, rowsum, cols, zb, inv_qa,
            inv_qb, np.ascontiguousarray(bias), self.relu,
            self.streaming and driver.can_stream_into(out), self.prefetch_b,
            *self._blocking_args, pack)
        if not finite:
            raise ValueError(self.nan_message)
        return out
