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
    bench.add_arguments(sub.add_parser(
        "bench", help="int8 GEMM vs numpy float32 and onnxruntime MatMulInteger, side by side"))
    from tuning import cli as tune_cli

    tune_cli.add_arguments(sub.add_parser(
        "tune", help="tune tile sizes for this machine's shapes; --show / --clear the store"))
    sub.add_parser("run", help="run an ONNX model (not yet implemented)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            from dispatch import info
            return info.main(args)
        if args.command == "bench":
            from gemm import bench
            return bench.main(args)
        if args.command == "tune":
            from tuning import tune_main
            return tune_main(args)
        if args.command == "run":
            print("i8gemm run: not yet implemented (the ONNX graph layer lands with its own issue).")
            return 2
    except (ValueError, RuntimeError) as exc:
        print(f"i8gemm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
