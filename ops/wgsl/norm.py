"""layer_norm on the GPU (layer_norm.wgsl): one 256-invocation workgroup per normalised row.

One read computes the mean and the sum of squared deviations together (per-invocation vec4
groups merged with Chan et al.'s pairwise update, then a workgroup tree of the same merges):
stable whatever the row's offset, without a third pass. A second read writes
((x - mean) * rstd) * weight + bias. float32 throughout (WGSL has no float64).
"""

from __future__ import annotations

import math

import numpy as np

from . import programs as pg

MAX_WIDTH = 1 << 24   # counts are float32 in the merges: exact up to 2**24


def layer_norm(x, weight, bias, epsilon: float, axis: int, out, threads, residual=None,
               float32_steps=False):
    if float32_steps:
        raise ValueError("float32_steps: only on the CPU (it follows numpy's float32 summation "
                         "order, which the GPU's workgroup reduction does not)")
    if x.size == 0:
        return out
    if residual is not None:
        # x + residual first (one more pass on the GPU; the CPU fuses it), rounded to float32
        # exactly as the CPU's fused kernel rounds it.
        from .elementwise import ADD, apply_binary

        x = apply_binary(x, residual, ADD, pg.empty(x.shape, np.float32), threads)
    n = math.prod(x.shape[axis:])
    if n > MAX_WIDTH:
        raise ValueError(f"x: the GPU kernel normalises at most {MAX_WIDTH} values per row, got {n}")
    rows = x.size // n
    vec = n % 4 == 0
    wb_vec = "  if (which == 0u) { return w[i]; }\n  return b[i];"
    wb_scalar = ("  var v = vec4<f32>(0.0);\n  for (var c = 0u; c < 4u; c = c + 1u) {\n"
                 "    if (4u * i + c < p.n) {\n"
                 "      v[c] = select(b[4u * i + c], w[4u * i + c], which == 0u);\n    }\n  }\n"
                 "  return v;")
    prog = pg.program("layer_norm.wgsl", "rrrwu", XT=pg.xtype(vec), LOAD=pg.row_load(vec, pad="0.0"),
                      LOAD_WB=wb_vec if vec else wb_scalar, STORE=pg.row_store(vec))
    dst = pg.target(out, x, weight, bias)
    buffers = (x.buffer, weight.buffer, pg.dummy() if bias is None else bias.buffer, dst.buffer,
               pg.params(rows, n, -(-n // 4), int(bias is not None), np.float32(epsilon)))
    pg.run([(prog, buffers, pg.grid(rows))])
    return pg.finish(out, dst)
