"""AVX-512BW path: the AVX2 sign trick on 512-bit registers.

AVX-512 has no vpsignb, so sign(b, a) becomes a masked negation: the sign bits of a give a mask
(vpmovb2m) and b is subtracted from zero under it. Everything else -- |a|, vpmaddubsw, vpmaddwd,
the exactness argument and the ban on -128 in B -- is as in avx2.py.
"""

from llvmlite import ir

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import I8, I16, I32, IsaOps, Tile, call_intrinsic, register_isa, vec

NAME = "avx512bw"
BITS = 512
ONES_I16 = ir.Constant(vec(I16, BITS // 16), [1] * (BITS // 16))
ZERO_I8 = ir.Constant(vec(I8, BITS // 8), None)


def prep_a(builder, a):
    return call_intrinsic(builder, "llvm.abs.v64i8", vec(I8, 64), [a, ir.Constant(ir.IntType(1), 0)])


def step(builder, acc, a, a_abs, b):
    negative = builder.icmp_signed("<", a, ZERO_I8)
    signed_b = builder.select(negative, builder.sub(ZERO_I8, b), b)
    pairs = call_intrinsic(builder, "llvm.x86.avx512.pmaddubs.w.512", vec(I16, 32),
                           [a_abs, signed_b])
    quads = call_intrinsic(builder, "llvm.x86.avx512.pmaddw.d.512", vec(I32, 16),
                           [pairs, ONES_I16])
    return builder.add(acc, quads)


register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=step))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVX512BW,
    a_encoding="s8",
    b_allows_min=False,
    tiles=(Tile(NAME, 8, 2), Tile(NAME, 6, 3), Tile(NAME, 4, 4), Tile(NAME, 4, 2)),
))
