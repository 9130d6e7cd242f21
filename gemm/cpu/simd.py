"""Explicit SIMD for numba: the register-blocked int8 micro-kernel, emitted through llvmlite.

The one kernel every CPU path shares is `tile_dot(tile, rows, a, a_off, a_stride, b, b_off, k4,
acc)`: `rows` (1..MR) rows of packed A times one packed panel of B (NR = NV x lanes columns), over
`k4` groups of four k, written to `acc` as int32 rows of NR. A `Tile` value names the instruction
set and the register block (MR rows x NV vectors); numba specialises on it, so each (ISA, MR, NV)
compiles to its own fully unrolled loop with the MR x NV accumulators held in registers.

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
        lanes = self.i32_lanes
        splat = builder.shuffle_vector(
            builder.insert_element(ir.Constant(self.acc_type, ir.Undefined), a32,
                                   ir.Constant(I32, 0)),
            ir.Constant(self.acc_type, ir.Undefined),
            ir.Constant(vec(I32, lanes), [0] * lanes),
        )
        return builder.bitcast(splat, self.byte_type)

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

    @property
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
               acc_ptr):
    """Emit the k loop for exactly `rows` rows; accumulators are loop-carried SSA values."""
    acc_t = ops.acc_type
    lanes = ops.i32_lanes
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
    for r in range(rows):
        for j in range(nv):
            p = builder.gep(acc_ptr, [ir.Constant(intp, r * nr + j * lanes)])
            builder.store(new_accs[r][j], builder.bitcast(p, acc_t.as_pointer()), align=4)


@intrinsic
def _tile_dot_simd(typingctx, tile, rows, a, a_off, a_stride, b, b_off, k4, acc):
    """SIMD tile: see the module docstring. Requires 1 <= rows <= MR and k4 >= 1."""
    if not isinstance(tile, TileType) or tile.isa not in ISA_OPS:
        return None
    isa, mr, nv, nr = tile.isa, tile.mr, tile.nv, tile.nr
    sig = types.void(tile, rows, a, a_off, a_stride, b, b_off, k4, acc)

    def codegen(context, builder, signature, args):
        ops = ISA_OPS[isa]
        _, rows_v, a_arr, a_off_v, a_stride_v, b_arr, b_off_v, k4_v, acc_arr = args
        sa = signature.args
        intp = context.get_value_type(types.intp)

        def as_intp(v, ty):
            return context.cast(builder, v, ty, types.intp)

        a_data = context.make_array(sa[2])(context, builder, a_arr).data
        b_data = context.make_array(sa[5])(context, builder, b_arr).data
        acc_data = context.make_array(sa[8])(context, builder, acc_arr).data
        # a_off and a_stride count elements of packed A (bytes, or int16 for a widened A).
        a_item = context.get_abi_sizeof(context.get_data_type(sa[2].dtype))
        a_off_i, stride = as_intp(a_off_v, sa[3]), as_intp(a_stride_v, sa[4])
        if a_item != 1:
            a_off_i = builder.mul(a_off_i, ir.Constant(intp, a_item))
            stride = builder.mul(stride, ir.Constant(intp, a_item))
        a_base = builder.gep(builder.bitcast(a_data, I8.as_pointer()), [a_off_i])
        b_base = builder.gep(builder.bitcast(b_data, I8.as_pointer()), [as_intp(b_off_v, sa[6])])
        k4_i = as_intp(k4_v, sa[7])
        acc_ptr = builder.bitcast(acc_data, I32.as_pointer())
        rows_i = as_intp(rows_v, sa[1])

        end = builder.append_basic_block("tile.end")
        switch = builder.switch(rows_i, end)
        for r in range(1, mr + 1):
            bb = builder.append_basic_block(f"tile.r{r}")
            switch.add_case(ir.Constant(intp, r), bb)
            builder.position_at_end(bb)
            _emit_rows(builder, ops, r, nv, nr, a_base, stride, b_base, k4_i, acc_ptr)
            builder.branch(end)
        builder.position_at_end(end)
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
