"""`i8gemm bench --backend gpu`: the WGSL GEMM against torch float32 on the same GPU, side by side.

For each shape (M, K, N), interleaved repeats, medians:
  i8 kernel      the GEMM dispatch alone (GPU timestamps, or synchronised wall time)
  i8 resident    gemm_i8(GpuArray float32 A, GpuPreparedB, bias, out=GpuArray): quantize A on
                 the GPU, multiply, unquantize + bias; wall time of a batch of calls, synchronised
  torch resident torch.addmm(bias, A, W) on CUDA in float32, TF32 off, synchronised likewise
  i8 transfers   numpy float32 A in, a new numpy float32 C out (upload A, download C); the
                 weight and the bias stay on the GPU, as a model's constants do
  torch transfers the same for torch (A to the GPU, C back as a new numpy array)
  ... into out   the same, C written into the caller's numpy array (`out=`; torch: copy_ into
                 a tensor sharing that array's memory)
Ratios > 1 mean i8gemm is faster. torch is optional (its columns read n/a without CUDA torch).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

import dispatch

from . import bench

SQUARE_4096 = (4096, 4096, 4096)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _median_batches(fn, sync, target_s: float, repeats: int) -> float:
    """Median over `repeats` samples of (a batch of calls, then sync) / batch size. Each sample
    follows an untimed batch of about the same length: a GPU that idled (while the previous
    contender ran on the CPU, or a shader compiled) needs that long to raise its clocks again."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    batch = max(1, min(2000, int(target_s / one)))
    samples = []
    for _ in range(repeats):
        for _ in range(batch):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


def bench_shape(shape, repeats: int, rng, torch) -> dict:
    import gemm
    from dispatch import gpu

    from .wgsl import driver

    m, k, n = shape
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(0.1)
    bias = rng.standard_normal(n, dtype=np.float32)
    qa, qb = 127.0 / float(np.abs(a).max()), 127.0 / float(np.abs(w).max())
    gb = gemm.prepare_b(w, qb).to_gpu()
    ga, gbias = gemm.GpuArray.from_numpy(a), gemm.GpuArray.from_numpy(bias)
    gout = gemm.GpuArray((m, n), np.float32)
    out = np.empty((m, n), np.float32)

    plan = driver.build(ga, gb, a_quant_mult=qa, bias=gbias, out=gout)
    cfg = dispatch.select("gemm_i8", shape, np.float32, backend="gpu")[1]["config"]
    times, how = {}, "wall"
    kernel = []
    for _ in range(max(3, repeats // 3)):
        seconds, how = gpu.time_dispatches(plan.dispatches[1:], 10)
        kernel.append(seconds)
    times["i8_kernel"] = statistics.median(kernel)
    fns = {
        "i8_resident": (lambda: gemm.gemm_i8(ga, gb, a_quant_mult=qa, bias=gbias, out=gout),
                        gpu.synchronize),
        "i8_transfers": (lambda: gemm.gemm_i8(a, gb, a_quant_mult=qa, bias=gbias),
                         lambda: None),
        "i8_transfers_out": (lambda: gemm.gemm_i8(a, gb, a_quant_mult=qa, bias=gbias, out=out),
                             lambda: None),
    }
    if torch is not None:
        ta, tw, tb = (torch.from_numpy(x).cuda() for x in (a, w, bias))
        tout = torch.empty((m, n), dtype=torch.float32, device="cuda")
        fns["torch_resident"] = (lambda: torch.addmm(tb, ta, tw, out=tout), torch.cuda.synchronize)
        fns["torch_transfers"] = (
            lambda: torch.addmm(tb, torch.from_numpy(a).cuda(), tw).cpu().numpy(), lambda: None)
        host_out = torch.from_numpy(out)
        fns["torch_transfers_out"] = (
            lambda: host_out.copy_(torch.addmm(tb, torch.from_numpy(a).cuda(), tw)), lambda: None)
    samples = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved: every round times each contender once
        for name, (fn, sync) in fns.items():
            samples[name].append(_median_batches(fn, sync, 0.02, 1))
    times.update({name: statistics.median(s) for name, s in samples.items()})
    ops = 2.0 * m * k * n
    row = {"shape": [m, k, n], "config": str(cfg), "kernel_timing": how,
           **{f"{name}_tops": ops / t / 1e12 for name, t in times.items()},
           **{f"{name}_us": t * 1e6 for name, t in times.items()}}
    if torch is not None:
        row["resident_vs_torch"] = times["torch_resident"] / times["i8_resident"]
        row["kernel_vs_torch"] = times["torch_resident"] / times["i8_kernel"]
        row["transfers_vs_torch"] = times["torch_transfers"] / times["i8_transfers"]
        row["transfers_out_vs_torch"] = times["torch_transfers_out"] / times["i8_transfers_out"]
    return row


def format_table(rows) -> str:
    head = (f"{'M':>5} {'K':>5} {'N':>6} | {'i8 kern':>8} {'i8 res':>8} {'torch':>8} {'ratio':>6} "
            f"{'kern/t':>6} | {'i8 +xfer':>8} {'torch+x':>8} {'ratio':>6} {'out=':>6} | "
            f"{'us i8 res':>9}")
    lines = ["TOPS (2*M*K*N / median time); ratio = i8gemm speed / torch float32 speed; "
             "out=: the ratio with transfers when C goes into the caller's array", head,
             "-" * len(head)]

    def f(r, key, width=8, digits=2):
        v = r.get(key)
        return f"{v:>{width}.{digits}f}" if v is not None else f"{'n/a':>{width}}"

    for r in rows:
        m, k, n = r["shape"]
        lines.append(
            f"{m:>5} {k:>5} {n:>6} | {f(r, 'i8_kernel_tops')} {f(r, 'i8_resident_tops')} "
            f"{f(r, 'torch_resident_tops')} {f(r, 'resident_vs_torch', 6)} {f(r, 'kernel_vs_torch', 6)}"
            f" | {f(r, 'i8_transfers_tops')} {f(r, 'torch_transfers_tops')} "
            f"{f(r, 'transfers_vs_torch', 6)} {f(r, 'transfers_out_vs_torch', 6)} | "
            f"{f(r, 'i8_resident_us', 9, 1)}")
    lines.append("-" * len(head))
    small = [r for r in rows if tuple(r["shape"]) != SQUARE_4096]
    lines.append(
        f"geometric mean over {len(small)} standard shapes: resident "
        f"{bench.geomean(r.get('resident_vs_torch') for r in small):.2f}, with transfers "
        f"{bench.geomean(r.get('transfers_vs_torch') for r in small):.2f} (into out=: "
        f"{bench.geomean(r.get('transfers_out_vs_torch') for r in small):.2f})")
    return "\n".join(lines)


def main(args) -> int:
    import gemm  # noqa: F401
    from dispatch import gpu

    why = gpu.unavailable_reason()
    if why:
        raise RuntimeError(f"--backend gpu: {why}")
    shapes = bench.parse_shapes(args.shapes) if args.shapes else list(bench.STANDARD_SHAPES)
    if getattr(args, "square_4096", False) and SQUARE_4096 not in shapes:
        shapes.append(SQUARE_4096)
    torch = _torch()
    d = gpu.describe(gpu.adapter())
    print(f"i8gemm bench on {d['name']} ({d['backend']}, {d['driver']}), dot4I8Packed "
          f"{'native' if d['dot4_native'] else 'polyfilled'}; {args.repeats} repeats", flush=True)
    if torch is None:
        print("torch with CUDA is not importable: its columns are n/a")
    else:
        print(f"baseline: torch {torch.__version__} float32 on {torch.cuda.get_device_name()}, "
              "TF32 off")
    rng = np.random.default_rng(0)
    rows = []
    for i, shape in enumerate(shapes, 1):
        print(f"  [{i}/{len(shapes)}] {shape} ...", end="\r", flush=True)
        rows.append(bench_shape(shape, args.repeats, rng, torch))
    print(" " * 40, end="\r")
    print(format_table(rows))
    for r in rows:
        if tuple(r["shape"]) == SQUARE_4096:
            print(f"4096^3 kernel: {r['i8_kernel_tops']:.1f} TOPS int8 = "
                  f"{r['i8_kernel_tops'] / 58.0:.0%} of the 58 TOPS dot4I8Packed loop figure")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"adapter": d, "rows": rows}, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0
