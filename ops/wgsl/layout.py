"""transpose, concat, slice and expand on the GPU: each is one or more dispatches of
strided_copy.wgsl, which copies 32-bit elements from one strided view to another."""

from __future__ import annotations

import math

from . import programs as pg

DIMS = 6


def _contiguous(shape) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return strides[::-1]


def copy_dispatch(src, dst, dims, src_base: int, src_strides, dst_base: int, dst_strides):
    """The dispatch copying src's strided view onto dst's over the index space `dims`."""
    pad = DIMS - len(dims)
    dims = [1] * pad + list(dims)
    ss = [0] * pad + list(src_strides)
    ds = [0] * pad + list(dst_strides)
    count = math.prod(dims)
    uni = pg.params(count, src_base, dst_base, 0, *dims[:4], *dims[4:], 1, 1,
                    *ss[:4], *ss[4:], 0, 0, *ds[:4], *ds[4:], 0, 0)
    return (pg.program("strided_copy.wgsl", "rwu"), (src.buffer, dst.buffer, uni),
            pg.grid(-(-count // pg.WG)))


def transpose(x, perm):
    shape = tuple(x.shape[p] for p in perm)
    out = pg.empty(shape, x.dtype)
    if out.size:
        xs = _contiguous(x.shape)
        pg.run([copy_dispatch(x, out, shape, 0, [xs[p] for p in perm], 0, _contiguous(shape))])
    return out


def concat(arrays, axis):
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out = pg.empty(tuple(shape), arrays[0].dtype)
    os = _contiguous(shape)
    offset, dispatches = 0, []
    for a in arrays:
        if a.size:
            dispatches.append(copy_dispatch(a, out, a.shape, 0, _contiguous(a.shape),
                                            offset * os[axis], os))
        offset += a.shape[axis]
    pg.run(dispatches)
    return out


def slice_axes(x, index):
    xs = _contiguous(x.shape)
    base, shape, strides = 0, [], []
    for size, stride, sl in zip(x.shape, xs, index, strict=True):
        start, stop, step = sl.indices(size)
        shape.append(len(range(start, stop, step)))
        base += start * stride if shape[-1] else 0
        strides.append(step * stride)
    out = pg.empty(tuple(shape), x.dtype)
    if out.size:
        pg.run([copy_dispatch(x, out, shape, base, strides, 0, _contiguous(shape))])
    return out


def expand(x, shape):
    padded = (1,) * (len(shape) - x.ndim) + tuple(x.shape)
    xs = _contiguous(padded)
    out = pg.empty(tuple(shape), x.dtype)
    if out.size:
        src_strides = [0 if d == 1 else s for d, s in zip(padded, xs, strict=True)]
        pg.run([copy_dispatch(x, out, shape, 0, src_strides, 0, _contiguous(shape))])
    return out
