"""Attention's float32 core, softmax(Q K^T / d) V, in one pass per (batch, head), bit for bit as
numpy computes the three steps one after another.

An exported transformer computes attention as MatMul(Q, K^T) -> Div(d) -> Softmax -> MatMul(., V)
on stacks of small matrices ((batch, heads) x 128 x 64 x 128). Run as three numpy steps, each
writes a (batch, heads, 128, 128) tensor to memory and the next reads it back, and numpy's BLAS
handles each small product separately. Here one unit of work is one (batch, head): the scores
are computed into a per-thread scratch that stays in cache, the softmax runs on them there
(probabilities.py's one-pass rows), and the second product reads them from there.

Why the bits agree: numpy's float32 matmul of such matrices goes to OpenBLAS's sgemm, whose
micro-kernels keep one accumulator per output and add the products in k order with fused
multiply-adds, starting from zero (for the k extents attention has: a product is one k block).
`fma_tile` does the same: one lane per output, `acc = fma(a[i, k], b[k, j], acc)` for
k = 0, 1, ..., K - 1. That is an observation about the BLAS, not a promise of it (another build,
another k extent, a small-matrix path may add in another order), so the caller
(graph/float_attention.py) checks the agreement on the first call of each shape and layout
before it relies on it. The softmax steps are probabilities.py's, exact where its
`matches_numpy()` holds.

The tile: `rows` x (`vectors` x `lanes`) outputs in registers; per k, `vectors` loads of B's row,
one broadcast of A's value per row, rows x vectors fused multiply-adds. LLVM's generic vector
type and llvm.fma: zmm registers on AVX-512, ymm on AVX2, one instruction per vector. When
editing this file, delete ops/cpu/__pycache__ (see mathfuncs.py).
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from dispatch.cpu import prange_only

from .mathfuncs import fma, rows_min_max
from .probabilities import softmax_steps_rows
from .quantize import combine_ranges, count_bad
from .threads import split, take_block, threads_for

F32 = ir.FloatType()
I64 = ir.IntType(64)


def _element_pointer(builder, context, arr_type, arr, i, j):
    """Address of arr[i, j] for a 2-D float32 array of any strides (i, j: i64)."""
    a = context.make_array(arr_type)(context, builder, arr)
    strides = cgutils.unpack_tuple(builder, a.strides, 2)
    base = builder.ptrtoint(a.data, I64)
    offset = builder.add(builder.mul(i, strides[0]), builder.mul(j, strides[1]))
    return builder.inttoptr(builder.add(base, offset), F32.as_pointer())


@functools.cache
def fma_tile(rows: int, vectors: int, lanes: int):
    """An intrinsic `tile(a, b, c, i0, j0, k)`: c[i0:i0+rows, j0:j0+vectors*lanes] =
    a[i0:i0+rows, :k] @ b[:k, j0:j0+vectors*lanes], each output one chain of fused
    multiply-adds in k order from +0.0. b's and c's rows must be contiguous (last stride 4 bytes);
    a may have any strides."""
    vec = ir.VectorType(F32, lanes)

    @intrinsic
    def tile(typingctx, a, b, c, i0, j0, k):
        arrays = (a, b, c)
        if not all(isinstance(x, types.Array) and x.ndim == 2 and x.dtype == types.float32
                   for x in arrays):
            return None

        def codegen(context, builder, sig, args):
            a_t, b_t, c_t = sig.args[:3]
            av, bv, cv, i0v, j0v, kv = args
            i0v = context.cast(builder, i0v, sig.args[3], types.int64)
            j0v = context.cast(builder, j0v, sig.args[4], types.int64)
            kv = context.cast(builder, kv, sig.args[5], types.int64)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}f32")
            zero = ir.Constant(vec, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                    for _ in range(rows)]
            with cgutils.for_range(builder, kv) as loop:
                kk = loop.index
                bs = []
                for v in range(vectors):
                    col = builder.add(j0v, ir.Constant(I64, v * lanes))
                    p = _element_pointer(builder, context, b_t, bv, kk, col)
                    bs.append(builder.load(builder.bitcast(p, vec.as_pointer()), align=4))
                for r in range(rows):
                    row = builder.add(i0v, ir.Constant(I64, r))
                    s = builder.load(_element_pointer(builder, context, a_t, av, row, kk), align=4)
                    splat = builder.insert_element(ir.Constant(vec, ir.Undefined), s,
                                                   ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(splat, ir.Constant(vec, ir.Undefined),
                                                   ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                               [0] * lanes))
                    for v in range(vectors):
                        builder.store(builder.call(fma, [splat, bs[v], builder.load(accs[r][v])]),
                                      accs[r][v])
            for r in range(rows):
                row = builder.add(i0v, ir.Constant(I64, r))
                for v in range(vectors):
                    col = builder.add(j0v, ir.Constant(I64, v * lanes))
                    p = _element_pointer(builder, context, c_t, cv, row, col)
                    builder.store(builder.load(accs[r][v]), builder.bitcast(p, vec.as_pointer()),
                                  align=4)
            return context.get_dummy_value()

        return types.none(a, b, c, i0, j0, k), codegen

    return tile


def _register_block() -> tuple[int, int]:
    """(vectors, lanes) of the tile's rows: 4 zmm per row with AVX-512 (4 x 4 accumulators), 2
    ymm with AVX2 (4 x 2: half of the register file, leaving room for B's row and the
    broadcasts)."""
    from dispatch.cpu import host_features
    if host_features().get("avx512f"):
        return 4, 16
    return 2, 8


MR = 4   # rows per tile; _rows_wide and _rows_one below are written for it
NV, LANES = _register_block()
_W1, _W2, _W3, _W4 = (fma_tile(r, NV, LANES) for r in range(1, MR + 1))
_O1, _O2, _O3, _O4 = (fma_tile(r, 1, LANES) for r in range(1, MR + 1))


@njit(error_model="numpy", cache=True, nogil=True)
def _rows_wide(a, b, c, m, j, k):
    i = 0
    while i + MR <= m:
        _W4(a, b, c, i, j, k)
        i += MR
    r = m - i
    if r == 3:
        _W3(a, b, c, i, j, k)
    elif r == 2:
        _W2(a, b, c, i, j, k)
    elif r == 1:
        _W1(a, b, c, i, j, k)


@njit(error_model="numpy", cache=True, nogil=True)
def _rows_one(a, b, c, m, j, k):
    i = 0
    while i + MR <= m:
        _O4(a, b, c, i, j, k)
        i += MR
    r = m - i
    if r == 3:
        _O3(a, b, c, i, j, k)
    elif r == 2:
        _O2(a, b, c, i, j, k)
    elif r == 1:
        _O1(a, b, c, i, j, k)


@njit(error_model="numpy", cache=True, nogil=True)
def matmul_fma_chain(a, b, c):
    """c = a @ b (float32, 2-D; b's and c's rows contiguous), each output one chain of fused
    multiply-adds in k order from +0.0 (module docstring)."""
    m, k = a.shape
    n = b.shape[1]
    wide = NV * LANES
    j = 0
    while j + wide <= n:
        _rows_wide(a, b, c, m, j, k)
        j += wide
    while j + LANES <= n:
        _rows_one(a, b, c, m, j, k)
        j += LANES
    for i in range(m):
        for jj in range(j, n):
            acc = np.float32(0.0)
            for kk in range(k):
                acc = fma(a[i, kk], b[kk, jj], acc)
            c[i, jj] = acc


@njit(error_model="numpy", cache=True, nogil=True)
def _unit_range(out, bi, h):
    """(min, max, count of NaN and inf) of out[bi, :, h, :] (min and max leave NaN out): the
    rows' first 32-multiple of values through rows_min_max, the rest one by one. (A plain loop
    of the three reductions ran scalar, 1.1 ns a value; vector_min_max row by row spent as much
    on reducing its vectors at each short row.)"""
    block = out[bi, :, h, :]
    n = block.shape[1]
    groups = n // 32
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    nan = False
    if groups:
        lo, hi, flag = rows_min_max(block, groups)
        nan = flag != np.float32(0.0)
    for i in range(block.shape[0]):
        for j in range(32 * groups, n):
            v = block[i, j]
            lo = v if v < lo else lo
            hi = v if v > hi else hi
            nan |= v != v
    bad = 0
    if nan or lo == -np.inf or hi == np.inf:
        for i in range(block.shape[0]):
            bad += count_bad(block[i])
    return lo, hi, bad


KT_BLOCK = 16


@njit(error_model="numpy", cache=True, nogil=True)
def _copy_kt(ktu, kt_rows):
    """kt_rows = ktu, K^T's rows made contiguous for the tile's loads. In blocks of KT_BLOCK of
    K's rows (K^T's columns): each row of the copy is written KT_BLOCK values at a time, while
    those K rows stay in L1. (Column by column, every value went to another cache line: 7.2
    against 3.3 us a unit of 64 x 128, K's rows a whole Q|K|V row apart, one Zen 4 core.)"""
    d, s = ktu.shape
    whole = s - s % KT_BLOCK
    for j0 in range(0, whole, KT_BLOCK):
        for i in range(d):
            o = kt_rows[i, j0:j0 + KT_BLOCK]
            for jj in range(KT_BLOCK):
                o[jj] = ktu[i, j0 + jj]
    for j in range(whole, s):
        for i in range(d):
            kt_rows[i, j] = ktu[i, j]


@njit(error_model="numpy", cache=True, nogil=True)
def _attention_units(q, kt, v, out, divisor, divide, lo, hi, scores, kt_rows, lohi, bads):
    """Units lo:hi of the flattened (batch, head) axis; scores: (s_q, s_k), kt_rows: (d, s_k)
    scratch of this thread; out in (batch, seq, heads, e) order. With lohi (units x 2) and bads
    (units) not empty, each unit's output range while it is in cache."""
    heads = q.shape[1]
    for u in range(lo, hi):
        bi = u // heads
        h = u - bi * heads
        _copy_kt(kt[bi, h], kt_rows)
        matmul_fma_chain(q[bi, h], kt_rows, scores)
        softmax_steps_rows(scores, scores, 0, scores.shape[0], divisor, divide)
        matmul_fma_chain(scores, v[bi, h], out[bi, :, h, :])
        if bads.shape[0]:
            lohi[u, 0], lohi[u, 1], bads[u] = _unit_range(out, bi, h)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def _attention_parallel(q, kt, v, out, divisor, divide, workers, block, lohi, bads):
    units = q.shape[0] * q.shape[1]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        scores = np.empty((q.shape[2], kt.shape[3]), np.float32)
        kt_rows = np.empty((kt.shape[2], kt.shape[3]), np.float32)
        lo, hi = take_block(counter, block, units)
        while lo < hi:
            _attention_units(q, kt, v, out, divisor, divide, lo, hi, scores, kt_rows, lohi, bads)
            lo, hi = take_block(counter, block, units)


def run_units(q, kt, v, out, divisor, workers: int, block: int, with_range: bool = False):
    """softmax(q[b, h] @ kt[b, h] / divisor) @ v[b, h] for 4-D float32 q (B, H, S, D),
    kt (B, H, D, T), v (B, H, T, E) of any strides except v's last (contiguous), written to out,
    a C-contiguous (B, S, H, E) array (so out.transpose(0, 2, 1, 3) is the result);
    divisor None for no division. Units of work: (b, h) pairs, `block` at a time, on `workers`
    threads (1: this one). With with_range, also the output's (min, max, count of NaN and inf),
    each unit's taken while it is in cache."""
    divide = divisor is not None
    d = np.float32(1.0 if divisor is None else divisor)
    units = q.shape[0] * q.shape[1]
    lohi = np.empty((units if with_range else 0, 2), np.float32)
    bads = np.empty(units if with_range else 0, np.int64)
    if workers <= 1:
        scores = np.empty((q.shape[2], kt.shape[3]), np.float32)
        kt_rows = np.empty((kt.shape[2], kt.shape[3]), np.float32)
        _attention_units(q, kt, v, out, d, divide, 0, units, scores, kt_rows, lohi, bads)
    else:
        _attention_parallel(q, kt, v, out, d, divide, workers, block, lohi, bads)
    return combine_ranges(lohi, bads) if with_range else None


def attention(q, kt, v, divide_by, with_range: bool, threads):
    """The backend entry (ops.attention): arguments validated there, v's rows contiguous. Returns
    the (B, H, S, E) result (a view of a (B, S, H, E) array) and, with with_range, its range."""
    b, h, s, _ = q.shape
    out = np.empty((b, s, h, v.shape[3]), np.float32)
    units = b * h
    work = units * s * kt.shape[3]
    workers, block = split(units, s * kt.shape[3], threads_for(work, units, threads))
    found = run_units(q, kt, v, out, divide_by, workers, block, with_range)
    return out.transpose(0, 2, 1, 3), found
