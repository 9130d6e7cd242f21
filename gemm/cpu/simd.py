"""Explicit SIMD for numba: the register-blocked int8 micro-kernel, emitted through llvmlite.

The one kernel every CPU path shares is `tile_dot(tile, rows, a, a_off, a_stride, b, b_off, k4,
acc)`: `rows` (1..MR) rows of packed A times one packed panel of B (NR = NV x lanes columns), over
`k4` groups of four k, written to `acc` as int32 rows of NR. A `Tile` value names the instruction
set and the register block (MR rows x NV vectors); numba specialises on it, so each (ISA, MR, NV)
compiles to its own fully unrolled loop with the MR x NV accumulators held in registers.
`tile_dot_store` is the same loop for a whole panel with the driver's epilogue fused: the
accumulators go from registers through the zero-point corrections (and, for float output, the
scales, bias and relu) straight into C.

The ISA modules (avx2.py, avx512vnni.py, ...) describe only what differs between instruction
sets: the vector width and how one step multiplies a broadcast group of four A bytes with a
vector of B bytes into int32 lanes (`IsaOps`). LLVM picks the registers and schedules the loop.

Layouts (built by `gemm.cpu.driver` and `gemm.prepared`):
  packed B panel: [k4][NR columns][4 bytes]  -- four consecutive k of one column side by side, so
                  one vector holds (lanes) columns x 4 k, the operand order of vpdpbusd/vpmaddubsw.
                  A path may declare another panel layout (`IsaOps.b_k4_bytes`, `IsaOps.load_b`):
                  avx2_i16.py stores B as int16, [k4][2 halves][NR columns][2 int16].
  packed A:       rows of k4*4 values, stride `a_stride` (in values); the four bytes of a k group
                  are broadcast. A path may widen A (`IsaOps.a_k4_bytes`, `IsaOps.load_a`):
                  avx2_i16.py packs A as int16 and broadcasts it as two int16 pairs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import (
    NativeValue,
    intrinsic,
    models,
    overload,
    register_model,
    typeof_impl,
    unbox,
)

I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)


def vec(elem: ir.IntType, lanes: int) -> ir.VectorType:
    return ir.VectorType(elem, lanes)


def call_intrinsic(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list) -> ir.Value:
    """Call an LLVM intrinsic (x86 or generic) by name."""
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, args)


@dataclasses.dataclass(frozen=True)
class IsaOps:
    """What an instruction set contributes to the micro-kernel.

    bits:       vector register width (256 or 512).
    prep_a:     (builder, a_bytes) -> value computed once per broadcast A group (e.g. |a|, or a
                tuple of values); passed on to `step` as a_prepped.
    step:       (builder, acc_i32, a_bytes, a_prepped, b) -> new acc_i32; each int32 lane gains
                the dot product of the 4 A values with that lane's column's 4 B values.
    a_k4_bytes: bytes one row's group of four k takes in packed A (4 for int8 A).
    load_a:     (builder, p) -> the `a` operand of prep_a and step for the A group at p (i8*);
                None broadcasts its 4 bytes to every int32 lane (a vector of bytes).
    b_k4_bytes: bytes one column's group of four k takes in a packed panel (4 for int8 B).
    load_b:     (builder, b_k, j, nr, intp) -> the `b` operand of `step` for the j-th vector of
                columns, where b_k (i8*) points at the panel's current k4 group; None loads one
                vector of bytes from the [k4][NR][4 bytes] layout.
    """

    bits: int
    prep_a: Callable
    step: Callable
    a_k4_bytes: int = 4
    load_a: Callable | None = None
    b_k4_bytes: int = 4
    load_b: Callable | None = None

    @property
    def i32_lanes(self) -> int:
        return self.bits // 32

    @property
    def byte_type(self) -> ir.VectorType:
        return vec(I8, self.bits // 8)

    @property
    def acc_type(self) -> ir.VectorType:
        return vec(I32, self.i32_lanes)

    def emit_load_a(self, builder: ir.IRBuilder, p: ir.Value) -> ir.Value:
        """The `a` operand of prep_a and step for the A group at p (see load_a)."""
        if self.load_a is not None:
            return self.load_a(builder, p)
        a32 = builder.load(builder.bitcast(p, I32.as_pointer()), align=1)
        return builder.bitcast(_splat(builder, a32, self.acc_type), self.byte_type)

    def emit_load_b(self, builder: ir.IRBuilder, b_k: ir.Value, j: int, nr: int,
                    intp: ir.IntType) -> ir.Value:
        """The `b` operand of `step` for the j-th vector of columns (see load_b)."""
        if self.load_b is not None:
            return self.load_b(builder, b_k, j, nr, intp)
        p = builder.gep(b_k, [ir.Constant(intp, j * self.i32_lanes * 4)])
        return builder.load(builder.bitcast(p, self.byte_type.as_pointer()), align=1)


ISA_OPS: dict[str, IsaOps] = {}
# Int32 lanes per register of the portable path: it has no IsaOps, only a tile width.
GENERIC_LANES = 8


def register_isa(name: str, ops: IsaOps) -> None:
    ISA_OPS[name] = ops


# ---------------------------------------------------------------------------------------------
# The Tile token: a Python value whose numba type carries (isa, mr, nv) as compile-time constants.


@dataclasses.dataclass(frozen=True)
class Tile:
    isa: str
    mr: int
    nv: int

    @property
    def lanes(self) -> int:
        if self.isa == "generic":
            return GENERIC_LANES
        return ISA_OPS[self.isa].i32_lanes

    # Cached (in the instance's __dict__, which the frozen dataclass's equality and hash ignore):
    # every gemm_i8 call asks.
    @functools.cached_property
    def nr(self) -> int:
        """Columns of B per packed panel."""
        return self.nv * self.lanes

    @property
    def b_k4_bytes(self) -> int:
        """Bytes one column's group of four k takes in a packed panel."""
        if self.isa == "generic":
            return 4
        return ISA_OPS[self.isa].b_k4_bytes


class TileType(types.Type):
    def __init__(self, isa: str, mr: int, nv: int, nr: int, b_k4_bytes: int):
        self.isa, self.mr, self.nv, self.nr, self.b_k4_bytes = isa, mr, nv, nr, b_k4_bytes
        super().__init__(name=f"Tile({isa},{mr}x{nv},nr={nr})")


@typeof_impl.register(Tile)
def _typeof_tile(val, c):
    return TileType(val.isa, val.mr, val.nv, val.nr, val.b_k4_bytes)


# A tile carries no run-time data; its type is all that matters.
register_model(TileType)(models.OpaqueModel)


@unbox(TileType)
def _unbox_tile(typ, obj, c):
    return NativeValue(c.context.get_dummy_value())


def tile_mr(tile):
    """MR of a tile, as a compile-time constant inside jitted code."""
    return tile.mr


def tile_nr(tile):
    """NR (columns per panel) of a tile, as a compile-time constant inside jitted code."""
    return tile.nr


def tile_panel_bytes(tile, k4):
    """Bytes of one packed panel of B over k4 groups of four k, inside jitted code."""
    return k4 * tile.nr * tile.b_k4_bytes


@overload(tile_mr, jit_options={"cache": True})
def _ov_tile_mr(tile):
    mr = tile.mr
    return lambda tile: mr


@overload(tile_nr, jit_options={"cache": True})
def _ov_tile_nr(tile):
    nr = tile.nr
    return lambda tile: nr


@overload(tile_panel_bytes, jit_options={"cache": True})
def _ov_tile_panel_bytes(tile, k4):
    column_bytes = tile.nr * tile.b_k4_bytes
    return lambda tile, k4: k4 * column_bytes


# ---------------------------------------------------------------------------------------------
# The micro-kernel.


def _emit_rows(builder, ops: IsaOps, rows: int, nv: int, nr: int, a_base, a_stride, b_base, k4,
               prefetch=None):
    """Emit the k loop for exactly `rows` rows; accumulators are loop-carried SSA values.
    Returns the final accumulators, [row][vector], for the code after the loop.

    prefetch (intp, or None for no such code): where non-zero, each step also prefetches into
    L2 the cache lines `prefetch` bytes past the B it reads (see tile_dot_store)."""
    acc_t = ops.acc_type
    intp = k4.type
    pre = builder.block
    row_ptrs = [builder.gep(a_base, [builder.mul(ir.Constant(intp, r), a_stride)])
                for r in range(rows)]
    loop = builder.append_basic_block(f"tile.r{rows}.loop")
    done = builder.append_basic_block(f"tile.r{rows}.done")
    builder.branch(loop)

    builder.position_at_end(loop)
    k = builder.phi(intp, name="k")
    k.add_incoming(ir.Constant(intp, 0), pre)
    accs = [[builder.phi(acc_t) for _ in range(nv)] for _ in range(rows)]
    for row in accs:
        for phi in row:
            phi.add_incoming(ir.Constant(acc_t, None), pre)

    b_k = builder.gep(b_base, [builder.mul(k, ir.Constant(intp, nr * ops.b_k4_bytes))])
    b_vecs = [ops.emit_load_b(builder, b_k, j, nr, intp) for j in range(nv)]
    if prefetch is not None:
        # The same test in every step of a call: a branch the CPU predicts.
        with builder.if_then(builder.icmp_signed("!=", prefetch, ir.Constant(intp, 0))):
            b_ahead = builder.gep(b_k, [prefetch])
            for line in range(0, nr * ops.b_k4_bytes, CACHE_LINE):
                call_intrinsic(builder, "llvm.prefetch.p0", ir.VoidType(), [
                    builder.gep(b_ahead, [ir.Constant(intp, line)]), ir.Constant(I32, 0),
                    ir.Constant(I32, PREFETCH_LOCALITY), ir.Constant(I32, 1)])
    k_bytes = builder.mul(k, ir.Constant(intp, ops.a_k4_bytes))
    new_accs = []
    for r in range(rows):
        a_bytes = ops.emit_load_a(builder, builder.gep(row_ptrs[r], [k_bytes]))
        a_prep = ops.prep_a(builder, a_bytes)
        new_accs.append([ops.step(builder, accs[r][j], a_bytes, a_prep, b_vecs[j])
                         for j in range(nv)])

    k_next = builder.add(k, ir.Constant(intp, 1))
    latch = builder.block
    builder.cbranch(builder.icmp_signed("<", k_next, k4), loop, done)
    k.add_incoming(k_next, latch)
    for r in range(rows):
        for j in range(nv):
            accs[r][j].add_incoming(new_accs[r][j], latch)

    builder.position_at_end(done)
    return new_accs


# Bytes per cache line, and llvm.prefetch's locality for B ahead: 2, into L2 (prefetcht1). Into L1
# (3) was slower in a first comparison (16 x 512 x 32000, Zen 4: 1.5 ms against 1.2; one noisy
# run), as if the next panel pushed the one in use out of L1 (32-48 KB).
CACHE_LINE = 64
PREFETCH_LOCALITY = 2


def _store_vectors(builder, values, row_ptr, stride, lanes: int, intp, streaming=False):
    """values[r][j] -> row_ptr[r * stride + j * lanes ...]: unaligned vector stores, or with
    `streaming` non-temporal ones, which need every address aligned to the vector's size."""
    for r, row in enumerate(values):
        for j, v in enumerate(row):
            offset = builder.add(builder.mul(ir.Constant(intp, r), stride),
                                 ir.Constant(intp, j * lanes))
            p = builder.bitcast(builder.gep(row_ptr, [offset]), v.type.as_pointer())
            if streaming:
                store = builder.store(v, p, align=4 * lanes)  # 32-bit lanes
                store.set_metadata("nontemporal",
                                   builder.module.add_metadata([ir.Constant(I32, 1)]))
            else:
                builder.store(v, p, align=4)


def _load_vectors(builder, ptr, vec_t: ir.VectorType, nv: int, intp) -> list:
    """nv consecutive vectors from ptr (unaligned)."""
    lanes = vec_t.count
    return [builder.load(builder.bitcast(builder.gep(ptr, [ir.Constant(intp, j * lanes)]),
                                         vec_t.as_pointer()), align=4)
            for j in range(nv)]


def _splat(builder, value, vec_t: ir.VectorType):
    """`value` in every lane of a vec_t."""
    lanes = vec_t.count
    first = builder.insert_element(ir.Constant(vec_t, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(first, ir.Constant(vec_t, ir.Undefined),
                                  ir.Constant(vec(I32, lanes), [0] * lanes))


def _where(builder, cond, values: list, transform) -> list:
    """transform(values) where cond holds at run time, else values: one branch, merged by phis."""
    before = builder.block
    then = builder.append_basic_block("epi.then")
    merge = builder.append_basic_block("epi.merge")
    builder.cbranch(cond, then, merge)
    builder.position_at_end(then)
    changed = transform(values)
    then_end = builder.block
    builder.branch(merge)
    builder.position_at_end(merge)
    merged = []
    for old, new in zip(values, changed, strict=True):
        phi = builder.phi(old.type)
        phi.add_incoming(old, before)
        phi.add_incoming(new, then_end)
        merged.append(phi)
    return merged


@dataclasses.dataclass
class _EpilogueArgs:
    """IR values the fused epilogue reads; pointers already offset to the tile's row and column.
    The float fields are None for int32 output."""
    out: ir.Value          # i32* or float*, C[i0, j0]
    out_stride: ir.Value   # elements between rows of C
    rowsum: ir.Value       # i32*, rowsum[i0]
    colsum: ir.Value       # i32*, colsum[j0]
    col_mult: ir.Value     # i32: -(shift + A's zero point)
    kza: ir.Value          # i32: K x A's zero point
    zb: ir.Value           # i32*, zb[j0] (read only where has_zb)
    has_zb: ir.Value       # i1
    inv_qa: ir.Value | None = None    # float
    inv_qb: ir.Value | None = None    # float*, inv_qb[j0]
    bias: ir.Value | None = None      # float*, bias[j0] (read only where has_bias)
    has_bias: ir.Value | None = None  # i1
    relu: ir.Value | None = None      # i1
    streaming: ir.Value | None = None  # i1: non-temporal stores into C (see tile_dot_store)


def _emit_epilogue(builder, ops: IsaOps, accs: list, nv: int, e: _EpilogueArgs, intp):
    """The driver's store_tile, on the accumulators still in registers, for whole panels:
        t = acc + col_mult * colsum_j - zb_j * (rowsum_i - kza)   (int32, wrapping)
    then int32 C = t, or float32 C = float32(t) * (inv_qa * inv_qb_j) [+ bias_j] [max 0], with
    the same operations in the same order (no fused multiply-add), so every bit agrees."""
    acc_t = ops.acc_type
    lanes = ops.i32_lanes
    rows = len(accs)
    col_mult = _splat(builder, e.col_mult, acc_t)
    colsum = _load_vectors(builder, e.colsum, acc_t, nv, intp)
    colterm = [builder.mul(cs, col_mult) for cs in colsum]
    flat = [builder.add(accs[r][j], colterm[j]) for r in range(rows) for j in range(nv)]

    def minus_zb_rowsum(values):
        zb = _load_vectors(builder, e.zb, acc_t, nv, intp)
        out = []
        for r in range(rows):
            rs = builder.load(builder.gep(e.rowsum, [ir.Constant(intp, r)]))
            rs = _splat(builder, builder.sub(rs, e.kza), acc_t)
            out += [builder.sub(values[r * nv + j], builder.mul(zb[j], rs)) for j in range(nv)]
        return out

    flat = _where(builder, e.has_zb, flat, minus_zb_rowsum)

    if e.inv_qa is not None:
        f32_t = vec(ir.FloatType(), lanes)
        qa = _splat(builder, e.inv_qa, f32_t)
        scale = [builder.fmul(qa, q) for q in _load_vectors(builder, e.inv_qb, f32_t, nv, intp)]
        flat = [builder.fmul(builder.sitofp(v, f32_t), scale[i % nv]) for i, v in enumerate(flat)]

        def plus_bias(values):
            bias = _load_vectors(builder, e.bias, f32_t, nv, intp)
            return [builder.fadd(v, bias[i % nv]) for i, v in enumerate(values)]

        flat = _where(builder, e.has_bias, flat, plus_bias)
        zero = ir.Constant(f32_t, None)
        # numba's max(x, 0.0): 0.0 where 0.0 > x, else x (so -0.0 and NaN stay as they are).
        flat = _where(builder, e.relu, flat, lambda values: [
            builder.select(builder.fcmp_ordered(">", zero, v), zero, v) for v in values])

    rows_of_c = [flat[r * nv:(r + 1) * nv] for r in range(rows)]
    with builder.if_else(e.streaming) as (streaming, cached):
        with streaming:
            _store_vectors(builder, rows_of_c, e.out, e.out_stride, lanes, intp, streaming=True)
        with cached:
            _store_vectors(builder, rows_of_c, e.out, e.out_stride, lanes, intp)


def _emit_tile(context, builder, tile: TileType, sa, args, finish, prefetch=None):
    """The micro-kernel's body: a switch on `rows` (1..MR) to a k loop unrolled for that many
    rows, each followed by finish(accs) on its accumulators. `args` and their types `sa` begin
    (tile, rows, a, a_off, a_stride, b, b_off, k4); prefetch: see _emit_rows."""
    ops = ISA_OPS[tile.isa]
    _, rows_v, a_arr, a_off_v, a_stride_v, b_arr, b_off_v, k4_v = args[:8]
    intp = context.get_value_type(types.intp)

    def as_intp(v, ty):
        return context.cast(builder, v, ty, types.intp)

    a_data = context.make_array(sa[2])(context, builder, a_arr).data
    b_data = context.make_array(sa[5])(context, builder, b_arr).data
    # a_off and a_stride count elements of packed A (bytes, or int16 for a widened A).
    a_item = context.get_abi_sizeof(context.get_data_type(sa[2].dtype))
    a_off_i, stride = as_intp(a_off_v, sa[3]), as_intp(a_stride_v, sa[4])
    if a_item != 1:
        a_off_i = builder.mul(a_off_i, ir.Constant(intp, a_item))
        stride = builder.mul(stride, ir.Constant(intp, a_item))
    a_base = builder.gep(builder.bitcast(a_data, I8.as_pointer()), [a_off_i])
    b_base = builder.gep(builder.bitcast(b_data, I8.as_pointer()), [as_intp(b_off_v, sa[6])])
    k4_i = as_intp(k4_v, sa[7])

    end = builder.append_basic_block("tile.end")
    switch = builder.switch(as_intp(rows_v, sa[1]), end)
    for r in range(1, tile.mr + 1):
        bb = builder.append_basic_block(f"tile.r{r}")
        switch.add_case(ir.Constant(intp, r), bb)
        builder.position_at_end(bb)
        finish(_emit_rows(builder, ops, r, tile.nv, tile.nr, a_base, stride, b_base, k4_i,
                          prefetch))
        builder.branch(end)
    builder.position_at_end(end)


def _simd_tile(tile) -> bool:
    return isinstance(tile, TileType) and tile.isa in ISA_OPS


@intrinsic
def _tile_dot_simd(typingctx, tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
    """SIMD tile: see the module docstring. Requires 1 <= rows <= MR and k4 >= 1."""
    if not _simd_tile(tile):
        return None
    sig = types.void(tile, rows, a, a_off, a_stride, b, b_off, k4, acc)

    def codegen(context, builder, signature, args):
        ops = ISA_OPS[tile.isa]
        intp = context.get_value_type(types.intp)
        acc_data = context.make_array(signature.args[8])(context, builder, args[8]).data
        acc_ptr = builder.bitcast(acc_data, I32.as_pointer())
        _emit_tile(context, builder, tile, signature.args, args, lambda accs: _store_vectors(
            builder, accs, acc_ptr, ir.Constant(intp, tile.nr), ops.i32_lanes, intp))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile_dot_store_simd(typingctx, tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0,
                         rowsum, colsum, col_mult, kza, zb, has_zb, inv_qa, inv_qb, bias,
                         has_bias, relu, streaming, prefetch):
    """SIMD tile with the epilogue fused: see tile_dot_store."""
    if not _simd_tile(tile):
        return None
    float_out = out.dtype == types.float32
    sig = types.void(tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0, rowsum, colsum,
                     col_mult, kza, zb, has_zb, inv_qa, inv_qb, bias, has_bias, relu, streaming,
                     prefetch)

    def codegen(context, builder, signature, args):
        ops = ISA_OPS[tile.isa]
        sa = signature.args
        intp = context.get_value_type(types.intp)
        i0_v = context.cast(builder, args[9], sa[9], types.intp)
        j0_v = context.cast(builder, args[10], sa[10], types.intp)

        def data(index, elem_type, offset):
            arr = context.make_array(sa[index])(context, builder, args[index])
            return builder.gep(builder.bitcast(arr.data, elem_type.as_pointer()), [offset])

        out_arr = context.make_array(sa[8])(context, builder, args[8])
        item = 4  # int32 or float32
        out_stride = builder.sdiv(builder.extract_value(out_arr.strides, 0),
                                  ir.Constant(intp, item))
        out_elem = ir.FloatType() if float_out else I32
        out_first = builder.add(builder.mul(i0_v, out_stride), j0_v)
        epilogue = _EpilogueArgs(
            out=builder.gep(builder.bitcast(out_arr.data, out_elem.as_pointer()), [out_first]),
            out_stride=out_stride,
            rowsum=data(11, I32, i0_v),
            colsum=data(12, I32, j0_v),
            col_mult=context.cast(builder, args[13], sa[13], types.int32),
            kza=context.cast(builder, args[14], sa[14], types.int32),
            zb=data(15, I32, j0_v),
            has_zb=args[16],
            streaming=args[22])
        if float_out:
            epilogue.inv_qa = context.cast(builder, args[17], sa[17], types.float32)
            epilogue.inv_qb = data(18, ir.FloatType(), j0_v)
            epilogue.bias = data(19, ir.FloatType(), j0_v)
            epilogue.has_bias = args[20]
            epilogue.relu = args[21]
        _emit_tile(context, builder, tile, sa, args, lambda accs: _emit_epilogue(
            builder, ops, accs, tile.nv, epilogue, intp),
            prefetch=context.cast(builder, args[23], sa[23], types.intp))
        return context.get_dummy_value()

    return sig, codegen


def tile_dot(tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
    """acc[r*NR + c] = sum_k A[r, k] * B[k, c] for one packed panel; see the module docstring."""
    raise NotImplementedError("tile_dot runs only inside numba-jitted code")


@overload(tile_dot, jit_options={"cache": True})
def _ov_tile_dot(tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
    if not isinstance(tile, TileType):
        return None
    if tile.isa != "generic":
        def simd_impl(tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
            _tile_dot_simd(tile, rows, a, a_off, a_stride, b, b_off, k4, acc)
        return simd_impl

    nr = tile.nr

    # The portable path: plain loops over the same layouts, left to LLVM's auto-vectoriser.
    def generic_impl(tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
        for x in range(rows * nr):
            acc[x] = 0
        for r in range(rows):
            row = a_off + r * a_stride
            for k in range(k4):
                bk = b_off + k * nr * 4
                for q in range(4):
                    av = np.int32(a[row + 4 * k + q])
                    for c in range(nr):
                        acc[r * nr + c] += av * np.int32(b[bk + 4 * c + q])

    return generic_impl


def has_fused_store(tile_type) -> bool:
    """Whether tile_dot_store exists for tiles of this numba type (used while typing)."""
    return _simd_tile(tile_type)


def tile_dot_store(tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0, rowsum, cols,
                   zb, inv_qa, inv_qb, bias, relu, streaming, prefetch):
    """tile_dot for a whole panel (NR columns of C from column j0), with the driver's epilogue
    (see gemm.cpu.driver.store_tile) applied to the accumulators in registers and the result
    stored straight into C[i0:i0+rows, j0:j0+NR]: no round trip through a tile buffer.
    SIMD tiles only (has_fused_store). cols = (colsum, col_mult, kza): see the driver's
    docstring.

    streaming: store C with non-temporal stores, which write whole cache lines to memory
    without first reading them into the cache. The caller guarantees that C's start and row
    stride are multiples of the vector size, and issues store_fence() before C is read.

    prefetch: 0, or a distance in bytes: each step then also asks for the B that far past the
    B it reads to be brought into L2 (the driver gives the distance to the next panel, so that
    panel arrives from memory while this one is multiplied)."""
    raise NotImplementedError("tile_dot_store runs only inside numba-jitted code")


@overload(tile_dot_store, jit_options={"cache": True})
def _ov_tile_dot_store(tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0, rowsum, cols,
                       zb, inv_qa, inv_qb, bias, relu, streaming, prefetch):
    if not _simd_tile(tile):
        return None

    def impl(tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0, rowsum, cols, zb,
             inv_qa, inv_qb, bias, relu, streaming, prefetch):
        colsum, col_mult, kza = cols
        _tile_dot_store_simd(tile, rows, a, a_off, a_stride, b, b_off, k4, out, i0, j0, rowsum,
                             colsum, col_mult, kza, zb, zb.shape[0] > 0, inv_qa, inv_qb, bias,
                             bias.shape[0] > 0, relu, streaming, prefetch)
    return impl


@intrinsic
def store_fence(typingctx):
    """A full memory fence: non-temporal stores before it are visible to every thread after it
    (they are weakly ordered, and a plain release fence does not order them on x86)."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen
