"""The encoder benchmark: a quantize_dynamic transformer encoder on i8gemm's graph runner vs
onnxruntime on the same int8 model and on the float32 model, side by side.

    python -m graph.bench --width 256 --layers 2 --batch 16 --seq 128 --threads 2

Medians of interleaved repeats (graph/run.py's time_interleaved; onnxruntime with the same
thread count and spinning off). Also prints the largest difference from onnx's reference
evaluator on the first two sequences. Needs onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from . import transformer
from .run import ort_runner, time_interleaved, timing_table
from .session import Session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="int8 encoder: i8gemm graph vs onnxruntime")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--per-channel", action="store_true")
    args = parser.parse_args(argv)

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
        medians = time_interleaved({
            "i8gemm int8": lambda: session.run(None, feeds),
            "onnxruntime int8": ort_runner(int8_path, feeds, args.threads),
            "onnxruntime float32": ort_runner(float_path, feeds, args.threads),
        }, args.repeats)
        print(f"encoder width {args.width}, {args.layers} layers, batch {args.batch} x "
              f"{args.seq} tokens, {args.threads} threads, "
              f"{'per-channel' if args.per_channel else 'per-tensor'} weights")
        print(f"max |i8gemm - onnx.reference| / max |reference| = "
              f"{np.abs(ours - ref).max() / np.abs(ref).max():.2e}")
        print(timing_table(session, feeds, 3))
        for name, t in medians.items():
            print(f"{name:>20}: {t * 1e3:8.2f} ms")
        base = medians["i8gemm int8"]
        print(f"i8gemm / onnxruntime int8    = {base / medians['onnxruntime int8']:.2f}")
        print(f"i8gemm / onnxruntime float32 = {base / medians['onnxruntime float32']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
