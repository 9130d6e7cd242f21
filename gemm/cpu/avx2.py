"""AVX2 path: vpmaddubsw + vpmaddwd with the sign trick, exact for A in [-128, 127].

A variant of the AVX2 level, run only when named (backend="cpu:avx2"): the level's default is
avx2_i16.py (cpu:avx2-i16), which measured faster on most shapes and multiplies -128 in B too.
This one keeps B as int8 (half the panel bytes), which wins where B's traffic dominates (M = 1).

vpmaddubsw multiplies unsigned by signed bytes and adds adjacent pairs into int16 *with
saturation*. Feeding it |a| (unsigned, <= 128) and sign(b, a) (|.| <= 127) keeps every pair sum
within 2 * 128 * 127 = 32512 < 32767, so nothing saturates and the result is exact -- as long as
B has no -128 (its negation would wrap); such a B is rejected when it is packed for this path.
vpmaddwd against ones then adds the int16 pairs into int32 lanes: 4 products per lane.
"""

from llvmlite import ir

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import I8, I16, I32, IsaOps, Tile, call_intrinsic, register_isa, vec

NAME = "avx2"
BITS = 256
ONES_I16 = ir.Constant(vec(I16, BITS // 16), [1] * (BITS // 16))


def prep_a(builder, a):
    """|a| once per broadcast A group (llvm.abs lowers to vpabsb)."""
    return call_intrinsic(builder, "llvm.abs.v32i8", vec(I8, 32), [a, ir.Constant(ir.IntType(1), 0)])


def step(builder, acc, a, a_abs, b):
    signed_b = call_intrinsic(builder, "llvm.x86.avx2.psign.b", vec(I8, 32), [b, a])
    pairs = call_intrinsic(builder, "llvm.x86.avx2.pmadd.ub.sw", vec(I16, 16), [a_abs, signed_b])
    quads = call_intrinsic(builder, "llvm.x86.avx2.pmadd.wd", vec(I32, 8), [pairs, ONES_I16])
    return builder.add(acc, quads)


register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=step))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVX2,
    a_encoding="s8",
    b_allows_min=False,
    preferred=False,
    # 16 ymm registers: MR x NV accumulators + NV B vectors + |a|, a, ones and temporaries.
    tiles=(Tile(NAME, 4, 2), Tile(NAME, 2, 4), Tile(NAME, 3, 2), Tile(NAME, 6, 1)),
))
