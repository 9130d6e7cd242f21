"""AVX2 with 16-bit operands: vpmaddwd on int16 A and B, exact for every int8 value.

The alternative to avx2.py's sign trick. Both operands are widened to int16 once: B at prepare
time, into its own panel layout, per group of four k

    [k4][2 halves][NR columns][2 int16]     half 0 holds k = 0, 1 of each column; half 1 k = 2, 3

so one ymm load gives 8 columns x 2 k as int16 pairs; and A when it is packed for the call (the
"s16" encoding: rows of int16, int8 and uint8 values alike), so each of A's k pairs (a0, a1) and
(a2, a3) reaches every int32 lane with a plain vpbroadcastd from memory. Then per 8 columns and
four k: two vpmaddwd (a pair times a pair, summed into an int32 lane) and two vpaddd.
vpmaddwd computes its pair sum in 32 bits, so even (-128 * -128) + (-128 * -128) = 32768 (or
2 * 255 * -128 for uint8 A) is exact: A and B may hold any int8 value, with no saturation and no
correction term.

Widening A in the packing pass rather than in the micro-kernel (sign-extending the broadcast
bytes costs ~4 more instructions per row and k group) measured 1.2-1.4x faster on Zen 4. The
price of 16-bit operands is B twice the size in its panels (and in cache) and two B loads per
step instead of one. The multiply count equals the sign trick's (vpmaddubsw + vpmaddwd), while
its vpabsb/vpsignb work disappears. Measured 1.2x the sign trick's speed (geometric mean over the
standard shapes, one thread, code built for AVX2 alone), 0.84x at M = 1 where B's traffic
dominates; so this is the AVX2 level's default, and the sign trick stays available by name
(cpu:avx2). README "How the CPU kernels work" has the figures.
"""

from llvmlite import ir

from dispatch import IsaLevel

from .driver import CpuPath, register_path
from .simd import I16, I32, IsaOps, Tile, call_intrinsic, register_isa, vec

NAME = "avx2-i16"
BITS = 256
LANES = BITS // 32                 # int32 lanes: columns per vector
I16_PAIRS = vec(I16, 2 * LANES)    # one ymm of int16 (a pair per int32 lane)
K4_BYTES = 8                       # four k as int16, in A's rows and B's panels


def load_a(builder, p):
    """A's k group at p (4 int16) as two broadcast pairs, (a0, a1) and (a2, a3)."""
    words = builder.bitcast(p, I32.as_pointer())    # one int32 word = one int16 pair
    pairs = []
    for half in range(2):
        word = builder.load(builder.gep(words, [ir.Constant(I32, half)]), align=2)
        lane0 = builder.insert_element(ir.Constant(vec(I32, LANES), ir.Undefined), word,
                                       ir.Constant(I32, 0))
        splat = builder.shuffle_vector(lane0, ir.Constant(vec(I32, LANES), ir.Undefined),
                                       ir.Constant(vec(I32, LANES), [0] * LANES))
        pairs.append(builder.bitcast(splat, I16_PAIRS))
    return tuple(pairs)


def prep_a(builder, a_pairs):
    return a_pairs


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


register_isa(NAME, IsaOps(bits=BITS, prep_a=prep_a, step=step, a_k4_bytes=K4_BYTES,
                          load_a=load_a, b_k4_bytes=K4_BYTES, load_b=load_b))

PATH = register_path(CpuPath(
    name=NAME,
    level=IsaLevel.AVX2,
    a_encoding="s16",
    b_allows_min=True,
    b_layout="i16",
    # 16 ymm registers: MR x NV accumulators + 2 NV B halves + the two A pairs. 4x2 fits (14)
    # and measured best with 16 registers; 3x4 and 2x4 spill there but win where LLVM may use
    # AVX-512VL's 32 (on an AVX-512 host, e.g. for a forced cpu:avx2-i16).
    tiles=(Tile(NAME, 4, 2), Tile(NAME, 2, 3), Tile(NAME, 5, 2), Tile(NAME, 3, 4),
           Tile(NAME, 2, 4)),
))
