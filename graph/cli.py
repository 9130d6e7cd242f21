"""The `i8gemm` command. It only routes: each subcommand's code lives with its layer
(info: dispatch, bench: gemm, tune: tuning, run: graph)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from gemm import bench

    parser = argparse.ArgumentParser(
        prog="i8gemm", description="Fast, exact 8-bit integer GEMM and inference kernels.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="CPU features, the path chosen, GPU adapters, tuning store")
    bench_parser = sub.add_parser(
        "bench", help="int8 GEMM vs numpy float32 and onnxruntime MatMulInteger, side by side")
    bench.add_arguments(bench_parser)
    bench_parser.add_argument("--ops", action="store_true",
                              help="benchmark the ops kernels (logsoftmax, top-k, layer_norm) instead")
    bench_parser.add_argument("--rows", type=int, default=None,
                              help="with --ops --backend gpu: rows of the array (default 4096)")
    bench_parser.add_argument("--cols", type=int, default=None,
                              help="with --ops --backend gpu: columns of the array (default 32000)")
    from tuning import cli as tune_cli

    tune_cli.add_arguments(sub.add_parser(
        "tune", help="tune tile sizes for this machine's shapes; --show / --clear the store"))
    from graph import run
    run.add_arguments(sub.add_parser(
        "run", help="run an ONNX model: random or .npz inputs, --explain, timings, --compare-ort"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            from dispatch import info
            return info.main(args)
        if args.command == "bench" and args.ops:
            from ops import bench as ops_bench
            return ops_bench.main(args)
        if args.command == "bench":
            from gemm import bench
            return bench.main(args)
        if args.command == "tune":
            from tuning import tune_main
            return tune_main(args)
        if args.command == "run":
            from graph import run
            return run.main(args)
    except (ValueError, RuntimeError) as exc:
        print(f"i8gemm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
