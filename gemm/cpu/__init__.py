"""CPU paths of the int8 GEMM: one module per instruction set, all with one contract.

Each ISA module defines NAME, its `IsaOps` (vector width and multiply-accumulate step, emitted as
LLVM x86 intrinsics) and a `CpuPath` (ISA level, how A is encoded, whether -128 in B is exact, its
candidate register tiles), and registers the path with `dispatch`. The shared driver
(`driver.py`) packs, blocks, threads and applies the epilogue; `simd.py` holds the micro-kernel;
`plan.py` keeps what a call worked out, for the calls like it that follow.
A level may have several paths, one of them preferred (AVX2: avx2_i16.py, cpu:avx2-i16; the
sign trick of avx2.py, cpu:avx2, runs when named).
Importing a module compiles nothing: numba compiles a path the first time it runs.
"""

from . import avx2, avx2_i16, avx512bw, avx512vnni, avxvnni, generic  # noqa: F401  (registration)
from .driver import PATHS, CpuPath

__all__ = ["PATHS", "CpuPath"]
