"""AVX-512 VNNI path: vpdpbusd on 512-bit registers, exact for every int8 value.

vpdpbusd adds four unsigned-by-signed byte products straight into an int32 lane, with no 16-bit
intermediate to saturate. A is stored unsigned (a + 128) and the driver subtracts 128 x the
column sums of B afterwards, so A and B may both hold the full range [-128, 127].
"""

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import I32, IsaOps, Tile, call_intrinsic, register_isa, vec

NAME = "avx512vnni"
BITS = 512


def prep_a(builder, a):
    return a


def dpbusd_step(bits):
    """The vpdpbusd step at a given width (avxvnni.py reuses it at 256 bits)."""
    lanes = bits // 32
    name = f"llvm.x86.avx512.vpdpbusd.{bits}"

    def step(builder, acc, a, _a, b):
        t = vec(I32, lanes)
        return call_intrinsic(builder, name, t, [acc, builder.bitcast(a, t), builder.bitcast(b, t)])

    return step


register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=dpbusd_step(BITS)))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVX512VNNI,
    a_encoding="u8",
    b_allows_min=True,
    # 32 zmm registers: MR x NV accumulators + NV B vectors + the broadcast A.
    # 4x4 and 8x3 measured best on Zen 4 (see README); 4x4 wastes less on small M.
    # The last four use 24-25 accumulators (fewer loads per vpdpbusd): candidates for the
    # autotuner, which measures whether a shape gains from them.
    tiles=(Tile(NAME, 4, 4), Tile(NAME, 8, 3), Tile(NAME, 8, 2), Tile(NAME, 6, 3),
           Tile(NAME, 4, 2), Tile(NAME, 12, 2), Tile(NAME, 4, 6), Tile(NAME, 6, 4),
           Tile(NAME, 5, 5), Tile(NAME, 2, 8)),
    # A transformer's GEMMs over 2048 tokens, Zen 4, 2 threads, the heuristic's blocking, 6x4
    # against 4x4 (medians of interleaved calls): 1.14x at 2048 x 256 x 1024, 1.12x at x 768,
    # 1.00-1.02x at K = 1024 or N = 256; on the ten standard shapes 0.97-1.08x (M = 1 and 8:
    # 0.99 and 0.97). The heuristic takes it from driver.MANY_ROWS rows on (measured there on
    # both CPUs), and from 8 rows over a B of megabytes (driver.STREAMED_B_TALL_ROWS).
    many_rows_tile=Tile(NAME, 6, 4),
))
