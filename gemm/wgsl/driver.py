"""gemm_i8 on the GPU: checks as the CPU path does, then one to three dispatches in one submission.

  1. prepare_a.wgsl: A (float32 to quantize, or int8/uint8) -> packed K-major u32 groups, row
     sums and NaN/inf row flags, on the GPU (a numpy A is uploaded in one transfer: as it is, or
     a large float32 A quantized to int8 on the host while it is copied, as the CPU path
     quantizes it; see upload_a). Skipped by a direct configuration (tiles.py) where the call
     allows it: int8 A, K a multiple of 4, no zero points; the GEMM then reads A's rows.
  2. gemm_small_m.wgsl (M <= 8) or gemm_tiled.wgsl: the exact int32 product with the fused
     epilogue of common.wgsl (zero-point corrections; unquantize, bias, relu for float output).
     A configuration that splits K (tiles.Tiled.ks) stores int32 parts instead, and a third
     dispatch, reduce_splits.wgsl, adds them and applies the epilogue.
Semantics are those of gemm.api.gemm_i8 (same checks, same messages, same arithmetic), except
that a GPU-resident float A is not scanned for NaN/inf on the host: its NaN/inf rows come out as
NaN rows of C. The result is a GpuArray when A is one (or `out` is one), else numpy.
A call repeated with the same GPU arrays reuses its plan (see "a call made again" below).

Parameters may also live in GPU memory, so that a chain of GPU calls never reads back:
a_zero_point as a 1-value GpuArray of A's dtype (DynamicQuantizeLinear's zero point; the packing
kernel reads it), b_zero_point as N int32 values, out_scale as 1 or N float32 values, bias as N
float32 values. Values in GPU memory are not checked (finiteness, range of the zero points
beyond their dtype's).
"""

from __future__ import annotations

import collections
import dataclasses
import weakref

import numpy as np

import dispatch
from dispatch import gpu, hostcopy
from dispatch.gpu_array import GpuArray
from dispatch.space import hashable_config

from ..cpu import driver as cpu_driver
from ..prepared import PreparedB, prepare_b_quantized
from ..validate import (
    b_zero_points,
    check_a_matrix,
    check_int,
    out_scale_vector,
    output_kind,
)
from . import kernels, tiles
from .prepared import GpuPreparedB, dummy, zeros

GEMM_BINDINGS = "rrrrrrrwu"
PACK_BINDINGS = "rrwwu"
ZA_UNIFORM, ZA_UINT8, ZA_INT8 = 0, 1, 2
HAS_ZB, HAS_BIAS, RELU, ROW_FLAGS = 1, 2, 4, 8


def limits() -> dict:
    return gpu.limits()


def gpu_prepared(b) -> GpuPreparedB:
    """B as a GpuPreparedB: as is, the PreparedB's cached upload, or a plain int8 array prepared
    and uploaded now."""
    if isinstance(b, GpuPreparedB):
        return b
    if isinstance(b, PreparedB):
        return b.to_gpu()
    if isinstance(b, np.ndarray):
        if b.dtype != np.int8:
            raise TypeError(f"B: expected an int8 array or a PreparedB, got dtype {b.dtype} "
                            "(prepare float weights with gemm.prepare_b)")
        return prepare_b_quantized(b).to_gpu()
    raise TypeError(f"B: expected an int8 array, a PreparedB or a GpuPreparedB, got {type(b).__name__}")


def gemm_i8(a, b, *, a_quant_mult=None, bias=None, relu: bool = False, out=None,
            a_zero_point: int = 0, b_zero_point=0, out_scale=None, _params: dict | None = None):
    """See gemm.gemm_i8 (backend="gpu")."""
    key = None
    if type(b) is GpuPreparedB:
        key = repeat_key(a, a_quant_mult, bias, relu, out, a_zero_point, b_zero_point, out_scale,
                         _params)
        if key is not None:
            result = run_again(b, key, a, out)
            if result is not None:
                return result
    plan = build(a, b, a_quant_mult=a_quant_mult, bias=bias, relu=relu, out=out,
                 a_zero_point=a_zero_point, b_zero_point=b_zero_point, out_scale=out_scale,
                 _params=_params)
    if plan.dispatches:
        groups = gpu.bound(plan.dispatches)
        gpu.run_bound(groups)
        if key is not None:
            _keep(b, key, groups, plan)
    if plan.on_gpu:
        return plan.c
    return plan.c.numpy(out)


# -- a call made again -------------------------------------------------------------------------
# A decoder makes the same call every step: the same A, B and out, with new contents. Checking
# and planning it again cost more host time than its kernels take on the GPU (on an H200 at
# (1, 512, 512): 25 of the call's 34 us of host time; 7 us of kernels), so a GpuPreparedB keeps
# the plans of its calls whose parameters are GPU arrays or scalars, keyed by the GPU arrays'
# identities and the scalars' values. The checks passed for these very objects, whose shapes and
# dtypes never change, and new contents need no new plan. Weak references confirm each identity
# (a dead array's id may come back as a new array's) and keep none of the caller's arrays alive
# (a kept plan's bind groups do hold their GPU buffers, as dispatch.gpu's bind-group cache does,
# until the plan is dropped: at most 8 per weight); the tuning decisions (registry.epoch) and
# the device (gpu.generation) are part of the key.
# A numpy A or out is keyed by its shape and dtype instead: the kept plan owns the GPU arrays it
# is uploaded to and read back from, so each call makes only the transfers (a float32 A is
# checked and quantized while it is copied for the upload: upload_a).
PLANS_PER_WEIGHT = 8
_SCALARS = (int, float, np.integer, np.floating)


def repeat_key(a, a_quant_mult, bias, relu, out, a_zero_point, b_zero_point, out_scale,
               _params=None):
    """(key, the call's GPU arrays) for a call whose plan may be kept and run again, else None
    (a parameter given as a host array, a GPU A with no `out`: that call returns a new array).
    The autotuner's _params (a configuration, hashable) are part of the key: its candidates
    are timed as calls made again, which is what a caller's repeated call runs."""
    arrays = []
    parts = [bool(relu), dispatch.registry.epoch(), gpu.generation()]
    if type(a) is GpuArray:
        arrays.append(a)
        parts.append(id(a))
    elif type(a) is np.ndarray:
        parts.append(("host", a.shape, a.dtype.str))
    else:
        return None
    if type(out) is GpuArray:
        arrays.append(out)
        parts.append(id(out))
    elif type(out) is np.ndarray and out.flags.c_contiguous and out.flags.writeable:
        parts.append(("host", out.shape, out.dtype.str))
    elif out is None and type(a) is np.ndarray:
        parts.append(None)
    else:
        return None
    if _params is not None:
        items = hashable_config(_params)
        if items is None:
            return None
        parts.append(items)
    for value in (bias, out_scale, a_zero_point, b_zero_point, a_quant_mult):
        if type(value) is GpuArray:
            arrays.append(value)
            parts.append(("gpu", id(value)))
        elif value is None or isinstance(value, _SCALARS):
            parts.append(value)
        else:
            return None
    return tuple(parts), arrays


def run_again(b: GpuPreparedB, key, a, out):
    """Run the kept plan of the call `key` describes and return the call's result (`out`, or a
    new numpy array for a numpy A without `out`); None when there is no kept plan."""
    parts, arrays = key
    entry = b._plans.get(parts) if b._plans is not None else None
    if entry is None:
        return None
    refs, groups, _, a_upload, qa, c = entry
    for ref, array in zip(refs, arrays, strict=True):
        if ref() is not array:
            return None
    if a_upload is not None:
        upload_a(a_upload, a, qa)
    b._plans.move_to_end(parts)
    gpu.run_bound(groups)
    return out if c is None else c.numpy(out)


def _keep(b: GpuPreparedB, key, groups, plan: Plan) -> None:
    parts, arrays = key
    if b._plans is None:
        b._plans = collections.OrderedDict()
    callers = {id(x) for x in arrays}
    temporaries = tuple(x for x in plan.keep if x is not None and id(x) not in callers)
    b._plans[parts] = (tuple(weakref.ref(x) for x in arrays), groups, temporaries,
                       plan.a_upload, plan.a_quant, None if plan.on_gpu else plan.c)
    b._plans.move_to_end(parts)
    while len(b._plans) > PLANS_PER_WEIGHT:
        b._plans.popitem(last=False)


def upload_a(target: GpuArray, a: np.ndarray, qa) -> None:
    """Upload a numpy A into `target`: as it is (float32 A checked for NaN and infinity on the
    way), or with qa given (float32 A into an int8 target) quantized on the way,
    clamp(rint(A * qa), -127, 127) as the CPU path quantizes (gemm.quantize), straight into the
    upload's staging memory, so a quarter of the bytes crosses to the GPU. ValueError for NaN or
    infinity in A."""
    if qa is None:
        if not gpu.upload(target.buffer, a, only_if_finite=a.dtype == np.float32):
            raise ValueError("A: contains NaN or infinity")
        return
    a = np.ascontiguousarray(a)
    mult = np.array([qa], np.float32)

    row_bytes = a.strides[0]

    def quantize(into):
        rows = into.view(np.int8).reshape(a.shape)

        def quantize_part(lo, hi):  # whole rows: lo and hi are multiples of row_bytes
            r0, r1 = lo // row_bytes, hi // row_bytes
            return cpu_driver.quantize_into(a[r0:r1], mult, rows[r0:r1])

        return all(hostcopy.in_parts(quantize_part, a.nbytes, row_bytes))

    if not gpu.upload_made(target.buffer, a.size, quantize):
        raise ValueError("A: contains NaN or infinity")


# A numpy float32 A of this many bytes or more is quantized on the host as it is uploaded
# (upload_a); a smaller one is uploaded as it is and quantized by the GPU's prepare kernel.
# H200, alternating processes, 8 rounds: 1.04-1.18x faster calls with transfers from
# 128 x 1024 (512 KB of A) up (1024^3: 578 -> 461 us), but ~5% slower at 1-32 rows, where
# the host's extra call costs more than the bytes it saves.
HOST_QUANTIZED_A_BYTES = 1 << 16


class Plan:
    """What one call submits: the dispatches, and the arrays they use (kept alive with it)."""

    __slots__ = ("dispatches", "c", "on_gpu", "keep", "a_upload", "a_quant")

    def __init__(self, dispatches, c, on_gpu, keep=(), a_upload=None, a_quant=None):
        self.dispatches, self.c, self.on_gpu, self.keep = dispatches, c, on_gpu, keep
        self.a_upload = a_upload  # the GpuArray a numpy A was uploaded to
        self.a_quant = a_quant    # the multiplier a float32 numpy A was quantized with (upload_a)


def _multiply_source(cfg, m: int, out_kind: str) -> str:
    """The WGSL of configuration cfg's GEMM kernel for M = m rows ("i32" or "f32" output)."""
    if cfg.kernel == "small_m":
        return kernels.small_m_source(cfg, tiles.small_m_rows(m), out_kind)
    return kernels.tiled_source(cfg, out_kind)


def precompile(cfg, m: int):
    """Start compiling the GEMM kernel of configuration cfg for M = m rows and int32 output on a
    background thread (dispatch.gpu.precompile, whose Future this is): the autotuner's
    candidates to come."""
    return gpu.precompile(_multiply_source(cfg, m, "i32"), GEMM_BINDINGS)


def build(a, b, *, a_quant_mult=None, bias=None, relu: bool = False, out=None,
          a_zero_point: int = 0, b_zero_point=0, out_scale=None,
          _params: dict | None = None) -> Plan:
    """Check the arguments and plan the call (uploading numpy inputs); submits nothing."""
    # -- A ---------------------------------------------------------------------------------
    if not isinstance(a, (np.ndarray, GpuArray)):
        raise TypeError(f"A: expected a numpy array or a GpuArray, got {type(a).__name__}")
    m, k = check_a_matrix(a)

    # -- B ---------------------------------------------------------------------------------
    gb = gpu_prepared(b)
    if gb.k != k:
        raise ValueError(f"B: has K={gb.k} rows, but A has K={k} columns")
    n = gb.n

    # -- output kind -------------------------------------------------------------------------
    out_dtype, qa = output_kind(a.dtype, a_quant_mult, out_scale, bias, relu, gb.quant_mult)
    float_out = out_dtype == np.float32
    flags = 0
    scale_values, scale_step = None, 1
    if out_scale is not None:
        qa = inv_qa = np.float32(1.0)
        if isinstance(out_scale, GpuArray):
            if out_scale.dtype != np.float32 or out_scale.size not in (1, n):
                raise ValueError(f"out_scale: expected a float32 GpuArray of 1 or {n} values, got "
                                 f"{out_scale.dtype} of shape {out_scale.shape}")
            scale_values = out_scale
        else:
            scale_values = GpuArray.from_numpy(out_scale_vector(out_scale, n))
        scale_step = int(scale_values.size != 1 or n == 1)
    elif qa is not None:
        inv_qa = np.float32(1.0) / qa
    else:
        qa = inv_qa = np.float32(1.0)
    if relu:
        flags |= RELU

    if bias is not None:
        if not isinstance(bias, (np.ndarray, GpuArray)) or bias.dtype != np.float32:
            raise TypeError(f"bias: expected a float32 array of {n} values")
        if bias.shape != (n,):
            raise ValueError(f"bias: expected shape ({n},), got {bias.shape}")
        flags |= HAS_BIAS

    on_gpu = isinstance(out, GpuArray) or (out is None and isinstance(a, GpuArray))
    if out is not None:
        if not isinstance(out, (np.ndarray, GpuArray)) or out.dtype != out_dtype:
            got = out.dtype if isinstance(out, (np.ndarray, GpuArray)) else type(out).__name__
            raise TypeError(f"out: expected a {out_dtype.name} array, got {got}")
        if out.shape != (m, n):
            raise ValueError(f"out: expected shape {(m, n)}, got {out.shape}")
        if isinstance(out, np.ndarray) and (not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError("out: must be C-contiguous and writable")

    # -- zero points ---------------------------------------------------------------------------
    za, za_source, za_gpu = 0, ZA_UNIFORM, None
    if isinstance(a_zero_point, GpuArray):
        if a.dtype == np.float32 or a_zero_point.dtype != a.dtype or a_zero_point.size != 1:
            raise TypeError(f"a_zero_point: a GpuArray zero point must hold one value of A's dtype "
                            f"(int8 or uint8 A), got {a_zero_point.dtype} of shape "
                            f"{a_zero_point.shape} for A of {a.dtype}")
        za_source, za_gpu = (ZA_UINT8 if a.dtype == np.uint8 else ZA_INT8), a_zero_point
    elif a_zero_point is not None and not (isinstance(a_zero_point, int) and a_zero_point == 0):
        lo, hi = (0, 255) if a.dtype == np.uint8 else (-128, 127)
        za = check_int(a_zero_point, "a_zero_point", lo, hi)
    if isinstance(b_zero_point, GpuArray):
        if b_zero_point.dtype != np.int32 or b_zero_point.shape != (n,):
            raise ValueError(f"b_zero_point: a GpuArray of zero points must be int32 of shape "
                             f"({n},), got {b_zero_point.dtype} of shape {b_zero_point.shape}")
        zb = b_zero_point
    else:
        zb = b_zero_points(b_zero_point, n)
    if zb.size:
        flags |= HAS_ZB

    if n == 0:
        if isinstance(a, np.ndarray) and a.dtype == np.float32 and not np.isfinite(a).all():
            raise ValueError("A: contains NaN or infinity")
        return Plan([], out if isinstance(out, GpuArray) else GpuArray((m, 0), out_dtype), on_gpu)

    # -- configuration ---------------------------------------------------------------------------
    _, params = dispatch.select("gemm_i8", (m, k, n), a.dtype, backend="gpu")
    if _params is not None:
        params = {**params, **_params}
    cfg = params["config"]
    if cfg.kernel == "small_m" and m > tiles.SMALL_M_MAX:
        raise ValueError(f"_params: the small_m kernel takes M <= {tiles.SMALL_M_MAX}, got M={m}")

    # -- buffers -------------------------------------------------------------------------------
    if isinstance(a, GpuArray):
        src = a
    else:  # a large float32 A is quantized on its way up (upload_a), and packed as int8 A
        host_quantized = a.dtype == np.float32 and a.nbytes >= HOST_QUANTIZED_A_BYTES
        src = GpuArray((m, k), np.int8 if host_quantized else a.dtype)
        upload_a(src, a, qa if host_quantized else None)
    mp = -(-m // 4) * 4
    # A direct configuration reads int8 A's rows in the GEMM, where the call needs nothing of
    # the packing dispatch but its layout; otherwise its packed twin runs (tiles.py: "Direct A").
    direct = (cfg.direct and src.dtype == np.int8 and k % 4 == 0 and za == 0 and za_gpu is None
              and not zb.size)
    if cfg.direct and not direct:
        cfg = dataclasses.replace(cfg, direct=False)
    packed_a = None if direct else GpuArray((gb.k4, mp), np.uint32)
    # A direct A has no row sums or offset to correct for: the epilogue reads zeros.
    rowinfo = zeros(2 * mp + 2) if direct else GpuArray((2 * mp + 2,), np.int32)
    if isinstance(a, GpuArray) and a.dtype == np.float32:
        flags |= ROW_FLAGS
    c = out if isinstance(out, GpuArray) else GpuArray((m, n), out_dtype)
    placeholder = dummy()
    zb_gpu = zb if isinstance(zb, GpuArray) else (GpuArray.from_numpy(zb) if zb.size else placeholder)
    bias_gpu = placeholder if bias is None else (
        bias if isinstance(bias, GpuArray) else GpuArray.from_numpy(np.ascontiguousarray(bias)))
    if scale_values is not None:
        scale = scale_values
    else:
        scale = gb.inv_quant_mult if (float_out and gb.inv_quant_mult is not None) else placeholder

    pack_params = np.zeros(8, np.uint32)
    pack_params[:4] = (m, k, gb.k4, mp)
    pack_params[4:5] = np.float32(qa).view(np.uint32)
    pack_params[5] = src.dtype == np.uint8
    pack_params[6:7] = np.array([za], np.int32).view(np.uint32)
    pack_params[7] = za_source
    gemm_params = np.zeros(12, np.uint32)
    gemm_params[:5] = (m, n, gb.k4, mp // 4, gb.np_ // 4)
    gemm_params[5] = scale_step
    splits = tiles.k_splits(gb.k4, cfg.ks) if cfg.kernel == "tiled" else 1
    if cfg.kernel == "tiled" and splits == 1 and cfg.ks > 1:
        cfg = dataclasses.replace(cfg, ks=1)  # K too short to split: the unsplit kernel
    gemm_params[6] = tiles.k_chunk(gb.k4, cfg.ks) if splits > 1 else gb.k4
    gemm_params[7] = flags
    gemm_params[8:9] = np.float32(inv_qa).view(np.uint32)
    gemm_params[9] = splits
    gemm_params[10] = k // 4

    dispatches = []
    if not direct:
        dispatches.append((
            gpu.pipeline(kernels.prepare_a_source("float" if src.dtype == np.float32 else "bytes"),
                         PACK_BINDINGS),
            (src.buffer, (za_gpu or placeholder).buffer, packed_a.buffer, rowinfo.buffer,
             gpu.uniform(pack_params.tobytes())),
            (min(m, 65535), -(-m // 65535), 1)))
    out_kind = "f32" if float_out else "i32"
    source = _multiply_source(cfg, m, out_kind)
    if cfg.kernel == "small_m":
        groups = (-(-(gb.np_ // 4) // cfg.wg_x), 1, 1)
    else:
        groups = (-(-n // cfg.bn), -(-m // cfg.bm), splits)
    uniform = gpu.uniform(gemm_params.tobytes())
    epilogue_inputs = (gb.col_sums.buffer, rowinfo.buffer, zb_gpu.buffer, scale.buffer,
                       bias_gpu.buffer)
    parts = GpuArray((splits, m, gb.np_), np.int32) if splits > 1 else None
    multiply = (gpu.pipeline(source, GEMM_BINDINGS),
                ((src if direct else packed_a).buffer, gb.packed.buffer, *epilogue_inputs,
                 (c if parts is None else parts).buffer, uniform),
                groups)
    dispatches.append(multiply)
    if parts is not None:
        dispatches.append((gpu.pipeline(kernels.reduce_source(out_kind), GEMM_BINDINGS),
                           (parts.buffer, gb.packed.buffer, *epilogue_inputs, c.buffer, uniform),
                           (-(-(gb.np_ // 4) // 64), min(m, 65535), -(-m // 65535))))
    return Plan(dispatches, c, on_gpu,
                (src, packed_a, rowinfo, zb_gpu, bias_gpu, scale, za_gpu, parts),
                None if src is a else src,
                qa if src is not a and src.dtype != a.dtype else None)
