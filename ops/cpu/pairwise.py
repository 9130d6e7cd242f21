"""numpy's float32 sum of a contiguous row, in numpy's order of additions (bit for bit).

np.add.reduce over a contiguous float32 row (np.sum(x, axis=-1) on a C-contiguous array) adds
in numpy's pairwise_sum order: a block of at most 128 values in eight running sums (lane j takes
values j, j + 8, j + 16, ...), combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then
the last n % 8 one by one; a longer row split in two at n // 2 rounded down to a multiple of 8,
each half summed so, and the two sums added. onnx's reference evaluator sums this way (softmax's
denominator, layer norm's mean and variance), so kernels that must reproduce it bit for bit use
this.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

PAIRWISE_BLOCK = 128   # numpy's PW_BLOCKSIZE
_ZERO = np.float32(0.0)


def _combine_lanes(builder, sums):
    """numpy's combination of its eight running sums (the lanes of `sums`, an 8-wide vector):
    ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)). Code generation, for the intrinsics."""
    r = [builder.extract_element(sums, ir.Constant(ir.IntType(32), i)) for i in range(8)]
    return builder.fadd(builder.fadd(builder.fadd(r[0], r[1]), builder.fadd(r[2], r[3])),
                        builder.fadd(builder.fadd(r[4], r[5]), builder.fadd(r[6], r[7])))


@intrinsic
def _eight_running_sums(typingctx, x, lo, groups):
    """numpy's eight running sums over x[lo:lo + 8 * groups] (groups >= 1), combined as numpy
    combines them: ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)). The sums are the lanes of one
    8-wide vector, one vector addition per eight values, each lane still adding its values in
    numpy's order. (Written as eight scalar sums, LLVM kept them scalar: 0.4 ns per value.)"""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and x.dtype == types.float32 and isinstance(lo, types.Integer)
            and isinstance(groups, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        lanes = ir.VectorType(f32, 8)
        i64 = ir.IntType(64)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        start = context.cast(builder, args[1], sig.args[1], types.int64)
        count = context.cast(builder, args[2], sig.args[2], types.int64)
        first = builder.bitcast(builder.gep(data, [start]), lanes.as_pointer())
        acc = cgutils.alloca_once(builder, lanes)
        builder.store(builder.load(first, align=4), acc)
        with cgutils.for_range(builder, builder.sub(count, ir.Constant(i64, 1))) as loop:
            k = builder.add(loop.index, ir.Constant(i64, 1))
            group = builder.load(builder.gep(first, [k]), align=4)
            builder.store(builder.fadd(builder.load(acc), group), acc)
        return _combine_lanes(builder, builder.load(acc))

    return types.float32(x, lo, groups), codegen


@intrinsic
def _eight_running_sums_of_rows(typingctx, x, row, lo, groups):
    """_eight_running_sums over x[row + i, lo:lo + 8 * groups] for i < ROWS_AT_ONCE (groups >= 1; x
    C-contiguous), the rows' additions interleaved: each row's sums are one chain of
    dependent vector additions, and a 128-value row alone waits on the adder's latency (~45 ns a
    row on Zen 4); four chains side by side keep it busy."""
    if not (isinstance(x, types.Array) and x.ndim == 2 and x.dtype == types.float32
            and x.layout == "C" and isinstance(row, types.Integer)
            and isinstance(lo, types.Integer) and isinstance(groups, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        lanes = ir.VectorType(f32, 8)
        i64 = ir.IntType(64)
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        row_stride = cgutils.unpack_tuple(builder, arr.strides, 2)[0]
        first_row = context.cast(builder, args[1], sig.args[1], types.int64)
        column = context.cast(builder, args[2], sig.args[2], types.int64)
        base = builder.ptrtoint(builder.gep(arr.data, [column]), i64)
        count = context.cast(builder, args[3], sig.args[3], types.int64)
        firsts, accs = [], []
        for i in range(ROWS_AT_ONCE):
            r = builder.add(first_row, ir.Constant(i64, i))
            address = builder.add(base, builder.mul(r, row_stride))
            first = builder.inttoptr(address, lanes.as_pointer())
            acc = cgutils.alloca_once(builder, lanes)
            builder.store(builder.load(first, align=4), acc)
            firsts.append(first)
            accs.append(acc)
        with cgutils.for_range(builder, builder.sub(count, ir.Constant(i64, 1))) as loop:
            k = builder.add(loop.index, ir.Constant(i64, 1))
            for first, acc in zip(firsts, accs, strict=True):
                group = builder.load(builder.gep(first, [k]), align=4)
                builder.store(builder.fadd(builder.load(acc), group), acc)
        results = [_combine_lanes(builder, builder.load(acc)) for acc in accs]
        return context.make_tuple(builder, sig.return_type, results)

    return types.UniTuple(types.float32, ROWS_AT_ONCE)(x, row, lo, groups), codegen


ROWS_AT_ONCE = 4


@njit(error_model="numpy", cache=True)
def sums_side_by_side(n):
    """Whether short_row_sums takes rows of n values: numpy's tree splits them once at most."""
    half = n // 2
    return n <= PAIRWISE_BLOCK or n - (half - half % 8) <= PAIRWISE_BLOCK


@njit(error_model="numpy", cache=True, nogil=True, inline="always")
def _blocks_of_rows(x, row, lo, n, out):
    """_block_sum(x[row + i], lo, n) for i < ROWS_AT_ONCE (n <= PAIRWISE_BLOCK), side by side."""
    if n < 8:
        for i in range(ROWS_AT_ONCE):
            out[i] = _block_sum(x[row + i], lo, n)
        return
    m = n // 8
    sums = _eight_running_sums_of_rows(x, row, lo, m)
    for i in range(ROWS_AT_ONCE):
        res = sums[i]
        xr = x[row + i]
        for j in range(lo + 8 * m, lo + n):
            res += xr[j]
        out[i] = res


@njit(error_model="numpy", cache=True, nogil=True)
def short_row_sums(x, row, out):
    """out[i] = pairwise_sum(x[row + i]) for i < ROWS_AT_ONCE, rows that sums_side_by_side takes
    (numpy's tree has one split at most: up to 256 values), the rows summed side by side
    (_eight_running_sums_of_rows). out: room for 2 * ROWS_AT_ONCE values."""
    n = x.shape[1]
    if n <= PAIRWISE_BLOCK:
        _blocks_of_rows(x, row, 0, n, out)
        for i in range(ROWS_AT_ONCE):
            out[i] = _ZERO + out[i]
        return
    half = n // 2
    half -= half % 8
    second = out[ROWS_AT_ONCE:]
    _blocks_of_rows(x, row, 0, half, out)
    _blocks_of_rows(x, row, half, n - half, second)
    for i in range(ROWS_AT_ONCE):
        out[i] = _ZERO + (out[i] + second[i])


@njit(error_model="numpy", cache=True, nogil=True)
def _block_sum(x, lo, n):
    """numpy's pairwise_sum for n <= 128 values: eight running sums, combined as a tree, then
    the last n % 8 values one by one."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(lo, lo + n):
            res += x[i]
        return res
    m = n // 8
    res = _eight_running_sums(x, lo, m)
    for i in range(lo + 8 * m, lo + n):
        res += x[i]
    return res


@njit(error_model="numpy", cache=True, nogil=True)
def pairwise_sum(x, scratch, stack):
    """sum(x) in float32, added in numpy's order (np.add.reduce of a contiguous row): blocks of
    at most 128 values, a longer range split in halves at a multiple of 8, the halves' sums added.
    numpy recurses; this walks the same tree with an explicit stack (numba's recursion does not
    survive every caller). scratch: 64 float32; stack: (64, 3) int64.
    numpy's reduction starts from its identity, 0.0, and adds the pairwise sum to it: that turns
    a -0.0 sum (a row of -0.0) into 0.0 and leaves every other sum as it is; so does _ZERO + ..."""
    n = x.shape[0]
    if n <= PAIRWISE_BLOCK:
        return _ZERO + _block_sum(x, 0, n)
    half = n // 2
    half -= half % 8
    if n - half <= PAIRWISE_BLOCK:   # one split (rows up to 256 values)
        return _ZERO + (_block_sum(x, 0, half) + _block_sum(x, half, n - half))
    values = scratch
    vp = 0
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 0
    sp = 1
    while sp > 0:
        sp -= 1
        lo, m, combine = stack[sp, 0], stack[sp, 1], stack[sp, 2]
        if combine:
            values[vp - 2] = values[vp - 2] + values[vp - 1]
            vp -= 1
        elif m <= PAIRWISE_BLOCK:
            values[vp] = _block_sum(x, lo, m)
            vp += 1
        else:
            half = m // 2
            half -= half % 8
            stack[sp, 0], stack[sp, 1], stack[sp, 2] = lo, m, 1
            stack[sp + 1, 0], stack[sp + 1, 1], stack[sp + 1, 2] = lo + half, m - half, 0
            stack[sp + 2, 0], stack[sp + 2, 1], stack[sp + 2, 2] = lo, half, 0
            sp += 3
    return _ZERO + values[0]
