"""AVX2 with 16-bit operands: vpmaddwd on int16 A and B, exact for every int8 value.

The alternative to avx2.py's sign trick. B is widened to int16 once, at prepare time, into its own
panel layout, per group of four k:

    [k4][2 halves][NR columns][2 int16]     half 0 holds k = 0, 1 of each column; half 1 k = 2, 3

so one ymm load gives 8 columns x 2 k as int16 pairs. A's four bytes of a k group are
sign-extended to int16 once per broadcast, as the pairs (a0, a1) and (a2, a3), each repeated in
every int32 lane. Then per 8 columns and four k: two vpmaddwd (a pair times a pair, summed into an
int32 lane) and two vpaddd. vpmaddwd computes its pair sum in 32 bits, so even
(-128 * -128) + (-128 * -128) = 32768 is exact: A and B may both hold the full range
[-128, 127], with no saturation and no correction term.

The price is B twice the size in the panels (and in cache) and two B loads per step instead of
one; the multiply count is the same as the sign trick's (vpmaddubsw + vpmaddwd).
This is a variant of the AVX2 level: it runs only when named (backend="cpu:avx2-i16" or
I8GEMM_CPU_PATH=avx2-i16); see README "How the CPU kernels work" for how it measures against
the sign trick.
"""

from llvmlite import ir

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import I16, I32, IsaOps, Tile, call_intrinsic, register_isa, vec

NAME = "avx2-i16"
BITS = 256
LANES = BITS // 32                 # int32 lanes: columns per vector
I16_PAIRS = vec(I16, 2 * LANES)    # one ymm of int16 (a pair per int32 lane)
B_K4_BYTES = 8                     # one column's four k as int16


def _pair_splat(builder, a_bytes, first: int):
    """The int16 pair (a[first], a[first + 1]) repeated in every int32 lane."""
    pick = ir.Constant(vec(I32, 2 * LANES), [first, first + 1] * LANES)
    pair_bytes = builder.shuffle_vector(a_bytes, ir.Constant(a_bytes.type, ir.Undefined), pick)
    return builder.sext(pair_bytes, I16_PAIRS)


def prep_a(builder, a):
    """A's k group as two broadcast int16 pairs: (a0, a1) and (a2, a3)."""
    return _pair_splat(builder, a, 0), _pair_splat(builder, a, 2)


def load_b(builder, b_k, j, nr, intp):
    """The two halves (k = 0, 1 and k = 2, 3) of the j-th 8 columns of the k4 group at b_k."""
    halves = []
    for half in range(2):
        offset = half * nr * 4 + j * LANES * 4      # bytes: NR columns x 2 int16 per half
        p = builder.gep(b_k, [ir.Constant(intp, offset)])
        halves.append(builder.load(builder.bitcast(p, I16_PAIRS.as_pointer()), align=2))
    return tuple(halves)


def step(builder, acc, _a, a_pairs, b_halves):
    lo = call_intrinsic(builder, "llvm.x86.avx2.pmadd.wd", vec(I32, LANES),
                        [a_pairs[0], b_halves[0]])
    hi = call_intrinsic(builder, "llvm.x86.avx2.pmadd.wd", vec(I32, LANES),
                        [a_pairs[1], b_halves[1]])
    # Sum the halves first: one add into the loop-carried accumulator per step.
    return builder.add(acc, builder.add(lo, hi))


register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=step, b_k4_bytes=B_K4_BYTES,
                          load_b=load_b))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVX2,
    a_encoding="s8",
    b_allows_min=True,
    b_layout="i16",
    preferred=False,
    # 16 ymm registers: MR x NV accumulators + 2 NV B halves + the two A pairs.
    tiles=(Tile(NAME, 4, 2), Tile(NAME, 2, 4), Tile(NAME, 3, 2), Tile(NAME, 6, 1),
           Tile(NAME, 8, 1)),
))
