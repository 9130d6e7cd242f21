"""The public GEMM calls: quantize and gemm_i8.

Quantization convention (intgemm's, and Firefox's WebAssembly 8-bit gemm):
    q = clamp(round_half_to_even(x * quant_mult), -127, 127)   as int8
    C = (Aq @ Bq) * unquant_mult + bias,  unquant_mult = 1 / (a_quant_mult * b_quant_mult_j)
-127..127 is symmetric, so negating a quantized value never overflows. Every CPU path multiplies
int8 A of the full range [-128, 127] exactly; the sign-trick paths (avx2, avx512bw) reject a B
holding -128, which `prepare_b*` never produce from float weights.
"""

from __future__ import annotations

import numpy as np

import dispatch

from .cpu import driver
from .cpu import plan as cpu_plan
from .prepared import PreparedB, prepare_b_quantized
from .validate import (
    b_zero_points,
    check_a_matrix,
    check_int,
    check_quant_mult,
    out_scale_factors,
    output_kind,
)
from .wgsl import driver as gpu_driver
from .wgsl.prepared import GpuPreparedB

_EMPTY_F32 = np.zeros(0, np.float32)
_ONE_F32, _ZERO_F32 = np.float32(1.0), np.float32(0.0)


def quantize(a: np.ndarray, quant_mult) -> np.ndarray:
    """float32 array (any shape) -> int8: clamp(round_half_even(a * quant_mult), -127, 127)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"A: expected a numpy float32 array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"A: expected dtype float32, got {a.dtype}")
    qm = np.float32(check_quant_mult(quant_mult, "quant_mult"))
    flat = np.ascontiguousarray(a).reshape(1, -1) if a.ndim != 2 else a
    out = np.empty(flat.shape, np.int8)
    if flat.size and not driver.quantize_into(flat, np.array([qm], np.float32), out):
        raise ValueError("A: contains NaN or infinity")
    return out.reshape(a.shape)


def gemm_i8(a: np.ndarray, b, *, a_quant_mult=None, bias=None, relu: bool = False, out=None,
            a_zero_point: int = 0, b_zero_point=0, out_scale=None, a_scale=None,
            backend: str | None = None, threads: int | None = None,
            _params: dict | None = None) -> np.ndarray:
    """C = (A - a_zero_point) @ (B - b_zero_point), exactly, as int32 (M x N);
    or, with a_quant_mult, C = that * 1/(a_quant_mult * b_quant_mult) + bias as float32.

    a:            M x K int8 or uint8 (already quantized), or float32 (quantized here with
                  a_quant_mult). Any memory layout: A is always copied into the kernel's panel.
    b:            a PreparedB (prepare once, multiply many times), or a K x N int8 array
                  (prepared on every call: slower).
    a_quant_mult: A's quantization multiplier; requires B prepared with a quant_mult, and
                  makes the output float32.
    bias:         float32, N values, added in the same pass (float output only).
    relu:         max(C, 0) in the same pass (float output only).
    out:          a C-contiguous M x N array of the output dtype (int32 or float32), written.
    a_zero_point: scalar; b_zero_point: scalar or N per-column values (ONNX MatMulInteger).
    out_scale:    instead of a_quant_mult, for int8/uint8 A: float32 output
                  C = (A - a_zero_point) @ (B - b_zero_point) * out_scale_j + bias_j, with the
                  scale (a scalar or N per-column values) given as is, not as 1/(qa*qb): what
                  an ONNX MatMulInteger -> Cast -> Mul(scale) -> Add(bias) chain computes.
                  With a_scale, float32 A is quantized first.
                  On the GPU path a_zero_point (one value of A's dtype), b_zero_point (N int32),
                  out_scale (1 or N float32) and bias may be GpuArrays: parameters computed on
                  the GPU (DynamicQuantizeLinear's) are then used without a read-back.
    a_scale:      for float32 A (CPU path): quantize A to uint8 as ONNX QuantizeLinear does,
                  clamp(rint(A / a_scale) + a_zero_point, 0, 255) with a float32 division, while
                  packing it, then multiply as uint8 A with that zero point: what
                  DynamicQuantizeLinear -> MatMulInteger computes, with A read once. Output as
                  for uint8 A (int32, or float32 with out_scale). NaN in A: ValueError.
    backend:      "cpu" or "cpu:<path>" (generic, avx2-i16, avx2, avxvnni, avx512bw,
                  avx512vnni); the default is I8GEMM_CPU_PATH or the best path of this CPU.
                  "gpu" (or "gpu:wgsl"): the WGSL path (RuntimeError if there is no GPU);
                  "auto": the GPU if there is one,
                  else the CPU with one warning. GpuArray / GpuPreparedB arguments imply "gpu";
                  the result is then a GpuArray (as it is whenever `out` is one).
    threads:      threads to use; default I8GEMM_NUM_THREADS or all cores.
    _params:      the autotuner's override of the chosen parameters (tile, threads, m_block,
                  p_block); not for general use.
    """
    # A call repeated with the same GPU arrays (or numpy arrays of the same shapes) runs its kept
    # plan (gemm/wgsl/driver.py). The autotuner's calls (a backend named, _params) take this
    # path too: timed through the slower general path, small calls were bound by host work
    # that a user's call does not do, and kernels' differences did not show.
    if type(b) is GpuPreparedB and a_scale is None and (backend is None or backend in _GPU_NAMES):
        key = gpu_driver.repeat_key(a, a_quant_mult, bias, relu, out, a_zero_point, b_zero_point,
                                    out_scale, _params)
        if key is not None:
            result = gpu_driver.run_again(b, key, a, out)
            if result is not None:
                return result
    # GPU arrays, a GPU PreparedB or a non-CPU backend go to the WGSL path (gemm/wgsl/). (Numpy
    # arrays with a CPU path named, as the autotuner's calls are, skip _route's checks: they
    # cost 2-3 us, a fifth of a small call.)
    cpu_named = type(backend) is str and backend.partition(":")[0] == "cpu"
    if (backend is not None and not cpu_named) or type(a) is not np.ndarray or \
            type(b) is not PreparedB or (out is not None and type(out) is not np.ndarray):
        backend = _route(a, b, out, backend)
        if backend in ("gpu", "auto") and a_scale is not None:
            raise ValueError("a_scale: quantizing A inside the GEMM is a CPU-path option; on the "
                             "GPU, quantize A first (ops.quantize_linear) and pass uint8 A")
        if backend in ("gpu", "auto"):
            return _gemm_gpu(a, b, backend, dict(
                a_quant_mult=a_quant_mult, bias=bias, relu=relu, out=out,
                a_zero_point=a_zero_point, b_zero_point=b_zero_point, out_scale=out_scale),
                threads, _params)
        plan_key = None
    else:
        # A call like an earlier one with this B runs that call's plan (gemm/cpu/plan.py).
        plan_key = cpu_plan.repeat_key(a, out, bias, relu, a_quant_mult, out_scale, a_scale,
                                       backend, threads, _params)
        if plan_key is not None:
            plan = cpu_plan.kept(b, plan_key)
            if plan is not None:
                return plan.run(a, out, _EMPTY_F32 if bias is None else bias, _option_values(
                    plan, b, a_quant_mult, a_zero_point, b_zero_point, out_scale, a_scale))

    # -- A ---------------------------------------------------------------------------------
    if not isinstance(a, np.ndarray):
        raise TypeError(f"A: expected a numpy array, got {type(a).__name__}")
    m, k = check_a_matrix(a)

    # -- B ---------------------------------------------------------------------------------
    if not isinstance(b, PreparedB):
        if isinstance(b, np.ndarray) and b.dtype != np.int8:
            raise TypeError(f"B: expected an int8 array or a PreparedB, got dtype {b.dtype} "
                            "(prepare float weights with gemm.prepare_b)")
        if not isinstance(b, np.ndarray):
            raise TypeError(f"B: expected an int8 array or a PreparedB, got {type(b).__name__}")
        b = prepare_b_quantized(b)
    if b.k != k:
        raise ValueError(f"B: has K={b.k} rows, but A has K={k} columns")
    n = b.n

    # -- output kind -------------------------------------------------------------------------
    if a_scale is not None:
        if a.dtype != np.float32:
            raise TypeError(f"a_scale: quantizes float32 A, but A has dtype {a.dtype}")
        if a_quant_mult is not None:
            raise ValueError("a_scale: give either a_scale or a_quant_mult, not both")
    out_dtype, _ = output_kind(np.dtype(np.uint8) if a_scale is not None else a.dtype,
                               a_quant_mult, out_scale, bias, relu, b.quant_mult)
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.dtype != np.float32:
            raise TypeError(f"bias: expected a float32 array of {n} values")
        if bias.shape != (n,):
            raise ValueError(f"bias: expected shape ({n},), got {bias.shape}")

    if out is not None:
        if not isinstance(out, np.ndarray) or out.dtype != out_dtype:
            got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
            raise TypeError(f"out: expected a {np.dtype(out_dtype).name} array, got {got}")
        if out.shape != (m, n):
            raise ValueError(f"out: expected shape {(m, n)}, got {out.shape}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out: must be C-contiguous and writable")
    if n == 0:
        return np.empty((m, 0), out_dtype) if out is None else out

    # -- path and parameters -----------------------------------------------------------------
    impl, params = dispatch.select("gemm_i8", (m, k, n), a.dtype, backend=backend, threads=threads)
    path: driver.CpuPath = impl.entry
    if _params is not None:
        params = {**params, **_params}
    tile = params["tile"]

    # -- how A is packed -------------------------------------------------------------------------
    # The kernels read A from packed rows (padded to k4 * 4): int8/uint8 A is copied, float32 A
    # quantized on the way (driver.pack_rows). With blocks over every panel (the serial driver,
    # row blocks) each block packs its own rows on its thread; otherwise A is packed here first,
    # or by each thread into a copy of its own (the a_packing parameter: driver.A_PACKINGS).
    if a_scale is not None:
        mode, a_type = driver.PACK_LINEAR, np.dtype(np.uint8)
    elif a.dtype == np.float32:
        mode, a_type = driver.PACK_SYMMETRIC, np.dtype(np.int8)
    else:
        mode, a_type = driver.PACK_COPY, a.dtype
    if driver.packs_a_in_blocks(params["threads"], int(params["p_block"]), -(-n // tile.nr)):
        packer = driver.A_IN_BLOCKS
    else:
        packer = driver.A_PER_THREAD if params.get("a_per_thread") else driver.A_BY_CALLER

    # -- run -----------------------------------------------------------------------------------
    # Every array the kernels get is C-contiguous and 1-D or 2-D, so (tile, A's packed dtype, C's
    # dtype, A's dtype) fixes the compiled signature (driver.call_compiled).
    plan = cpu_plan.CpuPlan(
        m=m, n=n, k=k, k4=b.k4, tile=tile, packed_dtype=np.dtype(path.a_dtype),
        out_dtype=out_dtype, b_panels=b.packed(path, tile.nr), col_sums=b.col_sums,
        relu=bool(relu),
        streaming=bool(params.get("streaming")), prefetch_b=bool(params.get("prefetch_b")),
        m_block=int(params["m_block"]), p_block=int(params["p_block"]),
        threads=int(params["threads"]), pack_mode=mode, a_unsigned=a_type == np.uint8,
        a_shift=path.a_shift(a_type), packer=packer,
        key=(tile, path.a_encoding, out_dtype, a.dtype),
        nan_message="A: contains NaN" if a_scale is not None else "A: contains NaN or infinity")
    result = plan.run(a, out, _EMPTY_F32 if bias is None else bias, _option_values(
        plan, b, a_quant_mult, a_zero_point, b_zero_point, out_scale, a_scale))
    if plan_key is not None and cpu_plan.may_keep(_params):
        cpu_plan.keep(b, plan_key, plan)
    return result


def _option_values(plan, b, a_quant_mult, a_zero_point, b_zero_point, out_scale, a_scale):
    """cpu_plan.OptionValues of a call: its scalar and per-column options, checked, as the
    packing of A and the epilogue use them. Made for every call, kept plan or not: a decoder
    quantizes each step's A with a multiplier of its own, and a dynamically quantized A comes
    with a scale and zero point of its own, so these values change from call to call while the
    plan (which depends only on whether each option is given) stays."""
    n = plan.n
    if a_scale is not None:
        mult = np.float32(check_quant_mult(a_scale, "a_scale"))
    elif a_quant_mult is not None:
        mult = np.float32(check_quant_mult(a_quant_mult, "a_quant_mult"))
    else:
        mult = _ZERO_F32
    za = 0
    if a_zero_point is not None and not (isinstance(a_zero_point, int) and a_zero_point == 0):
        lo, hi = (0, 255) if plan.a_unsigned else (-128, 127)
        za = check_int(a_zero_point, "a_zero_point", lo, hi)
    zb = b_zero_points(b_zero_point, n)
    if out_scale is not None:
        inv_qa, inv_qb = out_scale_factors(out_scale, n)
    elif a_quant_mult is not None:
        inv_qa, inv_qb = _ONE_F32 / mult, b.inv_quant_mult
    else:
        inv_qa, inv_qb = _ONE_F32, _EMPTY_F32
    return cpu_plan.OptionValues(mult, za, zb, inv_qa, inv_qb)


def _route(a, b, out, backend):
    """The backend a call takes: "gpu", "auto" or a CPU backend (None = the default)."""
    from dispatch.gpu_array import GpuArray

    on_gpu = isinstance(a, GpuArray) or isinstance(b, GpuPreparedB) or isinstance(out, GpuArray)
    if backend is None:
        return "gpu" if on_gpu else None
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string such as 'cpu', 'gpu' or 'auto', got {backend!r}")
    if backend == "auto":
        return "gpu" if on_gpu else "auto"
    if backend.partition(":")[0] == "gpu":
        dispatch.resolve("gemm_i8", backend)  # ValueError for a GPU path that does not exist
        return "gpu"
    if on_gpu and backend != "gpu":
        raise ValueError(f"backend={backend!r}: the arguments include GPU arrays; use "
                         "backend='gpu' (or None), or pass numpy arrays")
    return backend


# Backends that name the GPU: a repeated call under them may run its kept plan at once. ("auto"
# goes the long way, which falls back to the CPU if the device is lost.)
_GPU_NAMES = ("gpu", "gpu:wgsl")


def _gemm_gpu(a, b, backend, kwargs, threads, _params):
    """The WGSL path; for backend="auto", the CPU instead (with one warning) when there is no GPU
    or the device is lost."""
    from dispatch import gpu

    if backend == "auto":
        impl = dispatch.resolve("gemm_i8", "auto")
        if impl.backend != "gpu":
            return gemm_i8(a, b, **kwargs, threads=threads, _params=_params)
        try:
            return gpu_driver.gemm_i8(a, b, **kwargs, _params=_params)
        except gpu.DeviceLost as exc:
            dispatch.registry.warn_cpu_fallback(str(exc))
            return gemm_i8(a, b, **kwargs, threads=threads, _params=_params)
    dispatch.resolve("gemm_i8", "gpu")  # RuntimeError naming why, when there is no GPU
    return gpu_driver.gemm_i8(a, b, **kwargs, _params=_params)
