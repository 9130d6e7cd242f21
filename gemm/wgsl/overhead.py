"""Per-call host cost of gemm_i8 on the GPU: `python -m gemm.wgsl.overhead`.

Times the float call C = gemm_i8(A, B, a_quant_mult=qa, bias=bias, out=C) on small shapes, in
batches of back-to-back calls ended by one synchronisation, interleaved (every round times each
contender once), medians:
  resident        GpuArray A, GpuPreparedB, GpuArray bias, out= a GpuArray (fixed qa)
  resident new qa the same with a new a_quant_mult on every call, as dynamic quantization does
  numpy           numpy A in, numpy C out (upload A and bias, download C: one round trip a call)
  torch resident  torch.addmm(bias, A, W, out=) on CUDA, float32, TF32 off (when torch has CUDA)
  torch numpy     the same from a numpy A to a numpy C
  kernels         the GPU time of the call's two dispatches (quantize A, multiply) repeated
                  back to back in one submission: GPU timestamps where the adapter has them
A resident wall time well above both the host time and the kernels' time points at the GPU
side between kernels (the barrier after each dispatch, clocks); one near the host time means
the call is bound by its host cost.
For each: wall time per call (what a caller waits for) and the CPU time the calling thread spent
per call (the host cost: on a real GPU the kernels themselves take a few microseconds; on a
software adapter such as lavapipe they run on other threads, so the wall time there is mostly
theirs and the thread time is the figure to compare).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import numpy as np

DEFAULT_SHAPES = "1,512,512;8,512,2048;32,512,512"


def _time_batch(fn, sync, calls: int) -> tuple[float, float]:
    """(wall, calling-thread CPU) seconds per call over `calls` calls and one sync, after an
    untimed batch of the same length (a GPU that idled needs it to raise its clocks)."""
    for _ in range(calls):
        fn()
    sync()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - wall) / calls, (time.thread_time() - cpu) / calls


def _torch():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def contenders(shape, rng, torch=None) -> dict:
    """name -> (call, synchronize) for one shape."""
    import gemm
    from dispatch import gpu

    m, k, n = shape
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    qa, qb = 127.0 / float(np.abs(a).max()), 127.0 / float(np.abs(w).max())
    pb = gemm.prepare_b(w, qb)
    gb = pb.to_gpu()
    ga, gbias = gemm.GpuArray.from_numpy(a), gemm.GpuArray.from_numpy(bias)
    gout, out = gemm.GpuArray((m, n), np.float32), np.empty((m, n), np.float32)
    qas = (qa * (1.0 + 1e-6 * (i % 100_000)) for i in itertools.count())  # distinct float32s
    fns = {
        "resident": (lambda: gemm.gemm_i8(ga, gb, a_quant_mult=qa, bias=gbias, out=gout),
                     gpu.synchronize),
        "resident new qa": (lambda: gemm.gemm_i8(ga, gb, a_quant_mult=next(qas),
                                                 bias=gbias, out=gout), gpu.synchronize),
        "numpy": (lambda: gemm.gemm_i8(a, pb, a_quant_mult=qa, bias=bias, out=out, backend="gpu"),
                  lambda: None),
    }
    if torch is not None:
        ta, tw, tb = (torch.from_numpy(x).cuda() for x in (a, w, bias))
        tout = torch.empty((m, n), dtype=torch.float32, device="cuda")
        fns["torch resident"] = (lambda: torch.addmm(tb, ta, tw, out=tout), torch.cuda.synchronize)
        fns["torch numpy"] = (lambda: torch.addmm(tb, torch.from_numpy(a).cuda(), tw).cpu().numpy(),
                              lambda: None)
    return fns


def kernel_time(shape, rng) -> tuple[float, str]:
    """(GPU seconds of one resident call's dispatches, "timestamps" or "wall")."""
    import gemm
    from dispatch import gpu

    from . import driver

    m, k, n = shape
    pb = gemm.prepare_b(rng.standard_normal((k, n), dtype=np.float32), 20.0)
    plan = driver.build(gemm.GpuArray.from_numpy(rng.standard_normal((m, k), dtype=np.float32)),
                        pb.to_gpu(), a_quant_mult=20.0,
                        bias=gemm.GpuArray.from_numpy(np.zeros(n, np.float32)))
    return gpu.time_dispatches(plan.dispatches, 50)


def measure(shape, rounds: int, calls: int, rng, torch=None) -> dict:
    fns = contenders(shape, rng, torch)
    for fn, sync in fns.values():  # compile and warm
        fn()
        sync()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, sync) in fns.items():
            samples[name].append(_time_batch(fn, sync, calls))
    result = {name: {"wall_us": 1e6 * statistics.median(s[0] for s in values),
                     "cpu_us": 1e6 * statistics.median(s[1] for s in values)}
              for name, values in samples.items()}
    seconds, how = kernel_time(shape, rng)
    result["kernels"] = {"gpu_us": 1e6 * seconds, "timing": how}
    return result


def format_rows(rows) -> str:
    names = [name for name in rows[0][1] if name != "kernels"]
    head = (f"{'M':>5} {'K':>5} {'N':>6} | " + " | ".join(f"{name:>17}" for name in names)
            + f" | {'kernels':>8}")
    lines = ["microseconds per call: wall / calling thread's CPU (medians of interleaved batches);"
             " kernels: GPU time", head, "-" * len(head)]
    for (m, k, n), result in rows:
        cells = [f"{result[name]['wall_us']:8.1f} /{result[name]['cpu_us']:7.1f}" for name in names]
        lines.append(f"{m:>5} {k:>5} {n:>6} | " + " | ".join(f"{c:>17}" for c in cells)
                     + f" | {result['kernels']['gpu_us']:8.1f}")
    timing = {result["kernels"]["timing"] for _, result in rows}
    lines.append(f"kernels timed with: {', '.join(sorted(timing))}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemm.wgsl.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="M,K,N;M,K,N;...")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    from dispatch import gpu

    if gpu.unavailable_reason():
        print(f"no GPU: {gpu.unavailable_reason()}", file=sys.stderr)
        return 2
    torch = _torch()
    d = gpu.describe(gpu.adapter())
    print(f"gemm_i8 per-call cost on {d['name']} ({d['backend']}, {d['driver']})"
          + ("" if torch is None else f"; torch {torch.__version__} on {torch.cuda.get_device_name()}"),
          flush=True)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s.strip()]
    rng = np.random.default_rng(0)
    rows = [(shape, measure(shape, args.rounds, args.calls, rng, torch)) for shape in shapes]
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"adapter": d, "rows": [{"shape": list(s), **r} for s, r in rows]}, f,
                      indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
