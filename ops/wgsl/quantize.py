"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear on the GPU, bit for bit as the CPU
(and onnx's reference) computes them.

quantize (quantize.wgsl): x / scale must be a correctly rounded float32 division and WGSL's `/`
is only bounded by 2.5 ulp, so quantize_common.wgsl checks each quotient (WGSL's `/`, or per
tensor x * (1 / scale), both within 3.5 * 2**-23 of the correctly rounded one): one within 2**-20
(relative) of a half-integer -- where a few ulp could move rint() to the neighbouring integer --
is recomputed exactly by long division of the mantissas. rint is WGSL's round(), which rounds
half to even. Four values per u32 of the int8/uint8 output, four such groups per invocation,
loaded before any is computed.
dequantize (dequantize.wgsl): (f32(q) - f32(zero_point)) * scale: exact difference, correctly
rounded product, as WGSL requires.
dynamic (dynamic_qparams.wgsl): min and max of x in two dispatches (per-workgroup parts over
contiguous chunks, front to back, then one workgroup over the parts), scale and zero point
with ONNX's float32 steps on the GPU; the quantization (quantize.wgsl, back to front, so it
starts on what is still in L2) reads them from GPU memory, so nothing crosses to the host.
Memory sees x read twice and y written once: two reads are the floor for an exact
DynamicQuantizeLinear of an array larger than the caches. scale and zero_point come back as 0-d
GpuArrays (float32, uint8).

Differences from the CPU, because the GPU cannot raise without reading back: a NaN in x
quantizes to the zero point (the CPU raises ValueError); dynamic_quantize_linear of an x holding
NaN or inf returns scale NaN and zero point 0. Scales and zero points given from the host are
small constant buffers, made once per distinct value (programs.constant_array).
"""

from __future__ import annotations

import math

import numpy as np

from dispatch.gpu_array import GpuArray

from . import programs as pg

FORCE_EXACT = False   # tests set it: every quotient by long division (the rare path, always)


def _channels(shape, axis) -> tuple[int, int]:
    """(channels, inner) of the per-axis parameters; (1, 1) per tensor."""
    if axis is None:
        return 1, 1
    return shape[axis], math.prod(shape[axis + 1:])


def _quantize(x, scale_buf, zp_buf, nch: int, inner: int, out) -> None:
    n = x.size
    vec = n % 4 == 0
    info = np.iinfo(out.dtype)
    prog = pg.program("quantize.wgsl", "rrrwu", "quantize_common.wgsl", XT=pg.xtype(vec),
                      LOADX=pg.flat_load(vec, "x"), PER_TENSOR=str(nch == 1).lower())
    groups4 = -(-n // 4)
    pg.run([(prog, (x.buffer, scale_buf, zp_buf, out.buffer,
                     pg.params(n, groups4, nch, inner, info.min, info.max,
                               int(FORCE_EXACT), 0)),
              pg.flat_grid(groups4))])


def quantize_linear(x, scale: np.ndarray, zero_point: np.ndarray, axis, out, threads) -> int:
    """scale float32 and zero_point (out's dtype) as numpy 1-D arrays, validated by the front
    end. Returns 0: NaN is not counted on the GPU (it quantizes to the zero point)."""
    if x.size == 0:
        return 0
    nch, inner = _channels(x.shape, axis)
    _quantize(x, pg.constant_array(scale.astype(np.float32)),
              pg.constant_array(zero_point.astype(np.int32)), nch, inner, out)
    return 0


def dequantize_linear(q, scale: np.ndarray, zero_point: np.ndarray, axis, out, threads):
    if q.size == 0:
        return out
    n = q.size
    vec = n % 4 == 0
    nch, inner = _channels(q.shape, axis)
    prog = pg.program("dequantize.wgsl", "rrrwu", XT=pg.xtype(vec), STORE=pg.flat_store(vec, "y"),
                      PER_TENSOR=str(nch == 1).lower())
    groups4 = -(-n // 4)
    pg.run([(prog, (q.buffer, pg.constant_array(scale.astype(np.float32)),
                     pg.constant_array(zero_point.astype(np.int32)), out.buffer,
                     pg.params(n, groups4, nch, inner, int(q.dtype == np.int8))),
              pg.flat_grid(groups4))])
    return out


PARTS = 4096              # at most this many workgroups in the min/max pass
CHUNK = 4 * pg.WG * 16    # vec4 groups per workgroup there, at least: 16 trips of 4 loads each


def dynamic_quantize_linear(x, out):
    """(y uint8 GpuArray, scale float32 0-d GpuArray, zero_point uint8 0-d GpuArray)."""
    n = x.size
    vec = n % 4 == 0
    groups4 = -(-n // 4)
    step = 4 * pg.WG
    chunk = max(CHUNK, -(-groups4 // (PARTS * step)) * step)
    parts = max(1, -(-groups4 // chunk))
    partial = GpuArray((parts, 4), np.float32)
    scale = GpuArray((), np.float32)
    # The kernel writes the zero point as a u32 word: its low byte is the uint8 (little endian,
    # as every WebGPU platform is), the rest is the array's padding. quantize.wgsl reads it back
    # as an i32 word.
    zero_point = GpuArray((), np.uint8)
    uni = pg.params(n, groups4, parts, chunk)
    bufs = (x.buffer if n else pg.dummy(), partial.buffer, scale.buffer, zero_point.buffer, uni)
    pg.run([(pg.program("dynamic_qparams.wgsl", "rwwwu", "quantize_common.wgsl", entry="partial",
                         XT=pg.xtype(vec), LOADX=pg.flat_load(vec, "x")),
              bufs, (parts, 1, 1)),
             (pg.program("dynamic_qparams.wgsl", "rwwwu", "quantize_common.wgsl", entry="finish",
                         XT=pg.xtype(vec), LOADX=pg.flat_load(vec, "x")),
              bufs, (1, 1, 1))])
    if n:
        _quantize(x, scale.buffer, zero_point.buffer, 1, 1, out)
    return out, scale, zero_point
