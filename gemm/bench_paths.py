"""`i8gemm bench --paths A,B,...`: CPU paths against one another, side by side.

For each shape, int8 A x PreparedB -> exact int32 on every named path (one PreparedB, so each
path multiplies the same data from its own panels), plus onnxruntime's MatMulInteger (uint8 x
int8) when it is installed; interleaved repeats, medians, as in `gemm.bench`. Ratios are each
path's speed over the first path's, so `--paths avx2,avx2-i16` answers "how much faster is the
16-bit AVX2 kernel than the sign trick", and the last column compares the first path with
onnxruntime. One thread (`--threads 1`) gives the steadiest ratios on a shared machine.
"""

from __future__ import annotations

import json

import numpy as np

from . import bench


def parse_paths(text: str) -> list[str]:
    paths = [p.strip().removeprefix("cpu:") for p in text.split(",") if p.strip()]
    if len(paths) < 2:
        raise ValueError(f"--paths: expected at least two CPU paths, such as 'avx2,avx2-i16', "
                         f"got {text!r}")
    return paths


def bench_paths_shape(shape, paths: list[str], threads: int, repeats: int, rng) -> dict:
    import gemm

    m, k, n = shape
    # Weights of a trained layer never hit -128 after quantization; keep B in [-127, 127] so the
    # sign-trick paths can run too.
    a = rng.integers(-127, 128, (m, k), dtype=np.int8)
    b = rng.integers(-127, 128, (k, n), dtype=np.int8)
    pb = gemm.prepare_b_quantized(b)
    out = gemm.aligned_empty((m, n), np.int32)
    fns = {path: (lambda path=path: gemm.gemm_i8(a, pb, out=out, backend=f"cpu:{path}",
                                                 threads=threads))
           for path in paths}
    expected = a.astype(np.int32) @ b.astype(np.int32)
    for path, fn in fns.items():
        fn()
        if not np.array_equal(out, expected):
            raise RuntimeError(f"cpu:{path} returned a wrong product for shape {shape}")
    session = bench._ort_matmul_integer(k, n, threads)
    if session is not None:
        feeds = {"A": (a.astype(np.int16) + 128).astype(np.uint8), "B": b}
        fns["ort_u8s8"] = lambda: session.run(None, feeds)
    # With one thread no contender has a pool that spin-waits, so the pauses `gemm.bench` needs
    # between contenders only add noise here: short samples, back to back.
    pause_s = 0.0 if threads == 1 else 0.1
    with bench._blas_limit(threads):
        times = bench.time_side_by_side(fns, repeats, target_s=0.005, pause_s=pause_s)
    ops = 2.0 * m * k * n
    row = {"shape": [m, k, n], "threads": threads,
           "gops": {name: ops / t / 1e9 for name, t in times.items()},
           "vs_first": {p: times[paths[0]] / times[p] for p in paths[1:]}}
    if "ort_u8s8" in times:
        row["vs_ort"] = {p: times["ort_u8s8"] / times[p] for p in paths}
    return row


def _ratios(row, paths: list[str], has_ort: bool) -> list[float]:
    values = [row["vs_first"][p] for p in paths[1:]]
    if has_ort:
        values += [row.get("vs_ort", {}).get(p, float("nan")) for p in paths]
    return values


def format_table(rows, paths: list[str]) -> str:
    has_ort = any("vs_ort" in r for r in rows)
    names = paths + (["ort u8s8"] if has_ort else [])
    ratio_names = [f"{p}/{paths[0]}" for p in paths[1:]]
    ratio_names += [f"{p}/ort" for p in paths] if has_ort else []
    width = max(10, *(len(x) for x in ratio_names))
    head = (f"{'M':>5} {'K':>5} {'N':>6} | " + " ".join(f"{x:>10}" for x in names) + " | "
            + " ".join(f"{x:>{width}}" for x in ratio_names))
    lines = ["GOP/s (2*M*K*N / median time), int8 x PreparedB -> int32; ratio X/Y = X's speed "
             "over Y's", head, "-" * len(head)]
    for r in rows:
        m, k, n = r["shape"]
        gops = [r["gops"].get("ort_u8s8" if x == "ort u8s8" else x, float("nan")) for x in names]
        lines.append(f"{m:>5} {k:>5} {n:>6} | " + " ".join(f"{g:>10.1f}" for g in gops) + " | "
                     + " ".join(f"{v:>{width}.2f}" for v in _ratios(r, paths, has_ort)))
    lines.append("-" * len(head))
    columns = list(zip(*(_ratios(r, paths, has_ort) for r in rows), strict=True))
    pad = " " * (11 * len(names) - 1)
    lines.append(f"{'geometric mean':>18} | {pad} | "
                 + " ".join(f"{bench.geomean(c):>{width}.2f}" for c in columns))
    return "\n".join(lines)


def main(args, threads: int) -> int:
    paths = parse_paths(args.paths)
    import dispatch

    for path in paths:
        dispatch.resolve("gemm_i8", f"cpu:{path}")   # unknown or unavailable: a clear error now
    shapes = bench.parse_shapes(args.shapes) if args.shapes else bench.STANDARD_SHAPES
    import numba

    info = bench.machine_summary()
    # numba compiles for the host unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES say otherwise (e.g.
    # NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES="" for the code an AVX2-only CPU would run).
    info["codegen"] = (f"{numba.config.CPU_NAME} features {numba.config.CPU_FEATURES!r}"
                       if numba.config.CPU_NAME else "host")
    print(f"i8gemm bench --paths on {info['cpu']} ({info['llvm_cpu']}, code for "
          f"{info['codegen']}): "
          f"{', '.join('cpu:' + p for p in paths)}, {threads} thread(s), {args.repeats} repeats",
          flush=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, shape in enumerate(shapes, 1):
        print(f"  [{i}/{len(shapes)}] {shape} ...", end="\r", flush=True)
        rows.append(bench_paths_shape(shape, paths, threads, args.repeats, rng))
    print(" " * 40, end="\r")
    print(format_table(rows, paths))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "threads": threads, "paths": paths, "rows": rows,
                       "geomean_vs_first": {p: bench.geomean(r["vs_first"][p] for r in rows)
                                            for p in paths[1:]},
                       "geomean_vs_ort": {p: bench.geomean(r.get("vs_ort", {}).get(p)
                                                           for r in rows) for p in paths}},
                      f, indent=2)
        print(f"wrote {args.json}")
    return 0
