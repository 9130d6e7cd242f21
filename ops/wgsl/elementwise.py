"""Elementwise ops on the GPU (elementwise.wgsl): activations, add/mul with trailing-axes
broadcasting, the fused bias_add. One kernel template: out = act((x op y) + residual), vec4
groups, each invocation four groups 256 apart (contiguous loads per workgroup).

The second operand y repeats along x's flat order (as in ops.cpu.elementwise): y index of element
e = (e / inner) % period. The cheapest load form is chosen for each call: a scalar (splat), a
same-shaped array (vec4 loads), a trailing-axes operand of a multiple of 4 values (one vec4
gathered from y), a bias along an inner axis whose span is a multiple of 4 (one value per
group), or the general per-lane form.
"""

from __future__ import annotations

import math

from . import programs as pg

# The CPU backend's codes (common.wgsl's activate4 uses the same numbers).
NONE, RELU, EXP, TANH, SIGMOID, GELU_TANH, GELU_ERF = range(7)
UNARY_CODES = {None: NONE, "relu": RELU, "exp": EXP, "tanh": TANH, "sigmoid": SIGMOID,
               "gelu_tanh": GELU_TANH, "gelu": GELU_ERF}
ADD, MUL, NO_Y = 0, 1, 2


def _y_load(period: int, inner: int, n: int) -> str:
    if period == 1:
        return "  return vec4<f32>(yv[0]);"
    if inner == 1 and period % 4 == 0:
        return ("  let j = (4u * i) % p.period;\n"
                "  return vec4<f32>(yv[j], yv[j + 1u], yv[j + 2u], yv[j + 3u]);")
    if inner % 4 == 0:
        return "  return vec4<f32>(yv[((4u * i) / p.inner) % p.period]);"
    return ("  var v = vec4<f32>(0.0);\n  for (var c = 0u; c < 4u; c = c + 1u) {\n"
            "    v[c] = yv[((4u * i + c) / p.inner) % p.period];\n  }\n  return v;")


def _run(x, y, residual, op: int, act: int, period: int, inner: int, out):
    """out = act((x op y) + residual) over flat arrays; y None or repeating (period, inner)."""
    n = x.size
    if n == 0:
        return out
    vec = n % 4 == 0
    # A same-shaped y (and no residual: bias_add's y is a bias) is read through the residual's
    # binding, with vec4 loads.
    same = y is not None and residual is None and period == n and inner == 1
    if y is None:
        yload, op = "  return vec4<f32>(0.0);", NO_Y
    elif same:
        yload = "  return load_r(i);"
    else:
        yload = _y_load(period, inner, n)
    prog = pg.program(
        "elementwise.wgsl", "rrrwu", XT=pg.xtype(vec), OP=op, ACT=act,
        HAS_R=str(residual is not None).lower(), LOADX=pg.flat_load(vec, "x"),
        LOADR=pg.flat_load(vec, "r"), YLOAD=yload, STORE=pg.flat_store(vec, "out"))
    dst = pg.target(out, x, y, residual)
    second = y if same else residual
    groups4 = -(-n // 4)
    buffers = (x.buffer, pg.dummy() if (y is None or same) else y.buffer,
               pg.dummy() if second is None else second.buffer, dst.buffer,
               pg.params(n, groups4, max(period, 1), max(inner, 1)))
    pg.run([(prog, buffers, pg.flat_grid(groups4))])
    return pg.finish(out, dst)


def apply_unary(x, op: int, out, threads):
    return _run(x, None, None, NO_Y, op, 1, 1, out)


def apply_binary(x, y, op: int, out, threads):
    """x holds as many values as out; y repeats along x's flat order (see the module docstring)."""
    return _run(x, y, None, op, NONE, max(y.size, 1), 1, out)


def bias_add(x, bias, residual, act: int, axis: int, out, threads):
    inner = math.prod(x.shape[axis + 1:])
    return _run(x, bias, residual, ADD, act, bias.size, inner, out)
