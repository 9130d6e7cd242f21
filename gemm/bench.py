"""`i8gemm bench`: int8 GEMM against float32 numpy and onnxruntime's MatMulInteger, side by side.

For each shape (M, K, N), in one process and interleaved (every repeat times each contender once,
so machine noise hits them alike), the median time of:
  i8 int32      gemm_i8(int8 A, PreparedB) -> exact int32
  ort u8s8      onnxruntime MatMulInteger, uint8 A x int8 B -> int32 (its fast path)
  i8 float      gemm_i8(float32 A, PreparedB, a_quant_mult, bias) -> float32 (quantize, multiply,
                unquantize + bias)
  np f32        numpy float32 A @ W + bias (OpenBLAS)
Ratios > 1 mean i8gemm is faster. Threads are set alike for all (numpy's BLAS through
threadpoolctl). Figures are throughputs (2*M*K*N operations per second) and ratios, never
absolute claims: run it on your own machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import time

import numpy as np

STANDARD_SHAPES = [
    (1, 512, 512), (8, 512, 2048), (32, 512, 512), (64, 512, 2048), (128, 1024, 1024),
    (256, 1024, 4096), (256, 2048, 2048), (16, 512, 32000), (64, 512, 32000), (1024, 1024, 1024),
]
SHORTLIST_SHAPE = (64, 512, 32000)
SHORTLIST_COLUMNS = 1000


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """"M,K,N;M,K,N" -> [(M, K, N), ...]."""
    shapes = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        try:
            m, k, n = (int(x) for x in part.lower().replace("x", ",").split(","))
        except ValueError:
            raise ValueError(f"--shapes: expected 'M,K,N;M,K,N...', got {part!r}") from None
        if min(m, k, n) < 1:
            raise ValueError(f"--shapes: every dimension must be >= 1, got {part!r}")
        shapes.append((m, k, n))
    if not shapes:
        raise ValueError("--shapes: no shape given")
    return shapes


def _ort_matmul_integer(k: int, n: int, threads: int):
    """An onnxruntime session computing uint8 A (M x k) @ int8 B (k x n) -> int32, or None."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["C"])], "matmul_integer",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [k, n])],
        [helper.make_tensor_value_info("C", TensorProto.INT32, ["M", n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # widely supported by onnxruntime releases
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Its other settings are its defaults: its pool spins while it waits for work, as i8gemm's
    # OpenMP threads do (dispatch/cpu.py); with spinning off its calls were up to 1.4x slower
    # here. It spins on for some 50 ms after a call; the pause before each sample covers that.
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _blas_limit(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def time_side_by_side(fns: dict, repeats: int, target_s: float = 0.05,
                      pause_s: float = 0.1) -> dict[str, float]:
    """Median seconds per call of each function, interleaving repeats across functions. Fast
    calls are batched so each sample lasts about target_s (after a pause the first milliseconds
    run slow -- threads asleep, cores clocked down: a 250 us call measured 460 us in 10 ms samples
    and 247 us in 50 ms ones); a pause before each sample lets the
    previous contender's thread pool stop spin-waiting and free the cores (OpenBLAS's workers
    spin for up to 2^28 cycles (~0.1 s) after a call and would otherwise tax whoever runs next)."""
    batch = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles, allocates, fills caches)
        t0 = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, min(1000, int(target_s / dt)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = batch[name]
            time.sleep(pause_s)
            fn()  # the first call after a pause wakes the pool; not counted
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
    return {name: float(np.median(s)) for name, s in samples.items()}


def bench_shape(shape, threads: int, repeats: int, rng) -> dict:
    import gemm

    m, k, n = shape
    a_f = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(0.1)
    bias = rng.standard_normal(n, dtype=np.float32)
    qa = 127.0 / float(np.abs(a_f).max())
    qb = 127.0 / float(np.abs(w).max())
    pb = gemm.prepare_b(w, qb)
    a_i8 = gemm.quantize(a_f, qa)
    b_i8 = pb.quantized()
    a_u8 = (a_i8.astype(np.int16) + 128).astype(np.uint8)
    # Aligned, as gemm_i8's own streamed results are, so that large results may stream (driver.py).
    out_i = gemm.aligned_empty((m, n), np.int32)
    out_f = gemm.aligned_empty((m, n), np.float32)

    fns = {
        "i8_int32": lambda: gemm.gemm_i8(a_i8, pb, out=out_i, threads=threads),
        "i8_float": lambda: gemm.gemm_i8(a_f, pb, a_quant_mult=qa, bias=bias, out=out_f,
                                         threads=threads),
        "np_f32": lambda: np.add(a_f @ w, bias, out=out_f),
    }
    session = _ort_matmul_integer(k, n, threads)
    if session is not None:
        feeds = {"A": a_u8, "B": b_i8}
        fns["ort_u8s8"] = lambda: session.run(None, feeds)
    with _blas_limit(threads):
        times = time_side_by_side(fns, repeats)
    ops = 2.0 * m * k * n
    row = {"shape": [m, k, n], "threads": threads,
           **{f"{name}_gops": ops / t / 1e9 for name, t in times.items()},
           **{f"{name}_us": t * 1e6 for name, t in times.items()}}
    row["float_vs_numpy"] = times["np_f32"] / times["i8_float"]
    if "ort_u8s8" in times:
        row["int32_vs_ort"] = times["ort_u8s8"] / times["i8_int32"]
    return row


def bench_shortlist(threads: int, repeats: int, rng) -> dict:
    """Select SHORTLIST_COLUMNS columns of a vocabulary-sized B and multiply only those, against
    multiplying the whole B."""
    import gemm

    m, k, n = SHORTLIST_SHAPE
    a = rng.standard_normal((m, k), dtype=np.float32)
    pb = gemm.prepare_b(rng.standard_normal((k, n), dtype=np.float32), 32.0)
    ids = np.sort(rng.choice(n, SHORTLIST_COLUMNS, replace=False))
    bias = rng.standard_normal(n, dtype=np.float32)
    bias_ids = bias[ids]
    times = time_side_by_side({
        "full": lambda: gemm.gemm_i8(a, pb, a_quant_mult=16.0, bias=bias, threads=threads),
        "select_and_multiply": lambda: gemm.gemm_i8(a, pb.select_columns(ids), a_quant_mult=16.0,
                                                    bias=bias_ids, threads=threads),
    }, repeats, pause_s=0.0)  # both contenders are i8gemm: no other pool to let stop spinning
    return {"shape": [m, k, n], "columns": SHORTLIST_COLUMNS, "threads": threads,
            "full_us": times["full"] * 1e6, "select_and_multiply_us":
            times["select_and_multiply"] * 1e6,
            "speedup": times["full"] / times["select_and_multiply"]}


def geomean(values) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def format_table(rows, shortlist) -> str:
    head = (f"{'M':>5} {'K':>5} {'N':>6} | {'i8 int32':>9} {'ort u8s8':>9} {'ratio':>6} | "
            f"{'i8 float':>9} {'np f32':>9} {'ratio':>6}")
    lines = ["GOP/s (2*M*K*N / median time); ratio = i8gemm speed / baseline speed", head,
             "-" * len(head)]
    for r in rows:
        m, k, n = r["shape"]
        ort = r.get("ort_u8s8_gops")
        ort_cols = f"{ort:>9.1f} {r['int32_vs_ort']:>6.2f}" if ort else f"{'n/a':>9} {'n/a':>6}"
        lines.append(
            f"{m:>5} {k:>5} {n:>6} | {r['i8_int32_gops']:>9.1f} {ort_cols} | "
            f"{r['i8_float_gops']:>9.1f} {r['np_f32_gops']:>9.1f} {r['float_vs_numpy']:>6.2f}")
    gm_ort = geomean(r.get("int32_vs_ort") for r in rows)
    gm_np = geomean(r["float_vs_numpy"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{'geometric mean':>20} | {'':>9} {'':>9} {gm_ort:>6.2f} | {'':>9} {'':>9} "
                 f"{gm_np:>6.2f}")
    if shortlist:
        s = shortlist
        lines.append("")
        lines.append(f"shortlist {tuple(s['shape'])}, {s['columns']} columns: full "
                     f"{s['full_us']:.0f} us, select+multiply {s['select_and_multiply_us']:.0f} us"
                     f" -> {s['speedup']:.1f}x")
    return "\n".join(lines)


def machine_summary() -> dict:
    import dispatch

    return {"cpu": dispatch.cpu_model(), "llvm_cpu": dispatch.cpu_name(),
            "path": dispatch.resolve("gemm_i8").path, "python": platform.python_version(),
            "numpy": np.__version__}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", help="'M,K,N;M,K,N...' (default: the standard shape set)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every contender (default: all cores)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repeats per shape")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-shortlist", action="store_true",
                        help="skip the shortlisting comparison")
    parser.add_argument("--backend", default=None,
                        help="'cpu' or 'cpu:<path>' (default: I8GEMM_CPU_PATH or the best path); "
                        "'gpu': the WGSL path against torch float32 (see gemm/bench_gpu.py)")
    parser.add_argument("--square-4096", action="store_true",
                        help="with --backend gpu: add the 4096 x 4096 x 4096 shape")
    parser.add_argument("--paths", default=None, metavar="PATH,PATH,...",
                        help="instead: compare these CPU paths (e.g. 'avx2,avx2-i16'), int8 -> "
                             "int32, side by side (gemm/bench_paths.py)")


def main(args) -> int:
    import os

    from .cpu import driver

    if args.backend == "gpu":
        from . import bench_gpu
        return bench_gpu.main(args)
    shapes = parse_shapes(args.shapes) if args.shapes else STANDARD_SHAPES
    threads = driver.resolve_threads(args.threads)
    if args.repeats < 1:
        raise ValueError("--repeats: expected a whole number >= 1")
    if args.paths:
        from . import bench_paths

        return bench_paths.main(args, threads)
    if args.backend:
        import dispatch

        os.environ["I8GEMM_CPU_PATH"] = args.backend.removeprefix("cpu:")
        dispatch.refresh()
    rng = np.random.default_rng(0)
    info = machine_summary()
    print(f"i8gemm bench on {info['cpu']} ({info['llvm_cpu']}), path cpu:{info['path']}, "
          f"{threads} thread(s), {args.repeats} repeats", flush=True)
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed: its column is n/a (pip install onnxruntime)")
    rows = []
    for i, shape in enumerate(shapes, 1):
        print(f"  [{i}/{len(shapes)}] {shape} ...", end="\r", flush=True)
        rows.append(bench_shape(shape, threads, args.repeats, rng))
    shortlist = None if args.no_shortlist else bench_shortlist(threads, args.repeats, rng)
    print(" " * 40, end="\r")
    print(format_table(rows, shortlist))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "threads": threads, "rows": rows, "shortlist": shortlist,
                       "geomean_int32_vs_ort": geomean(r.get("int32_vs_ort") for r in rows),
                       "geomean_float_vs_numpy": geomean(r["float_vs_numpy"] for r in rows)},
                      f, indent=2)
        print(f"wrote {args.json}")
    return 0
