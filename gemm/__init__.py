"""int8 GEMM: quantize, prepare B once, multiply exactly (int32) or with a fused float epilogue.

    import gemm
    pb = gemm.prepare_b(W, quant_mult)             # W: K x N float32
    C  = gemm.gemm_i8(A, pb, a_quant_mult=qa, bias=bias)   # A: M x K float32 -> M x N float32
    Ci = gemm.gemm_i8(gemm.quantize(A, qa), pb)    # int8 A -> exact int32 Aq @ Bq
    C2 = gemm.gemm_i8(A, pb.select_columns(ids), a_quant_mult=qa)   # shortlisted output layer
    gemm.gemm_i8(A, pb, a_quant_mult=qa, out=gemm.aligned_empty((M, N), np.float32))
                                                   # a reused out that large results stream into

On the GPU (gemm/wgsl/): gemm_i8(..., backend="gpu") with numpy arrays, or with
gemm.GpuArray / pb.to_gpu() to keep data on the GPU between calls.

See api.py for the conventions and gemm/cpu/ for the per-ISA paths.
"""

from dispatch.gpu_array import GpuArray

from . import (
    cpu,  # noqa: F401  (registers the CPU paths with dispatch)
    wgsl,  # noqa: F401  (registers the GPU path; opens no device until asked)
)
from .api import gemm_i8, quantize
from .cpu.driver import aligned_empty
from .prepared import (
    PreparedB,
    prepare_b,
    prepare_b_quantized,
    prepare_b_quantized_transposed,
    prepare_b_transposed,
)
from .wgsl.prepared import GpuPreparedB

__all__ = [
    "GpuArray", "GpuPreparedB", "PreparedB", "aligned_empty", "gemm_i8", "prepare_b", "prepare_b_quantized",
    "prepare_b_quantized_transposed", "prepare_b_transposed", "quantize",
]
