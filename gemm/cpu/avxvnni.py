"""AVX-VNNI path: the VEX-encoded vpdpbusd on 256-bit registers (Alder Lake and later).

The same instruction and the same exactness argument as avx512vnni.py, at half the width, for
CPUs that have VNNI without AVX-512. LLVM emits the VEX form when only AVX-VNNI is present.
"""

from dispatch import IsaLevel

from .avx512vnni import dpbusd_step, prep_a
from .driver import CpuPath, register_path
from .simd import IsaOps, Tile, register_isa

NAME = "avxvnni"
BITS = 256

register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=dpbusd_step(BITS)))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVXVNNI,
    a_encoding="u8",
    b_allows_min=True,
    # 16 ymm registers.
    tiles=(Tile(NAME, 4, 2), Tile(NAME, 6, 2), Tile(NAME, 3, 3), Tile(NAME, 2, 4)),
))
