"""The encoder benchmark: a quantize_dynamic transformer encoder on i8gemm's graph runner vs
onnxruntime on the same int8 model and on the float32 model, side by side.

    python -m graph.bench --width 256 --layers 2 --batch 16 --seq 128 --threads 2

Medians of interleaved repeats (graph/run.py's time_interleaved; onnxruntime with the same
thread count, its other settings its defaults), twice: each run after a 0.1 s pause, and each
run after 0.3 s of untimed runs of its own (back to back, as in a busy server). Also prints the
largest difference from onnx's reference evaluator on the first two sequences. Needs onnxruntime.

    python -m graph.bench --gpu            # width 512, 2 layers, batch 64 x 128, all CPU threads

--gpu times the same int8 model on Session(backend="gpu") against Session(backend="cpu")
instead (every run includes uploading the input and downloading the output), twice: each run
after a 0.1 s pause, and each run after 0.3 s of untimed runs of its own (a GPU idle through the
CPU's runs lowers its clocks, as in gemm/bench_gpu.py), and prints the host transfers one GPU
run makes.
On a machine without a real GPU, check it with a small shape:
`python -m graph.bench --gpu --width 64 --batch 2 --seq 16 --repeats 3`.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from . import parallel, transformer
from .run import ort_runner, time_interleaved, timing_table
from .session import Session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="int8 encoder: i8gemm graph vs onnxruntime")
    parser.add_argument("--width", type=int, default=None, help="default 256 (--gpu: 512)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="default 16 (--gpu: 64)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads; default 2 (--gpu: all cores)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--gpu", action="store_true",
                        help="backend='gpu' against backend='cpu' instead of onnxruntime")
    args = parser.parse_args(argv)
    args.width = args.width or (512 if args.gpu else 256)
    args.batch = args.batch or (64 if args.gpu else 16)
    if args.threads is None and not args.gpu:
        args.threads = 2
    if args.gpu:
        return gpu_main(args)

    from onnx.reference import ReferenceEvaluator

    with tempfile.TemporaryDirectory() as folder:
        model = transformer.encoder(width=args.width, heads=max(1, args.width // 64),
                                    layers=args.layers)
        int8_path = transformer.quantize_dynamic(model, args.per_channel, folder, "encoder")
        float_path = os.path.join(folder, "encoder.onnx")
        session = Session(int8_path, threads=args.threads)
        x = np.random.default_rng(0).standard_normal(
            (args.batch, args.seq, args.width)).astype(np.float32)
        feeds = {"x": x}
        few = {"x": x[:2]}
        (ref,) = ReferenceEvaluator(int8_path).run(None, few)
        (ours,) = session.run(None, few)
        contenders = {
            "i8gemm int8": lambda: session.run(None, feeds),
            "onnxruntime int8": ort_runner(int8_path, feeds, args.threads),
            "onnxruntime float32": ort_runner(float_path, feeds, args.threads),
        }
        # The per-op table first: onnxruntime's threads spin on for some 50 ms after its runs.
        table = timing_table(session, feeds, 3)
        medians = time_interleaved(contenders, args.repeats)
        warm = time_interleaved(contenders, args.repeats, warm_up=0.3)
        print(f"encoder width {args.width}, {args.layers} layers, batch {args.batch} x "
              f"{args.seq} tokens, {args.threads} threads, "
              f"{'per-channel' if args.per_channel else 'per-tensor'} weights")
        print(f"max |i8gemm - onnx.reference| / max |reference| = "
              f"{np.abs(ours - ref).max() / np.abs(ref).max():.2e}")
        print(table)
        print(f"{'':>20}  {'after a pause':>14} {'back to back':>13}")
        for name, t in medians.items():
            print(f"{name:>20}: {t * 1e3:11.2f} ms {warm[name] * 1e3:10.2f} ms")
        for other in ("int8", "float32"):
            paused = medians["i8gemm int8"] / medians[f"onnxruntime {other}"]
            busy = warm["i8gemm int8"] / warm[f"onnxruntime {other}"]
            print(f"i8gemm / onnxruntime {other:<7} = {paused:.2f} after a pause, {busy:.2f} back to back")
    return 0


def gpu_main(args) -> int:
    from onnx.reference import ReferenceEvaluator

    from dispatch import gpu

    with tempfile.TemporaryDirectory() as folder:
        model = transformer.encoder(width=args.width, heads=max(1, args.width // 64),
                                    layers=args.layers)
        int8_path = transformer.quantize_dynamic(model, args.per_channel, folder, "encoder")
        cpu = Session(int8_path, threads=args.threads)
        on_gpu = Session(int8_path, backend="gpu")
        x = np.random.default_rng(0).standard_normal(
            (args.batch, args.seq, args.width)).astype(np.float32)
        feeds, few = {"x": x}, {"x": x[:2]}
        (ref,) = ReferenceEvaluator(int8_path).run(None, few)
        (ours_few,) = on_gpu.run(None, few)
        (ours,), (theirs,) = on_gpu.run(None, feeds), cpu.run(None, feeds)
        before = dict(gpu.TRANSFERS)
        on_gpu.run(None, feeds)
        moved = {k: gpu.TRANSFERS.get(k, 0) - before.get(k, 0) for k in ("upload", "download")}
        contenders = {
            "backend=gpu": lambda: on_gpu.run(None, feeds),
            "backend=cpu": lambda: cpu.run(None, feeds),
        }
        medians = time_interleaved(contenders, args.repeats)
        warm = time_interleaved(contenders, args.repeats, warm_up=0.3)
        device = gpu.describe(gpu.adapter())
        print(f"encoder width {args.width}, {args.layers} layers, batch {args.batch} x "
              f"{args.seq} tokens, {'per-channel' if args.per_channel else 'per-tensor'} weights;"
              f" GPU {device['name']} ({device['backend']}), CPU {parallel.resolve(args.threads)} "
              "threads")
        scale = np.abs(theirs).max()
        print(f"max |gpu - cpu| = {np.abs(ours - theirs).max():.3g} (mean "
              f"{np.abs(ours - theirs).mean():.3g}; max |cpu| {scale:.3g}); max |gpu - "
              f"onnx.reference| on 2 sequences = {np.abs(ours_few - ref).max():.3g}")
        steps = on_gpu.steps
        planned = [s.name for s in steps if s.where == "transfer"]
        host = sorted({s.op_type for s in steps if s.where == "host" and
                       any(i.endswith("@host") for i in s.inputs)})
        print(f"transfers per GPU run: {moved['upload']} upload(s), {moved['download']} "
              f"download(s); planned: {', '.join(planned)} + the output download; ops on the "
              f"host for want of a GPU kernel: {', '.join(host) or 'none'}")
        for name, t in medians.items():
            print(f"{name:>12}: {t * 1e3:9.2f} ms after a pause, {warm[name] * 1e3:9.2f} ms after 0.3 s "
                  f"of runs (medians of {args.repeats}, interleaved)")
        print(f"cpu / gpu = {medians['backend=cpu'] / medians['backend=gpu']:.2f} after a pause, "
              f"{warm['backend=cpu'] / warm['backend=gpu']:.2f} after 0.3 s of runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
