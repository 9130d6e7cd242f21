"""gemm_i8 on the GPU: checks as the CPU path does, then two dispatches in one submission.

  1. prepare_a.wgsl: A (float32 to quantize, or int8/uint8) -> packed K-major u32 groups, row
     sums and NaN/inf row flags, on the GPU (a numpy A is uploaded as it is: one transfer).
  2. gemm_small_m.wgsl (M <= 8) or gemm_tiled.wgsl: the exact int32 product with the fused
     epilogue of common.wgsl (zero-point corrections; unquantize, bias, relu for float output).
Semantics are those of gemm.api.gemm_i8 (same checks, same messages, same arithmetic), except
that a GPU-resident float A is not scanned for NaN/inf on the host: its NaN/inf rows come out as
NaN rows of C. The result is a GpuArray when A is one (or `out` is one), else numpy.
A call is checked and planned once per kind of call (a `Call`, cached: see "the call cache"
below); repeating it costs the per-call checks, the uploads of numpy inputs and two enqueued
dispatches, whose parameter blocks travel through dispatch.gpu's ring.
"""

from __future__ import annotations

import collections
import weakref

import numpy as np

import dispatch
from dispatch import gpu
from dispatch.gpu_array import GpuArray

from ..prepared import PreparedB, prepare_b_quantized
from ..validate import b_zero_points, check_int, check_quant_mult
from . import kernels, tiles
from .prepared import GpuPreparedB, dummy

_A_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float32))
GEMM_BINDINGS = "rrrrrrrwp"
PREPARE_BINDINGS = "rwwp"
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
            a_zero_point: int = 0, b_zero_point=0, _params: dict | None = None):
    """See gemm.gemm_i8 (backend="gpu")."""
    key = _call_key(a, b, a_quant_mult, bias, relu, out, a_zero_point, b_zero_point, _params)
    call = _CALLS.get(key) if key is not None else None
    if call is None or not call.current(a, b):
        call = Call(a, b, a_quant_mult=a_quant_mult, bias=bias, relu=relu, out=out,
                    a_zero_point=a_zero_point, b_zero_point=b_zero_point, _params=_params)
        if key is not None:
            _remember(key, call, b)
    else:
        _CALLS.move_to_end(key)
    return call.run(a, b, a_quant_mult, bias, out)


class Plan:
    """What one call submits: the dispatches, and the arrays they use (kept alive with it)."""

    __slots__ = ("dispatches", "c", "on_gpu", "keep")

    def __init__(self, dispatches, c, on_gpu, keep=()):
        self.dispatches, self.c, self.on_gpu, self.keep = dispatches, c, on_gpu, keep


def build(a, b, *, a_quant_mult=None, bias=None, relu: bool = False, out=None,
          a_zero_point: int = 0, b_zero_point=0, _params: dict | None = None) -> Plan:
    """Check the arguments and plan the call (uploading numpy inputs); submits nothing. For
    timing the kernels alone (bench, sweep); gemm_i8 runs a cached Call instead."""
    call = Call(a, b, a_quant_mult=a_quant_mult, bias=bias, relu=relu, out=out,
                a_zero_point=a_zero_point, b_zero_point=b_zero_point, _params=_params)
    dispatches, c = call.dispatches(a, b, a_quant_mult, bias, out)
    return Plan(dispatches, c, call.on_gpu, (call,))


# -- the call cache ------------------------------------------------------------------------------
# A repeated call (same shapes, dtypes, kinds of arguments, flags, the same B object) reuses its
# Call: the checks that the key decides, the kernel choice, the pipelines, the temporaries and,
# through dispatch.gpu's caches, the bind groups. Only what may differ between such calls is
# looked at again on every call: the values of a_quant_mult, of A and of the bias, and which
# GPU buffers A, bias and out are. B is held by a weak reference (its entries go when it does).

MAX_CALLS = 64
MAX_CALL_BYTES = 256 << 20  # GPU memory the cached Calls' temporaries may hold, together
_CALLS: collections.OrderedDict = collections.OrderedDict()
_IMMUTABLE_SCALARS = (float, int, np.float32, np.float64)


def _operand(x):
    """(type, shape, dtype) of a numpy or GPU array, None for None; False: not cacheable."""
    if x is None:
        return None
    t = type(x)
    if t is not np.ndarray and t is not GpuArray:
        return False
    return (t, x.shape, x.dtype)


def _call_key(a, b, qa, bias, relu, out, za, zb, _params):
    """The cache key of a call, or None for a call that is not cached (the rare kinds: a plain
    int8 B prepared per call, array zero points, the tuner's overrides, unusual types)."""
    tb = type(b)
    if (_params is not None or (tb is not GpuPreparedB and tb is not PreparedB)
            or type(za) is not int or type(zb) is not int):
        return None
    ka, kbias, kout = _operand(a), _operand(bias), _operand(out)
    if not ka or kbias is False or kout is False:
        return None
    return (ka, id(b), qa is None, kbias, kout, bool(relu), za, zb)


def _remember(key, call: Call, b) -> None:
    def forget(ref, key=key):
        entry = _CALLS.get(key)
        if entry is not None and entry.b_ref is ref:
            del _CALLS[key]

    call.b_ref = weakref.ref(b, forget)
    _CALLS[key] = call
    held = sum(c.nbytes for c in _CALLS.values())
    while len(_CALLS) > 1 and (len(_CALLS) > MAX_CALLS or held > MAX_CALL_BYTES):
        held -= _CALLS.popitem(last=False)[1].nbytes


def forget_calls() -> None:
    """Drop every cached Call (and so their temporaries)."""
    _CALLS.clear()


class Call:
    """One kind of gemm_i8 call, checked and planned: the construction runs every check of
    gemm.gemm_i8 (same messages); run() then needs only the per-call ones."""

    def __init__(self, a, b, *, a_quant_mult=None, bias=None, relu: bool = False, out=None,
                 a_zero_point: int = 0, b_zero_point=0, _params: dict | None = None):
        # -- A ---------------------------------------------------------------------------------
        if not isinstance(a, (np.ndarray, GpuArray)):
            raise TypeError(f"A: expected a numpy array or a GpuArray, got {type(a).__name__}")
        if a.ndim != 2:
            raise ValueError(f"A: expected a 2-D array (M x K), got shape {a.shape}")
        if a.dtype not in _A_DTYPES:
            raise TypeError(f"A: expected dtype int8, uint8 or float32, got {a.dtype}")
        m, k = a.shape
        if m == 0 or k == 0:
            raise ValueError(f"A: expected M >= 1 and K >= 1, got shape {a.shape}")

        # -- B ---------------------------------------------------------------------------------
        gb = gpu_prepared(b)
        if gb.k != k:
            raise ValueError(f"B: has K={gb.k} rows, but A has K={k} columns")
        n = gb.n

        # -- output kind -------------------------------------------------------------------------
        float_out = a_quant_mult is not None
        if a.dtype == np.float32 and not float_out:
            raise ValueError("a_quant_mult: required when A is float32 (it quantizes A)")
        flags = 0
        if float_out:
            check_quant_mult(a_quant_mult, "a_quant_mult")
            if gb.quant_mult is None:
                raise ValueError("B: has no quant_mult, which float output needs; prepare it with "
                                 "prepare_b/prepare_b_transposed or pass quant_mult when preparing")
            out_dtype = np.dtype(np.float32)
        else:
            out_dtype = np.dtype(np.int32)
            if bias is not None:
                raise ValueError("bias: only allowed with float output (pass a_quant_mult)")
            if relu:
                raise ValueError("relu: only allowed with float output (pass a_quant_mult)")
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
            _check_numpy_out(out)

        # -- zero points ---------------------------------------------------------------------------
        za = 0
        if a_zero_point is not None and not (isinstance(a_zero_point, int) and a_zero_point == 0):
            lo, hi = (0, 255) if a.dtype == np.uint8 else (-128, 127)
            za = check_int(a_zero_point, "a_zero_point", lo, hi)
        zb = b_zero_points(b_zero_point, n)
        if zb.size:
            flags |= HAS_ZB

        _check_numpy_a(a)

        self.m, self.k, self.n = m, k, n
        self.a_dtype, self.out_dtype, self.float_out = a.dtype, out_dtype, float_out
        self.on_gpu = on_gpu
        self.b_ref = None
        self.gb_ref = weakref.ref(gb)
        self.generation = gpu.generation()
        self._qa = None  # the a_quant_mult object the parameter blocks hold, when immutable
        self.nbytes = 0  # of the temporaries below
        if n == 0:
            self.decision = None
            return

        # -- configuration ---------------------------------------------------------------------------
        self.decision = dispatch.select("gemm_i8", (m, k, n), a.dtype, backend="gpu")
        params = self.decision[1] if _params is None else {**self.decision[1], **_params}
        cfg = params["config"]
        if cfg.kernel == "small_m" and m > tiles.SMALL_M_MAX:
            raise ValueError(f"_params: the small_m kernel takes M <= {tiles.SMALL_M_MAX}, got M={m}")

        # -- temporaries, held for the Call's life -------------------------------------------------
        mp = -(-m // 4) * 4
        self.packed_a = GpuArray((gb.k4, mp), np.uint32)
        self.rowinfo = GpuArray((2 * mp,), np.int32)
        self.a_gpu = None if isinstance(a, GpuArray) else GpuArray((m, k), a.dtype)
        self.bias_gpu = GpuArray((n,), np.float32) if isinstance(bias, np.ndarray) else None
        self.c_own = None if on_gpu else GpuArray((m, n), out_dtype)
        placeholder = dummy()
        self.placeholder = placeholder.buffer
        self.zb_gpu = GpuArray.from_numpy(zb) if zb.size else placeholder
        self.nbytes = sum(x.nbytes for x in (self.packed_a, self.rowinfo, self.a_gpu, self.bias_gpu,
                                             self.c_own, self.zb_gpu) if x is not None)
        if isinstance(a, GpuArray) and a.dtype == np.float32:
            flags |= ROW_FLAGS

        # -- parameter blocks: fixed here, but for a_quant_mult's two fields ------------------------
        shift = -128 if a.dtype == np.uint8 else 0
        self.pack_params = np.zeros(8, np.uint32)
        self.pack_params[:4] = (m, k, gb.k4, mp)
        self.pack_params[5] = a.dtype == np.uint8
        self.gemm_params = np.zeros(12, np.uint32)
        self.gemm_params[:5] = (m, n, gb.k4, mp // 4, gb.np_ // 4)
        self.gemm_params[5:7] = np.array([shift + za, k * za], np.int64).astype(np.int32).view(np.uint32)
        self.gemm_params[7] = flags
        self._pack_f32, self._gemm_f32 = self.pack_params.view(np.float32), self.gemm_params.view(np.float32)
        self._set_quant_mult(np.float32(1.0))

        self.prepare = gpu.pipeline(
            kernels.prepare_a_source("float" if a.dtype == np.float32 else "bytes"), PREPARE_BINDINGS)
        self.prepare_groups = (min(m, 65535), -(-m // 65535), 1)
        out_kind = "f32" if float_out else "i32"
        if cfg.kernel == "small_m":
            source = kernels.small_m_source(cfg, tiles.small_m_rows(m), out_kind)
            self.groups = (-(-(gb.np_ // 4) // cfg.wg_x), 1, 1)
        else:
            source = kernels.tiled_source(cfg, out_kind)
            self.groups = (-(-n // cfg.bn), -(-m // cfg.bm), 1)
        self.multiply = gpu.pipeline(source, GEMM_BINDINGS)

    def current(self, a, b) -> bool:
        """Whether this Call, cached for b, still serves a call with b (its GPU copy, the device
        and the kernel decision are the ones it was planned with)."""
        return (self.b_ref() is b and self.gb_ref() is gpu_prepared(b)
                and self.generation == gpu.generation()
                and (self.decision is None or self.decision is dispatch.select(
                    "gemm_i8", (self.m, self.k, self.n), a.dtype, backend="gpu")))

    def _set_quant_mult(self, qa) -> None:
        qa = np.float32(qa)
        self._pack_f32[4] = qa
        self._gemm_f32[8] = np.float32(1.0) / qa

    def _operands(self, a, b, qa, bias, out):
        """The per-call part: checks that depend on values, uploads; -> (A's buffer, bias's
        buffer, C, B on the GPU)."""
        if self.float_out and qa is not self._qa:
            # A plain float well inside float32's positive range needs no further check.
            self._set_quant_mult(qa if type(qa) is float and 1e-37 < qa < 1e38
                                 else check_quant_mult(qa, "a_quant_mult"))
            self._qa = qa if type(qa) in _IMMUTABLE_SCALARS else None
        _check_numpy_out(out)
        if self.a_gpu is None:
            src = a.buffer
        else:
            _check_numpy_a(a)
            gpu.upload(self.a_gpu.buffer, a)
            src = self.a_gpu.buffer
        if bias is None:
            bias_buf = self.placeholder
        elif self.bias_gpu is None:
            bias_buf = bias.buffer
        else:
            gpu.upload(self.bias_gpu.buffer, bias)
            bias_buf = self.bias_gpu.buffer
        if isinstance(out, GpuArray):
            c = out
        elif self.on_gpu:
            c = GpuArray((self.m, self.n), self.out_dtype)
        else:
            c = self.c_own
        return src, bias_buf, c, gpu_prepared(b)

    def _buffers(self, src, bias_buf, c, gb):
        scale = gb.inv_quant_mult.buffer if (self.float_out and gb.inv_quant_mult is not None) \
            else self.placeholder
        return ((src, self.packed_a.buffer, self.rowinfo.buffer),
                (self.packed_a.buffer, gb.packed.buffer, gb.col_sums.buffer, self.rowinfo.buffer,
                 self.zb_gpu.buffer, scale, bias_buf, c.buffer))

    def run(self, a, b, qa, bias, out):
        """Queue the call's two dispatches; C as the caller asked for it (GpuArray or numpy)."""
        if self.n == 0:
            return self._empty(out)
        src, bias_buf, c, gb = self._operands(a, b, qa, bias, out)
        prepare_bufs, multiply_bufs = self._buffers(src, bias_buf, c, gb)
        gpu.enqueue(self.prepare, gpu.bind(self.prepare, prepare_bufs), self.prepare_groups,
                    self.pack_params)
        gpu.enqueue(self.multiply, gpu.bind(self.multiply, multiply_bufs), self.groups,
                    self.gemm_params)
        if self.on_gpu:
            return c
        return c.numpy(out)

    def dispatches(self, a, b, qa, bias, out) -> tuple[list, GpuArray]:
        """The call as dispatch.gpu.run's list (for timing the kernels alone), and its C."""
        if self.n == 0:
            return [], self._empty(out)
        src, bias_buf, c, gb = self._operands(a, b, qa, bias, out)
        prepare_bufs, multiply_bufs = self._buffers(src, bias_buf, c, gb)
        return [(self.prepare, (*prepare_bufs, self.pack_params.copy()), self.prepare_groups),
                (self.multiply, (*multiply_bufs, self.gemm_params.copy()), self.groups)], c

    def _empty(self, out):
        if out is not None:
            return out
        c = GpuArray((self.m, 0), self.out_dtype)
        return c if self.on_gpu else c.numpy()


def _check_numpy_out(out) -> None:
    if isinstance(out, np.ndarray) and (not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError("out: must be C-contiguous and writable")


def _check_numpy_a(a) -> None:
    if isinstance(a, np.ndarray) and a.dtype == np.float32 and not np.isfinite(a).all():
        raise ValueError("A: contains NaN or infinity")
