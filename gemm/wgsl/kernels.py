"""WGSL text for each kernel configuration: the .wgsl templates with their constants filled in.

The register tiles are written out statement by statement (constant indices only), so no
driver has to unroll a loop to keep the accumulators in registers: a private array indexed by a
loop variable would otherwise live in slow local memory.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

from .tiles import SmallM, Tiled

HERE = Path(__file__).parent
SMALL_M_UNROLL = 4


@functools.cache
def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def _fill(name: str, **values) -> str:
    return string.Template(_read(name)).substitute(**{k: str(v) for k, v in values.items()})


def _header(out: str, a_reader: str | None = None) -> str:
    """out: "i32" or "f32" (C with the epilogue), or "parts" (split K's int32 parts of C).
    a_reader: None (A bound as vec4s, read by the kernel itself), "packed" or "direct" (A read
    through a_vec: a_packed.wgsl or a_direct.wgsl)."""
    epilogue = {"i32": "epilogue_i32.wgsl", "f32": "epilogue_f32.wgsl",
                "parts": "epilogue_split.wgsl"}[out]
    text = _fill("common.wgsl", OUT="f32" if out == "f32" else "i32",
                 A_ELEM="u32" if a_reader == "direct" else "vec4<u32>")
    text += "\n" + _read(epilogue) + "\n"
    if a_reader:
        text += _read(f"a_{a_reader}.wgsl") + "\n"
    return text


def _dot4(a: str, bv: str) -> str:
    return (f"vec4<i32>(dot4I8Packed({a}, {bv}.x), dot4I8Packed({a}, {bv}.y), "
            f"dot4I8Packed({a}, {bv}.z), dot4I8Packed({a}, {bv}.w))")


@functools.cache
def tiled_source(cfg: Tiled, out: str) -> str:
    """out: "i32" or "f32"; a config that splits K writes int32 parts whatever C's type (see
    reduce_source)."""
    if cfg.ks > 1:
        out = "parts"
    bm4, bn4 = cfg.bm // 4, cfg.bn // 4
    wg_m, wg_n = cfg.bm // cfg.tm, cfg.bn // cfg.tn
    wg = wg_m * wg_n
    gm, gn = cfg.tm // 4, cfg.tn // 4
    a_loads, b_loads = -(-cfg.bk * bm4 // wg), -(-cfg.bk * bn4 // wg)

    decls = [f"  var ra{i}: vec4<u32>;" for i in range(a_loads)]
    decls += [f"  var rb{i}: vec4<u32>;" for i in range(b_loads)]
    load, store = [], []
    # A through a_vec (packed or direct: see _header), B straight from its packed vec4s.
    for name, count, width4, start, last in (("a", a_loads, bm4, "m4_0", "last_m4"),
                                             ("b", b_loads, bn4, "n4_0", "last_n4")):
        for i in range(count):
            idx = f"(tid + {i * wg}u)"
            guard = (i + 1) * wg > cfg.bk * width4  # only the last load may overrun the slice
            g, col = f"k0 + {idx} / {width4}u", f"min({start} + {idx} % {width4}u, {last})"
            expr = f"a_vec({g}, {col})" if name == "a" else f"b[({g}) * p.np4 + {col}]"
            ld = f"r{name}{i} = {expr};"
            st = f"s{name}[{idx}] = r{name}{i};"
            if guard:
                ld = f"if ({idx} < {cfg.bk * width4}u) {{ {ld} }}"
                st = f"if ({idx} < {cfg.bk * width4}u) {{ {st} }}"
            load.append("      " + ld)
            store.append("    " + st)

    compute = []
    for kk in range(cfg.bk):
        compute.append("    {")
        for g in range(gm):
            compute.append(f"      let av{g} = sa[{kk * bm4 + g * wg_m}u + tm];")
        for g in range(gn):
            compute.append(f"      let bv{g} = sb[{kk * bn4 + g * wg_n}u + tn];")
        for r in range(cfg.tm):
            a = f"av{r // 4}.{'xyzw'[r % 4]}"
            for g in range(gn):
                i = r * gn + g
                compute.append(f"      acc[{i}] = acc[{i}] + {_dot4(a, f'bv{g}')};")
        compute.append("    }")

    epilogue = []
    for r in range(cfg.tm):
        row = f"4u * (m4_0 + {(r // 4) * wg_m}u + tm) + {r % 4}u"
        epilogue.append(f"  {{ let i = {row};")
        epilogue.append("    if (i < p.m) {")
        for g in range(gn):
            epilogue.append(f"      {{ let j = 4u * (n4_0 + {g * wg_n}u + tn);")
            for s in range(4):
                write = "store_part(wid.z, i, " if out == "parts" else "finish(i, "
                epilogue.append(f"        if (j + {s}u < p.n) {{ {write}j + {s}u, "
                                f"acc[{r * gn + g}].{'xyzw'[s]}); }}")
            epilogue.append("      }")
        epilogue.append("    }")
        epilogue.append("  }")

    body = _fill("gemm_tiled.wgsl", BM4=bm4, BN4=bn4, BK=cfg.bk, WG_M=wg_m, WG_N=wg_n,
                 SA=cfg.bk * bm4, SB=cfg.bk * bn4, ACC=cfg.tm * gn, DECLS="\n".join(decls),
                 LOAD="\n".join(load), STORE="\n".join(store), COMPUTE="\n".join(compute),
                 EPILOGUE="\n".join(epilogue))
    return _header(out, "direct" if cfg.direct else "packed") + body


@functools.cache
def small_m_source(cfg: SmallM, rows: int, out: str) -> str:
    # UNROLL k-groups per trip, their loads issued before any use: with few workgroups the
    # kernel is bound by load latency, not bandwidth. A group past K loads a clamped address
    # and a zero B, so it adds nothing.
    compute = []
    for u in range(SMALL_M_UNROLL):
        kk = "k" if u == 0 else f"k{u}"
        if u:
            compute.append(f"    let k{u} = k + {u}u * KS;")
            compute.append(f"    let bv{u} = select(vec4<u32>(0u), b[min(k{u}, last_k) * p.np4 + n4c], "
                           f"k{u} < p.k4);")
        else:
            compute.append("    let bv0 = b[k * p.np4 + n4c];")
        for g in range(-(-rows // 4)):
            idx = kk if u == 0 else f"min({kk}, last_k)"
            compute.append(f"    let av{u}_{g} = a_vec({idx}, {g}u);")
    for u in range(SMALL_M_UNROLL):
        for r in range(rows):
            lane = f"av{u}_{r // 4}.{'xyzw'[r % 4]}"
            compute.append(f"    acc[{r}] = acc[{r}] + {_dot4(lane, f'bv{u}')};")
    reduce = []
    if cfg.ks > 1:
        reduce.append("  if (s > 0u) {")
        for r in range(rows):
            reduce.append(f"    partial[((s - 1u) * WG_X + x) * ROWS + {r}u] = acc[{r}];")
        reduce.append("  }")
        reduce.append("  workgroupBarrier();")
        reduce.append("  if (s == 0u) {")
        reduce.append("    for (var t = 1u; t < KS; t = t + 1u) {")
        for r in range(rows):
            reduce.append(f"      acc[{r}] = acc[{r}] + partial[((t - 1u) * WG_X + x) * ROWS + {r}u];")
        reduce.append("    }")
        reduce.append("  }")
    epilogue = ["  if (s == 0u) {", "    let j = 4u * n4;"]
    for r in range(rows):
        epilogue.append(f"    if ({r}u < p.m) {{")
        for t in range(4):
            epilogue.append(f"      if (j + {t}u < p.n) {{ finish({r}u, j + {t}u, acc[{r}].{'xyzw'[t]}); }}")
        epilogue.append("    }")
    epilogue.append("  }")
    body = _fill("gemm_small_m.wgsl", ROWS=rows, WG_X=cfg.wg_x, KS=cfg.ks, UNROLL=SMALL_M_UNROLL,
                 PARTIAL=cfg.workgroup_bytes(rows) // 16, COMPUTE="\n".join(compute),
                 REDUCE="\n".join(reduce), EPILOGUE="\n".join(epilogue))
    return _header(out, "direct" if cfg.direct else "packed") + body


@functools.cache
def reduce_source(out: str) -> str:
    """Split K's second kernel: the parts added, then the epilogue into C ("i32" or "f32")."""
    return _header(out) + _read("reduce_splits.wgsl")


@functools.cache
def prepare_a_source(src: str) -> str:
    """src: "float" (quantize float32 A) or "bytes" (int8/uint8 A)."""
    value = _read("prepare_a_float.wgsl" if src == "float" else "prepare_a_bytes.wgsl")
    return _fill("prepare_a.wgsl", SRC="f32" if src == "float" else "u32", VALUE=value)


def gather_b_source() -> str:
    return _read("gather_b.wgsl")
