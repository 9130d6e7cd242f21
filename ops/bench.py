"""`i8gemm bench --ops`: the ops kernels against their numpy forms, side by side in one run.

Each row times, interleaved (every repeat runs each contender once, so machine noise hits them
alike; medians reported):
  logsoftmax (64, 32000)        ops.logsoftmax  vs numpy x - (max + log(sum(exp(x - max))))
                                and the memory-bound floor: a numpy copy of the same array,
                                which reads and writes the same bytes logsoftmax must
  log_softmax_topk (64, 32000)  k=8, vs numpy logsoftmax + argpartition + sort of the k
  softmax (64, 32000)           vs numpy exp(x - max) / sum
  layer_norm (2048, 512)        vs numpy (x - mean) / sqrt(var + eps) * w + b
numpy runs these on one thread (no BLAS inside); ops uses --threads (default all cores).
With --backend gpu: ops/bench_gpu.py (each op on GPU arrays against a WGSL copy kernel).
Ratios > 1 mean ops is faster; floor/ops is the fraction of copy bandwidth reached.
"""

from __future__ import annotations

import json

import numpy as np

LOGITS_SHAPE = (64, 32000)
NORM_SHAPE = (2048, 512)
TOPK = 8
EPSILON = 1e-5


def numpy_logsoftmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_topk(x, k):
    y = numpy_logsoftmax(x)
    part = np.argpartition(-y, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(y, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(vals, order, axis=-1), np.take_along_axis(part, order, axis=-1)


def numpy_layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def run(threads: int, repeats: int, rng) -> list[dict]:
    import functools

    import ops
    from gemm import bench

    # No pause between samples: the baselines are single-threaded numpy (no pool left spinning
    # after them) and i8gemm's own threads spin only briefly; a pause only makes the first
    # milliseconds of each sample slow, which taxes the fastest contender most.
    time_side_by_side = functools.partial(bench.time_side_by_side, pause_s=0.0)

    logits = (rng.standard_normal(LOGITS_SHAPE, dtype=np.float32) * 4).astype(np.float32)
    out = np.empty_like(logits)
    copy_dst = np.empty_like(logits)
    top_v = np.empty((LOGITS_SHAPE[0], TOPK), np.float32)
    top_i = np.empty((LOGITS_SHAPE[0], TOPK), np.int64)
    h = rng.standard_normal(NORM_SHAPE, dtype=np.float32)
    w = rng.standard_normal(NORM_SHAPE[1], dtype=np.float32)
    b = rng.standard_normal(NORM_SHAPE[1], dtype=np.float32)
    h_out = np.empty_like(h)

    rows = []
    times = time_side_by_side({
        "ops": lambda: ops.logsoftmax(logits, out=out, threads=threads),
        "numpy": lambda: numpy_logsoftmax(logits),
        "copy": lambda: np.copyto(copy_dst, logits),
    }, repeats)
    rows.append(_row("logsoftmax", LOGITS_SHAPE, times, "numpy x - logsumexp(x)"))
    times = time_side_by_side({
        "ops": lambda: ops.log_softmax_topk(logits, TOPK, out=(top_v, top_i), threads=threads),
        "numpy": lambda: numpy_topk(logits, TOPK),
    }, repeats)
    rows.append(_row(f"log_softmax_topk k={TOPK}", LOGITS_SHAPE, times,
                     "numpy logsoftmax + argpartition"))
    times = time_side_by_side({
        "ops": lambda: ops.softmax(logits, out=out, threads=threads),
        "numpy": lambda: numpy_softmax(logits),
        "copy": lambda: np.copyto(copy_dst, logits),
    }, repeats)
    rows.append(_row("softmax", LOGITS_SHAPE, times, "numpy exp / sum"))
    times = time_side_by_side({
        "ops": lambda: ops.layer_norm(h, w, b, EPSILON, out=h_out, threads=threads),
        "numpy": lambda: numpy_layer_norm(h, w, b, EPSILON),
        "copy": lambda: np.copyto(h_out, h),
    }, repeats)
    rows.append(_row("layer_norm", NORM_SHAPE, times, "numpy expression"))
    return rows


def _row(op, shape, times, baseline) -> dict:
    row = {"op": op, "shape": list(shape), "baseline": baseline,
           "ops_us": times["ops"] * 1e6, "numpy_us": times["numpy"] * 1e6,
           "speedup_vs_numpy": times["numpy"] / times["ops"]}
    if "copy" in times:
        row["copy_us"] = times["copy"] * 1e6
        row["ops_over_floor"] = times["ops"] / times["copy"]
    return row


def format_table(rows) -> str:
    head = (f"{'op':<22} {'shape':>10} | {'ops us':>8} {'numpy us':>9} {'x numpy':>7} | "
            f"{'floor us':>8} {'x floor':>7}")
    lines = ["median times; x numpy = numpy time / ops time (> 1: ops faster); "
             "x floor = ops time / copy time (memory-bound floor; 1 is the best possible)",
             head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        floor = (f"{r['copy_us']:>8.0f} {r['ops_over_floor']:>7.2f}" if "copy_us" in r
                 else f"{'':>8} {'':>7}")
        lines.append(f"{r['op']:<22} {shape:>10} | {r['ops_us']:>8.0f} {r['numpy_us']:>9.0f} "
                     f"{r['speedup_vs_numpy']:>7.2f} | {floor}")
    lines.append("baselines: " + "; ".join(f"{r['op']}: {r['baseline']}" for r in rows))
    return "\n".join(lines)


def main(args) -> int:
    if getattr(args, "backend", None) == "gpu":
        from . import bench_gpu
        return bench_gpu.main(args)
    from gemm.bench import machine_summary

    from .cpu.threads import resolve_threads

    threads = resolve_threads(args.threads)
    if args.repeats < 1:
        raise ValueError("--repeats: expected a whole number >= 1")
    info = machine_summary()
    print(f"i8gemm bench --ops on {info['cpu']} ({info['llvm_cpu']}), {threads} thread(s) for ops"
          f" (numpy: 1), {args.repeats} repeats", flush=True)
    rows = run(threads, args.repeats, np.random.default_rng(0))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "threads": threads, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
