"""matmul on the GPU (matmul.wgsl): 64 x 64 output tiles, one product of the batch per
workgroup layer; the batch dims (up to 4) broadcast through per-operand strides, so a broadcast
operand is read in place, never copied."""

from __future__ import annotations

import math

from . import programs as pg

TILE = 64


def _batch_strides(shape, nb: int, matrix: int) -> list[int]:
    """Element strides of an operand's batch dims, aligned right on the result's nb batch dims
    and padded to 4; 0 where the operand broadcasts."""
    batch = (1,) * (nb - (len(shape) - 2)) + tuple(shape[:-2])
    strides, step = [], matrix
    for d in reversed(batch):
        strides.append(0 if d == 1 else step)
        step *= d
    return [0] * (4 - nb) + strides[::-1]


def matmul(a, b, out, threads):
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = out.shape[:-2]
    count = math.prod(batch)
    if out.size == 0:
        return out
    nb = len(batch)
    dims = [1] * (4 - nb) + list(batch)
    a_strides = _batch_strides(a.shape, nb, m * k)
    b_strides = _batch_strides(b.shape, nb, k * n)
    dst = pg.target(out, a, b)
    prog = pg.program("matmul.wgsl", "rrwu")
    dispatches = []
    for first in range(0, count, pg.MAX_GROUPS):
        layers = min(pg.MAX_GROUPS, count - first)
        uni = pg.params(m, n, k, first, *dims, *a_strides, *b_strides)
        dispatches.append((prog, (a.buffer, b.buffer, dst.buffer, uni),
                           (-(-n // TILE), -(-m // TILE), layers)))
    pg.run(dispatches)
    return pg.finish(out, dst)
